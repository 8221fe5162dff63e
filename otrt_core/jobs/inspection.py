"""What an uploaded file is, checked on arrival in a child process with hard limits.

Models: safetensors, a PyTorch state dict read with ``weights_only=True`` (a
pickle that would build any other object is refused), or an ONNX graph, which
is converted to torch and checked against onnxruntime. ``torch.export``
archives (``.pt2``) are refused: loading one unpickles data. Datasets: ``.npz``
arrays or an ImageFolder ``.zip``, whose decoded size is read from headers and
capped before anything is decoded (``otrt_core.data.uploads``).

Untrusted bytes are never parsed in the API's process: :func:`inspect_upload`
asks a warm child (``python -m otrt_core.jobs.inspection``, kept by
``otrt_core.jobs.inspectors``) with its data segment (``RLIMIT_DATA``) and each
request's wall time bounded, and reads one JSON line back. A file that slips
past the header checks then kills a child, never the API, and the API never
imports torch or numpy for it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otrt_core.errors import TooLarge, UserError

TEACHER_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".onnx")
PT2_REFUSED = (
    "torch.export archives (.pt2) are refused: torch.export.load unpickles parts of the "
    "archive (torch.load with weights_only=False), which can run code. Export the model "
    "to ONNX (torch.onnx.export) and upload the .onnx file"
)
DATASET_SUFFIXES = (".npz", ".zip")
# What the child needs besides the decoded data: the interpreter, numpy, PIL and
# torch's own data segment (about 0.8 GB once imported).
BASELINE_DATA_BYTES = 1536 << 20
log = logging.getLogger("otrt.inspection")


@dataclass(frozen=True)
class InspectionLimits:
    max_decoded_bytes: int = 2 << 30
    wall_seconds: float = 300.0  # per file, enforced by the parent (it kills the child)


def storage_suffix(purpose: str, filename: str, head: bytes) -> str:
    """The suffix a stored upload keeps: it tells the readers what format to expect."""
    suffix = Path(filename).suffix.lower()
    if purpose == "dataset":
        if suffix not in DATASET_SUFFIXES:
            raise UserError("datasets are .npz arrays or ImageFolder .zip files")
        return suffix
    if suffix == ".pt2":
        raise UserError(PT2_REFUSED)
    if suffix == ".onnx":
        return suffix
    if suffix == ".safetensors" or (suffix not in TEACHER_SUFFIXES and _looks_safetensors(head)):
        return ".safetensors"
    return ".pt"


def _looks_safetensors(head: bytes) -> bool:
    """safetensors files open with an 8-byte little-endian header length, then JSON."""
    return len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 27


# --- the parent: run the child and read its verdict ------------------------------------


def inspect_upload(
    purpose: str, path: Path, limits: InspectionLimits
) -> tuple[str, dict[str, Any]]:
    """``(format, details)`` of the upload at ``path``, found by a limited child process.

    Raises :class:`TooLarge` or :class:`UserError` with a message for the user.
    """
    verdict = _run_child([purpose, str(path), str(limits.max_decoded_bytes)], limits)
    return verdict["format"], verdict["details"]


def teacher_misfit(
    path: Path, architecture: str, input_shape: tuple[int, ...], limits: InspectionLimits
) -> str | None:
    """Why the weights at ``path`` do not fit the zoo ``architecture`` at ``input_shape``
    (any class count), or ``None`` if they do; found by a limited child process."""
    shape = json.dumps(list(input_shape))
    return _run_child(["fit", str(path), architecture, shape], limits)["misfit"]


def architecture_layers(
    architecture: str, input_shape: tuple[int, ...], limits: InspectionLimits
) -> list[str]:
    """Every layer name of a timm or torchvision ``architecture`` built for ``input_shape``
    (its declared stages first), or ``UserError``; found by a limited child process."""
    shape = json.dumps(list(input_shape))
    return _run_child(["layers", architecture, shape], limits)["layers"]


def warm_up(limits: InspectionLimits) -> None:
    """Starts an inspector child for ``limits`` now (the API calls it as it starts)."""
    from otrt_core.jobs.inspectors import inspectors

    inspectors(_child_limits(limits)).start_one()


def _child_limits(limits: InspectionLimits):
    from otrt_core.jobs.inspectors import ChildLimits

    return ChildLimits(limits.max_decoded_bytes + BASELINE_DATA_BYTES, limits.wall_seconds)


def _run_child(arguments: list[str], limits: InspectionLimits) -> dict[str, Any]:
    """A warm child's verdict (``otrt_core.jobs.inspectors``); :class:`TooLarge` or
    :class:`UserError` if it has none."""
    from otrt_core.jobs.inspectors import inspectors

    verdict = inspectors(_child_limits(limits)).ask(arguments)
    if "error" not in verdict:
        return verdict
    if verdict.get("too_large"):
        raise TooLarge(
            verdict["error"]
            or f"reading the upload needs more than the limit of {limits.max_decoded_bytes} bytes"
        )
    raise UserError(verdict["error"])


# --- the child: parse the file, print one JSON line ------------------------------------


def inspect_teacher(path: Path) -> tuple[str, dict[str, Any]]:
    """``(format, details)`` of a teacher checkpoint; ``UserError`` if unreadable.

    safetensors files are checked from their header alone (no torch); PyTorch
    files must be torch's zip format and are read with ``weights_only=True``;
    ONNX graphs are converted and compared with onnxruntime (:func:`graph_details`).
    """
    if path.suffix == ".onnx":
        return "onnx", graph_details(path)
    if path.suffix == ".safetensors":
        return "safetensors", safetensors_details(path)
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            raise UserError(
                "the upload is neither safetensors nor a PyTorch state dict saved by "
                "torch.save (zip format, PyTorch >= 1.6)"
            )
    from otrt_core.train.checkpoint import read_weights

    weights = read_weights(path)
    details = {"tensors": len(weights), "parameters": sum(t.numel() for t in weights.values())}
    return ("safetensors" if path.suffix == ".safetensors" else "pytorch"), details


def graph_details(path: Path) -> dict[str, Any]:
    """What an ONNX graph offers: its inputs and outputs, class count, every layer the
    regularizer can read with its shape (graph order), and the conversion's error.

    ``UserError`` if the converted graph's logits differ from onnxruntime's by more
    than ``CONVERSION_TOLERANCE`` (relative to their scale, at least 1).
    """
    import onnx

    from otrt_core.models.graph import (
        CONVERSION_TOLERANCE,
        GraphModel,
        conversion_error,
        read_graph,
    )

    graph = read_graph(path)  # UserError for a file that is no usable graph
    model = GraphModel.from_graph(graph)
    error = conversion_error(model, graph)
    if not error <= CONVERSION_TOLERANCE:
        raise UserError(
            f"the graph converted to torch differs from onnxruntime by {error:.3g} "
            f"(the limit is {CONVERSION_TOLERANCE:g}): an operator is not converted faithfully"
        )
    layers = model.layer_shapes()
    return {
        "inputs": [_value(v) for v in graph.graph.input if v.name in _input_names(graph)],
        # The file's own outputs: the graph read was cut to its logits.
        "outputs": [_value(v) for v in onnx.load(str(path), load_external_data=False).graph.output],
        "num_classes": layers["logits"][0],
        "layers": [{"name": name, "shape": shape} for name, shape in layers.items()],
        "trainable": any(True for _ in model.parameters()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "conversion_max_abs_diff": error,
    }


def _input_names(model: Any) -> set[str]:
    from otrt_core.models.graph import graph_inputs

    return {name for name, _ in graph_inputs(model)}


def _value(value: Any) -> dict[str, Any]:
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return {"name": value.name, "shape": shape}


SAFETENSORS_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


def safetensors_details(path: Path) -> dict[str, Any]:
    """Tensor and parameter counts from a safetensors header, every entry checked against
    the file: known dtype, shape, and offsets that tile the data exactly."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= min(size - 8, 100 << 20):
            raise UserError("the upload is not a safetensors file (bad header length)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UserError("the upload is not a safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise UserError("the upload is not a safetensors file (bad header)")
    header.pop("__metadata__", None)
    expected_end, parameters = 0, 0
    for name, entry in sorted(header.items(), key=lambda item: _offsets(item)[0]):
        begin, end = _offsets((name, entry))
        shape, dtype = entry.get("shape"), entry.get("dtype")
        if dtype not in SAFETENSORS_BYTES or not _is_shape(shape):
            raise UserError(f"tensor {name!r}: unknown dtype or bad shape in the header")
        count = math.prod(shape)
        if begin != expected_end or end - begin != count * SAFETENSORS_BYTES[dtype]:
            raise UserError(f"tensor {name!r}: its offsets do not match its shape")
        expected_end, parameters = end, parameters + count
    if 8 + length + expected_end != size:
        raise UserError("the safetensors data does not match its header (truncated?)")
    return {"tensors": len(header), "parameters": parameters}


def _offsets(item: tuple[str, Any]) -> tuple[int, int]:
    name, entry = item
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2 and _is_shape(offsets)):
        raise UserError(f"tensor {name!r}: bad data_offsets in the header")
    return offsets[0], offsets[1]


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and v >= 0 for v in value)


