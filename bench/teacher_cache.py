"""What distilling costs per epoch next to plain training, with and without the teacher cache.

Prints JSON (and writes it with --out): the median epoch time of (a) the
student trained alone, (b) distilled with OT on the penultimate features with
``teacher_cache: auto`` and (c) with ``teacher_cache: off``, runs interleaved
round by round, epochs after the first only (the first holds the set-up and
the cache's one teacher pass, reported apart). Goal: (b) <= 1.15 x (a).

With ``--augment standard`` every run trains on random views (crop with 4-pixel
padding, flip): (b) keeps the teacher's outputs for ``--views`` K views per
image (``training.teacher_views``) and (c) runs the teacher on every augmented
batch. Goal then: (b) <= 1.3 x (a). Each round uses its own seed (0, 1, ...),
and the test accuracy of every run is reported too: K views against the
teacher on the fly, as many seeds as rounds.

    python bench/teacher_cache.py --augment standard --views 4 --rounds 3 \
        --out bench/out/teacher_cache_augment.json

The ``cifar_shaped`` setup times a CIFAR-sized pair (ResNet-56 -> ResNet-20 on
20k random 32x32x3 images written as an .npz): epoch times do not depend on
what the pixels show, and no CIFAR copy is needed on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.report import publish
from otrt_core.settings import Settings
from otrt_core.spec import resolve_spec
from otrt_core.train import RunOptions, train

SETUPS = {
    "fashion_mnist": {
        "teacher": "cnn",
        "student": "cnn_small",
        "dataset": {"name": "fashion_mnist", "train_subset": 500, "val_fraction": 0.017},
    },
    "mnist1d": {"teacher": "cnn1d", "student": "cnn1d_small", "dataset": {"name": "mnist1d"}},
    "cifar_shaped": {
        "teacher": "resnet56",
        "student": "resnet20",
        "dataset": {"name": "cifar_shaped.npz"},
    },
}


def write_cifar_shaped(path: Path, examples: int = 20_000, seed: int = 0) -> None:
    """Random CIFAR-10-shaped images (N, 32, 32, 3) uint8 and labels, for timing only."""
    generator = np.random.default_rng(seed)
    np.savez(
        path,
        x_train=generator.integers(0, 256, (examples, 32, 32, 3), dtype=np.uint8),
        y_train=generator.integers(0, 10, examples),
    )


def run_options(body: dict, out: Path, work: Path, teacher: Path | None, device: str) -> RunOptions:
    """Where one run writes, reads its teacher, and finds a dataset file the setup names."""
    name = body["dataset"]["name"]
    dataset_path = work / name if name.endswith(".npz") else None
    return RunOptions(out_dir=out, teacher_path=teacher, dataset_path=dataset_path, device=device)


def epoch_times(
    body: dict, work: Path, teacher: Path | None, device: str
) -> tuple[float, list[float], float]:
    """(first epoch with set-up, later epochs) in seconds, from the run's own history,
    and the run's test accuracy."""
    out = Path(tempfile.mkdtemp(dir=work))
    metrics = train(
        resolve_spec(body), run_options(body, out, work, teacher, device), lambda e: None
    )
    seconds = [record["seconds"] for record in metrics["history"]]
    later = [b - a for a, b in itertools.pairwise(seconds)]
    return seconds[0], later, metrics["test_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", choices=SETUPS, default="fashion_mnist")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--augment", choices=["none", "standard"], default="none")
    parser.add_argument("--views", type=int, default=4, help="teacher_views with --augment")
    parser.add_argument("--out")
    args = parser.parse_args()
    if Settings().torch_threads:
        torch.set_num_threads(Settings().torch_threads)
    setup = SETUPS[args.setup]
    training = {"epochs": args.epochs, "batch_size": 128, "lr": 0.05}
    dataset = setup["dataset"] | {"augment": args.augment}
    report = {
        "benchmark": "teacher_cache",
        "setup": args.setup,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.setup == "cifar_shaped":
            write_cifar_shaped(work / "cifar_shaped.npz")
        teacher_dir = work / "teacher"
        teacher_body = {
            "mode": "supervised",
            "student": {"architecture": setup["teacher"]},
            "dataset": setup["dataset"],
            "training": {**training, "epochs": 1},
        }
        train(
            resolve_spec(teacher_body),
            run_options(teacher_body, teacher_dir, work, None, args.device),
            lambda e: None,
        )
        teacher = teacher_dir / "student.safetensors"

        def distill(cache: str) -> dict:
            return {
                "mode": "distill",
                "teacher": {"architecture": setup["teacher"], "checkpoint": "teacher"},
                "student": {"architecture": setup["student"]},
                "dataset": dataset,
                "training": {**training, "teacher_cache": cache, "teacher_views": args.views},
            }

        configs = {
            "supervised": (
                {
                    **teacher_body,
                    "student": {"architecture": setup["student"]},
                    "dataset": dataset,
                    "training": training,
                },
                None,
            ),
            "distill_cached": (distill("auto"), teacher),
            "distill_uncached": (distill("off"), teacher),
        }
        firsts: dict[str, list[float]] = {name: [] for name in configs}
        laters: dict[str, list[float]] = {name: [] for name in configs}
        accuracies: dict[str, list[float]] = {name: [] for name in configs}
        for seed in range(args.rounds):
            for name, (body, teacher_path) in configs.items():
                seeded = body | {"training": body["training"] | {"seed": seed}}
                first, later, accuracy = epoch_times(seeded, work, teacher_path, args.device)
                firsts[name].append(first)
                laters[name].extend(later)
                accuracies[name].append(accuracy)
    epoch = {name: statistics.median(values) for name, values in laters.items()}
    report |= {
        "epoch_seconds": epoch,
        "first_epoch_with_setup_seconds": {n: statistics.median(v) for n, v in firsts.items()},
        "distill_cached_vs_supervised": epoch["distill_cached"] / epoch["supervised"],
        "distill_uncached_vs_supervised": epoch["distill_uncached"] / epoch["supervised"],
        "test_accuracy_by_seed": accuracies,
        "goal": 1.15 if args.augment == "none" else 1.3,
        "load_average_end": os.getloadavg(),
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
