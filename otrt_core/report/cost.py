"""What a model costs to run: parameters, multiply-accumulates, onnxruntime CPU latency,
and its int8 version (static quantization calibrated on training inputs)."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from otrt_core.atomic import atomic_path

# Timed runs of each batch size after one warm-up run: enough for a stable median of
# small models, a few seconds at most for large ones.
LATENCY_RUNS = {1: 20, 64: 5}
CALIBRATION_INPUTS = 128
ONNX_INPUT = "input"  # the input name of every graph otrt exports


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def macs_per_input(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the convolutions and linear layers for one input.

    A convolution costs ``C_in / groups * prod(kernel)`` per output value, a
    linear layer ``in_features`` per output value; other operations (and
    matrix products that are not ``nn.Linear``) are not counted.
    """
    total = 0

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        else:
            kernel = math.prod(module.kernel_size)
            total += output.numel() * module.in_channels // module.groups * kernel

    layers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, layers)]
    was_training = model.training
    try:
        device = next(model.parameters()).device
        model.eval()(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


def session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latency_ms(path: Path, input_shape: tuple[int, ...], threads: int) -> dict[str, float]:
    """Median onnxruntime CPU latency of the graph at batch 1 and 64 (``b1``, ``b64``)."""
    runner = session(path, threads)
    medians = {}
    for batch, runs in LATENCY_RUNS.items():
        x = np.zeros((batch, *input_shape), dtype=np.float32)
        runner.run(None, {ONNX_INPUT: x})  # warm-up: allocations, kernel choice
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            runner.run(None, {ONNX_INPUT: x})
            times.append((time.perf_counter() - start) * 1e3)
        medians[f"b{batch}"] = statistics.median(times)
    return medians


def onnx_logits(path: Path, x: np.ndarray, threads: int, batch_size: int = 256) -> np.ndarray:
    """The graph's outputs on ``x``, a batch at a time."""
    runner = session(path, threads)
    return np.concatenate(
        [
            runner.run(None, {ONNX_INPUT: x[start : start + batch_size]})[0]
            for start in range(0, len(x), batch_size)
        ]
    )


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
