"""A one-minute local demo of the OT regularizer, run by the real trainer (`otrt demo`).

A teacher MLP learns scikit-learn's digits from every training label. Two
quarter-width students then learn from a few labels per class: one alone, one
distilled with lambda * Omega(student penultimate layer, teacher's) computed
on the training inputs whose labels it never sees (``regularizer.unlabeled``).
Each run is an ordinary job spec trained by ``otrt_core.train``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def run_demo(
    *, epochs: int, labels_per_class: int, weight: float, seed: int, torch_threads: int | None
) -> None:
    import torch

    from otrt_core.protocol import STUDENT_WEIGHTS
    from otrt_core.spec import resolve_spec
    from otrt_core.train import RunOptions, train

    if torch_threads:
        torch.set_num_threads(torch_threads)
    console = Console()
    # Small batches: a few labels per class still give the students a few steps per epoch.
    training = {"epochs": epochs, "batch_size": 16, "lr": 0.05, "seed": seed}

    def run(body: dict[str, Any], out: Path, teacher: Path | None = None) -> dict[str, Any]:
        options = RunOptions(out_dir=out, device="cpu", teacher_path=teacher)
        return train(resolve_spec(body), options, emit=lambda event: None)

    with tempfile.TemporaryDirectory(prefix="otrt-demo-") as scratch:
        root = Path(scratch)
        teacher = run(
            {
                "mode": "supervised",
                "student": {"architecture": "mlp"},
                "dataset": {"name": "digits"},
                "training": {"epochs": 10, "batch_size": 64, "seed": seed},
            },
            root / "teacher",
        )
        console.print(f"teacher: mlp, every label, test accuracy {teacher['test_accuracy']:.1%}")
        weights = root / "teacher" / STUDENT_WEIGHTS
        few = {"name": "digits", "train_subset": labels_per_class}
        alone = run(
            {
                "mode": "supervised",
                "student": {"architecture": "mlp_small"},
                "dataset": few,
                "training": training,
            },
            root / "alone",
        )
        with_ot = run(
            {
                "mode": "distill",
                "teacher": {"architecture": "mlp", "checkpoint": "teacher"},
                "student": {"architecture": "mlp_small"},
                "dataset": few,
                "regularizer": {"kind": "ot", "weight": weight, "unlabeled": True},
                "training": training,
            },
            root / "ot",
            teacher=weights,
        )
    table = Table(title=f"students: mlp_small, {labels_per_class * 10} labels")
    for column in ["regularizer", "test accuracy", "Omega to the teacher"]:
        table.add_column(column)
    table.add_row("none", f"{alone['test_accuracy']:.1%}", "-")
    omega = with_ot["history"][-1]["ot_distance"]
    table.add_row(f"ot (lambda={weight:g})", f"{with_ot['test_accuracy']:.1%}", f"{omega:.4f}")
    console.print(table)
