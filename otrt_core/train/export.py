"""ONNX export of the trained student, checked against torch with onnxruntime, and its
static int8 quantization."""

from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from otrt_core.atomic import atomic_path
from otrt_core.models import StagedModel
from otrt_core.report.cost import ONNX_INPUT

# Float32 kernels differ between torch and onnxruntime; beyond this the export is wrong.
TOLERANCE = 1e-4


@dataclass(frozen=True)
class OnnxCheck:
    max_abs_diff: float
    ok: bool


def export_onnx(model: StagedModel, sample: Tensor, path: Path) -> OnnxCheck:
    """Writes ``model``'s logits as ONNX (dynamic batch) and compares onnxruntime's outputs.

    ``sample`` is a few real inputs ``(B, *input_shape)``; the check runs on them.
    The export uses the TorchScript exporter: the torch.export-based one takes
    seconds per model (about 50x longer here) for the same graph on these models.
    """
    import onnxruntime

    model = copy.deepcopy(model).cpu().eval()
    sample = sample.cpu()

    def write(temp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (sample,),
                str(temp),
                dynamo=False,
                input_names=[ONNX_INPUT],
                output_names=["logits"],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, "logits": {0: "batch"}},
            )

    with atomic_path(path) as temp:
        write(temp)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {ONNX_INPUT: sample.numpy()})
    with torch.no_grad():
        torch_logits = model(sample).numpy()
    scale = max(1.0, float(np.abs(torch_logits).max()))
    max_abs_diff = float(np.abs(onnx_logits - torch_logits).max())
    return OnnxCheck(max_abs_diff=max_abs_diff, ok=max_abs_diff <= TOLERANCE * scale)


def quantize_int8(float_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """Static int8 quantization (QDQ, int8 weights and activations) of the graph, with the
    activation ranges calibrated on ``calibration`` inputs, written atomically.

    The graph is first prepared as onnxruntime's tooling asks (shape inference and
    graph optimizations, ``quant_pre_process``).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Inputs(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 32)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {ONNX_INPUT: batch}

    with tempfile.TemporaryDirectory() as scratch, atomic_path(int8_path) as temp:
        prepared = Path(scratch) / "prepared.onnx"
        try:
            quant_pre_process(float_path, prepared)
        except Exception:
            # (a Reshape to a computed shape, as in a converted graph's flatten): ONNX's
            # own shape inference then does without it.
            quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(temp),
            Inputs(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