def inspect_dataset(path: Path, max_decoded_bytes: int) -> tuple[str, dict[str, Any]]:
    """``(format, details)`` of a dataset file: shapes and class count, or ``UserError``."""
    from otrt_core.data.uploads import NeedsRegistration, ZipLimits, load_dataset_file
    from otrt_core.errors import TooLarge

    try:
        arrays = load_dataset_file(path, ZipLimits(max_decoded_bytes=max_decoded_bytes))
    except NeedsRegistration as error:  # sound, but for POST /v1/datasets only
        return "imagefolder_zip", {"input_shape": None, "registration": error.message}
    except TooLarge as error:
        if path.suffix != ".zip":
            raise
        # Too large to decode as one array, not to register: the converter decodes one
        # image at a time, each within its own bound (a bomb's images are refused there).
        advice = (
            f"{error.message}: too large to train on as one array; register it (POST "
            "/v1/datasets) and train on the ds_… dataset, which streams"
        )
        return "imagefolder_zip", {"input_shape": None, "registration": advice}
    details = {
        "input_shape": list(arrays.x_train.shape[1:]),
        "num_classes": int(arrays.y_train.max()) + 1,
        "train_size": len(arrays.x_train),
        "test_size": len(arrays.x_test),
        "unlabeled_size": 0 if arrays.x_unlabeled is None else len(arrays.x_unlabeled),
    }
    return ("npz" if path.suffix == ".npz" else "imagefolder_zip"), details


