"""ONNX export of the trained student, checked against torch with onnxruntime."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from otrt_core.atomic import atomic_path
from otrt_core.models import StagedModel

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
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )

    with atomic_path(path) as temp:
        write(temp)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {"input": sample.numpy()})
    with torch.no_grad():
        torch_logits = model(sample).numpy()
    scale = max(1.0, float(np.abs(torch_logits).max()))
    max_abs_diff = float(np.abs(onnx_logits - torch_logits).max())
    return OnnxCheck(max_abs_diff=max_abs_diff, ok=max_abs_diff <= TOLERANCE * scale)
