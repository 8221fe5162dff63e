"""A one-minute local demo of the OT regularizer (what `make run` shows until the service exists).

A teacher MLP learns scikit-learn's digits from every training label. Two
students with a hidden layer a quarter as wide then learn from a few labels
per class: one alone, one with lambda * Omega(student hidden layer, teacher
hidden layer) computed on all training inputs, whose labels it never sees.
"""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits
from torch import Tensor, nn

from otrt_core.ot import LayerPair, OTRegularizer

TEACHER_WIDTH = 128
STUDENT_WIDTH = 32


class HiddenMLP(nn.Module):
    """x (B, 64) -> hidden (B, width) -> logits (B, 10)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(64, width), nn.ReLU())
        self.head = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        hidden = self.hidden(x)
        return {"hidden": hidden, "logits": self.head(hidden)}


def run_demo(
    *, epochs: int, labels_per_class: int, weight: float, seed: int, torch_threads: int | None
) -> None:
    if torch_threads:
        torch.set_num_threads(torch_threads)
    console = Console()
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = _digits(seed)
    labeled = _few_per_class(y_train, labels_per_class, seed)

    teacher = HiddenMLP(TEACHER_WIDTH)
    _train(teacher, x_train, y_train, x_train, epochs=100, regularizer=None, teacher=None)
    teacher.eval().requires_grad_(False)
    console.print(
        f"teacher: {TEACHER_WIDTH} hidden units, all {len(y_train)} labels, "
        f"test accuracy {_accuracy(teacher, x_test, y_test):.1%}"
    )

    regularizer = OTRegularizer([LayerPair("hidden", "hidden")], weight=weight)
    table = Table(title=f"students: {STUDENT_WIDTH} hidden units, {len(labeled)} labels")
    for column in ["regularizer", "test accuracy", "Omega to the teacher"]:
        table.add_column(column)
    for name, reg in [("none", None), (f"ot (lambda={weight:g})", regularizer)]:
        torch.manual_seed(seed)
        student = HiddenMLP(STUDENT_WIDTH)
        _train(student, x_train[labeled], y_train[labeled], x_train, epochs, reg, teacher)
        with torch.no_grad():
            omega = regularizer(teacher(x_test), student(x_test)).distances["hidden->hidden"]
        table.add_row(name, f"{_accuracy(student, x_test, y_test):.1%}", f"{omega.item():.4f}")
    console.print(table)


def _digits(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # (1797, 64) in [0, 1]
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, test = order[:1400], order[1400:]
    return x[train], y[train], x[test], y[test]


def _few_per_class(labels: Tensor, per_class: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(picks)


def _train(
    model: HiddenMLP,
    x: Tensor,
    y: Tensor,
    unlabeled: Tensor,
    epochs: int,
    regularizer: OTRegularizer | None,
    teacher: HiddenMLP | None,
) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        loss = nn.functional.cross_entropy(model(x)["logits"], y)
        if regularizer is not None and teacher is not None:
            # Omega needs no labels: it sees every training input.
            batch = unlabeled[torch.randint(len(unlabeled), (256,))]
            with torch.no_grad():
                teacher_features = teacher(batch)
            loss = loss + regularizer(teacher_features, model(batch)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _accuracy(model: HiddenMLP, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return (model(x)["logits"].argmax(dim=1) == y).float().mean().item()
