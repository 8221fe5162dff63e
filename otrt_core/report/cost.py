"""What a model costs to run: parameters, multiply-accumulates, onnxruntime CPU latency,
and its int8 version (static quantization calibrated on training inputs)."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

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
