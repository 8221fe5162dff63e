"""The zoo's small image models against the classic LeNet-5, trained the same way.

Every model trains supervised with one recipe per dataset: the service's
sizing rule for the batch and the learning rate (``otrt_core.sizing``) and a
budget of ``--steps`` optimizer steps (the service's own default is
``sizing.STEP_BUDGET``). LeNet-5 (LeCun et al. 1998: 5x5 convolutions of 6
and 16 channels, each max-pooled, then 120 and 84 hidden units; ReLU) is
exported to ONNX and trained as a user's graph student (``student.init``), so
the same trainer trains every row; so is the all-convolutional design the zoo's
``cnn`` and ``cnn_small`` had in v1 (``cnn_v1``, ``cnn_v1_small``). Prints JSON
(test accuracy, parameters, MACs, ONNX latency and seconds per model and
dataset) and writes it with --out.

    OTRT_TORCH_THREADS=1 python bench/zoo.py --out bench/out/zoo.json   # about 25 minutes

``--quick`` trains two models for a few steps on 5 MNIST labels per class: a
smoke test, not a figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import publish
from otrt_core import protocol, sizing
from otrt_core.models import small
from otrt_core.settings import Settings
from otrt_core.spec import resolve_spec
from otrt_core.train import RunOptions, train

MODELS = ["mlp_small", "mlp", "cnn_v1_small", "cnn_v1", "cnn_small", "cnn", "lenet5"]
# Validation sets of about 1000 images: a 10% split of Fashion-MNIST's 60000,
# evaluated every epoch, would cost more than the training itself.
DATASETS = {
    "MNIST, 50 labels/class": {"name": "mnist", "train_subset": 50},
    "Fashion-MNIST, 50 labels/class": {
        "name": "fashion_mnist",
        "train_subset": 50,
        "val_fraction": 0.017,
    },
    "Fashion-MNIST, 500 labels/class": {
        "name": "fashion_mnist",
        "train_subset": 500,
        "val_fraction": 0.017,
    },
}
QUICK = {"MNIST, 5 labels/class": {"name": "mnist", "train_subset": 5}}


def lenet5(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-5 with ReLU and max-pooling; "same" padding on the first convolution
    keeps 28x28 inputs at LeCun's 32x32 geometry (5x5x16 features)."""
    channels, height, width = input_shape
    flat = 16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2)
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


# Models that are not in the zoo, trained as graphs: LeNet-5, and the zoo's
# all-convolutional design of v1 (stride-2 stages, global mean) at cnn's widths.
GRAPHS = {
    "lenet5": lambda shape: lenet5(shape, num_classes=10),
    "cnn_v1": lambda shape: small.ConvNet(small.ConvNetConfig((32, 64, 128), shape)),
    "cnn_v1_small": lambda shape: small.ConvNet(small.ConvNetConfig((8, 16, 32), shape)),
}


def export_graph(name: str, path: Path, input_shape: tuple[int, ...]) -> Path:
    model = GRAPHS[name](input_shape).eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, *input_shape),),
        path,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    return path


def recipe(labeled: int, steps: int) -> dict:
    """The service's batch and learning rate for ``labeled`` inputs, and epochs for ``steps``."""
    batch_size = sizing.batch_size_for(labeled)
    return {
        "batch_size": batch_size,
        "lr": sizing.lr_for("sgd", batch_size),
        "epochs": math.ceil(steps / math.ceil(labeled / batch_size)),
    }


def run(model: str, dataset: dict, steps: int, graphs: Path) -> dict:
    student = {"architecture": model}
    init = None
    if model in GRAPHS:
        init = export_graph(model, graphs / f"{model}.onnx", (1, 28, 28))
        student = {"init": str(init)}
    labeled = 10 * dataset["train_subset"]  # train_subset is per class; 10 classes
    body = {
        "mode": "supervised",
        "student": student,
        "dataset": dataset,
        "training": recipe(labeled, steps) | {"seed": 0},
    }
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        options = RunOptions(Path(out), student_init_path=init, device="cpu")
        metrics = train(resolve_spec(body), options, lambda event: None)
        seconds = time.perf_counter() - start
        costs = json.loads((Path(out) / protocol.REPORT).read_text())["student"]
    return {
        "test_accuracy": metrics["test_accuracy"],
        "params": costs["params"],
        "macs": costs["macs"],
        "latency_ms_b1": costs["latency_ms"]["b1"],
        "seconds": seconds,
        "training": body["training"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per run")
    parser.add_argument("--quick", action="store_true", help="seconds, on digits")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if Settings().torch_threads:
        torch.set_num_threads(Settings().torch_threads)
    datasets, models = (QUICK, ["cnn_small", "lenet5"]) if args.quick else (DATASETS, MODELS)
    if args.quick:
        args.steps = 20
    report = {
        "benchmark": "zoo",
        "config": vars(args),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as graphs:
        report["rows"] = [
            {"dataset": name, "model": model, **run(model, dataset, args.steps, Path(graphs))}
            for name, dataset in datasets.items()
            for model in models
        ]
    report["load_average_end"] = os.getloadavg()
    publish(report, args.out)


if __name__ == "__main__":
    main()