def fit_verdict(path: Path, architecture: str, input_shape: tuple[int, ...]) -> str | None:
    """Why the weights do not fit the architecture (built on the meta device), or ``None``."""
    from otrt_core.train.checkpoint import read_weights
    from otrt_core.train.setup import fitted_teacher

    try:
        fitted_teacher(architecture, read_weights(path), input_shape, meta=True)
    except UserError as error:
        return error.message
    return None


def layer_names(architecture: str, input_shape: tuple[int, ...]) -> list[str]:
    """The model's layer names, built on the meta device (no memory, no weights)."""
    from otrt_core.models import skeleton

    return list(skeleton(architecture, input_shape=input_shape).layer_names)


def verdict_on(argv: list[str]) -> dict[str, Any]:
    """``teacher|dataset PATH MAX_DECODED_BYTES``, ``fit PATH ARCHITECTURE
    INPUT_SHAPE_JSON`` or ``layers ARCHITECTURE INPUT_SHAPE_JSON``: the JSON verdict."""
    task, path = argv[0], Path(argv[1])
    try:
        if task == "layers":
            return {"layers": layer_names(argv[1], tuple(json.loads(argv[2])))}
        if task == "fit":
            return {"misfit": fit_verdict(path, argv[2], tuple(json.loads(argv[3])))}
        if task == "teacher":
            file_format, details = inspect_teacher(path)
        else:
            file_format, details = inspect_dataset(path, int(argv[2]))
        return {"format": file_format, "details": details}
    except TooLarge as error:
        return {"error": str(error), "too_large": True}
    except MemoryError:
        return {"error": "reading the upload needs more memory than allowed", "too_large": True}
    except UserError as error:
        return {"error": str(error)}


def serve() -> int:
    """The warm child: one request (a JSON list of arguments) per stdin line, one verdict
    per stdout line, until stdin ends. Whatever a library prints goes to stderr."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    import torch  # noqa: F401  (once, before the first request: what keeps the child warm)

    for line in sys.stdin:
        replies.write(json.dumps(verdict_on(json.loads(line))) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
