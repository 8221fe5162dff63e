"""Training defaults that follow the data's size (otrt_core.sizing), and what a run records."""

from __future__ import annotations

import json

import pytest

from otrt_core import sizing
from otrt_core.spec import resolve_spec
from otrt_core.train import RunOptions, train


@pytest.mark.parametrize(
    ("labeled", "batch", "epochs"),
    [
        (50, 8, 286),  # 7 steps an epoch: 2002 steps
        (500, 62, 223),  # 9 steps an epoch
        (7200, 128, 36),  # 57 steps an epoch
        (54000, 128, 20),  # 422 steps an epoch: v1's 20 epochs are more than the budget
        (3, 8, 1000),  # 1 step an epoch: capped
    ],
)
def test_sizes_by_labeled_set(labeled, batch, epochs):
    assert sizing.batch_size_for(labeled) == batch
    assert sizing.epochs_for(labeled, batch) == epochs
    assert sizing.lr_for("sgd", batch) == pytest.approx(0.05 * batch / 128)
    assert sizing.lr_for("adamw", 128) == 0.001


def test_a_run_records_what_it_chose_and_keeps_what_it_was_given(tmp_path):
    body = {
        "mode": "supervised",
        "student": {"architecture": "mlp_small"},
        "dataset": {"name": "digits", "train_subset": 5},
        "training": {"epochs": 2},
    }
    train(resolve_spec(body), RunOptions(out_dir=tmp_path, device="cpu"), emit=lambda e: None)
    used = json.loads((tmp_path / "spec.json").read_text())["training"]
    # 50 labeled inputs: batch 8 and lr 0.05 * 8 / 128; the epochs given are kept.
    assert (used["epochs"], used["batch_size"]) == (2, 8)
    assert used["lr"] == pytest.approx(0.003125)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["history"][-1]["step"] == 2 * 7  # ceil(50 / 8) steps an epoch
