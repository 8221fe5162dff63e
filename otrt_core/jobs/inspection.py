"""What an uploaded file is, checked on arrival (never unpickling anything).

Teachers: safetensors, or a PyTorch state dict read with ``weights_only=True``
(a pickle that would build any other object is refused). Datasets: ``.npz``
arrays or an ImageFolder ``.zip`` read member by member within limits. The
heavy libraries are imported here, inside the calls, so the API starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEACHER_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
DATASET_SUFFIXES = (".npz", ".zip")


class InvalidUpload(ValueError):
    """The file cannot be used for its purpose; the message says why."""


def storage_suffix(purpose: str, filename: str, head: bytes) -> str:
    """The suffix a stored upload keeps: it tells the readers what format to expect."""
    suffix = Path(filename).suffix.lower()
    if purpose == "dataset":
        if suffix not in DATASET_SUFFIXES:
            raise InvalidUpload("datasets are .npz arrays or ImageFolder .zip files")
        return suffix
    if suffix == ".safetensors" or (suffix not in TEACHER_SUFFIXES and _looks_safetensors(head)):
        return ".safetensors"
    return ".pt"


def _looks_safetensors(head: bytes) -> bool:
    """safetensors files open with an 8-byte little-endian header length, then JSON."""
    return len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 27


def inspect_teacher(path: Path) -> tuple[str, dict[str, Any]]:
    """``(format, details)`` of a teacher checkpoint; ``InvalidUpload`` if unreadable."""
    from otrt_core.train.checkpoint import WeightsError, read_weights

    try:
        weights = read_weights(path)
    except WeightsError as error:
        if "state dict" in str(error):
            raise InvalidUpload(str(error).replace(path.name, "the upload")) from None
        raise InvalidUpload(
            "the upload is neither safetensors nor a PyTorch state dict of tensors "
            "(pickled objects other than tensors are refused, never unpickled)"
        ) from None
    details = {"tensors": len(weights), "parameters": sum(t.numel() for t in weights.values())}
    return ("safetensors" if path.suffix == ".safetensors" else "pytorch"), details


def inspect_dataset(path: Path) -> tuple[str, dict[str, Any]]:
    """``(format, details)`` of a dataset file: shapes and class count, or ``InvalidUpload``."""
    from otrt_core.data import DatasetFileError, load_dataset_file

    try:
        arrays = load_dataset_file(path)
    except DatasetFileError as error:
        raise InvalidUpload(str(error).replace(path.name, "the upload")) from None
    details = {
        "input_shape": list(arrays.x_train.shape[1:]),
        "num_classes": int(arrays.y_train.max()) + 1,
        "train_size": len(arrays.x_train),
        "test_size": len(arrays.x_test),
        "unlabeled_size": 0 if arrays.x_unlabeled is None else len(arrays.x_unlabeled),
    }
    return ("npz" if path.suffix == ".npz" else "imagefolder_zip"), details
