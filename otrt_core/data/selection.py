"""Which rows of a dataset a job uses, from its labels alone (no inputs needed).

In order, as API.md's dataset options read: keep and relabel ``classes``;
split a validation set off the training rows (seeded, stratified); keep
``train_subset`` labeled rows per class, the other training rows becoming the
unlabeled pool. Array datasets index their inputs with it
(``otrt_core.data.splits``); streamed ones their shards' samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Selection:
    train: np.ndarray  # rows of the training split kept as labeled training inputs
    y_train: np.ndarray  # their labels, relabelled 0..k-1 when ``classes`` is given
    val: np.ndarray  # rows of the training split held out for validation
    y_val: np.ndarray
    test: np.ndarray  # rows of the test split
    y_test: np.ndarray
    unlabeled: np.ndarray  # rows of the training split whose labels go unused
    num_classes: int


def select(
    y_train: np.ndarray,
    y_test: np.ndarray,
    *,
    classes: Sequence[int] | None,
    train_subset: int | None,
    val_fraction: float,
    seed: int,
    carve_val: bool = True,
) -> Selection:
    """The rows a job uses. Without ``carve_val`` (a dataset that brings its own
    validation split) no training row is held out: ``val`` is then empty."""
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    train_rows, test_rows = np.arange(len(y_train)), np.arange(len(y_test))
    if classes is not None:
        train_rows, y_train = keep_classes(y_train, classes)
        test_rows, y_test = keep_classes(y_test, classes)
        num_classes = len(classes)

    rng = np.random.default_rng(seed)
    val_mask = (
        stratified_mask(y_train, val_fraction, rng)
        if carve_val
        else np.zeros(len(y_train), dtype=bool)
    )
    val, y_val = train_rows[val_mask], y_train[val_mask]
    train_rows, y_train = train_rows[~val_mask], y_train[~val_mask]

    unlabeled = train_rows[:0]
    if train_subset is not None:
        labeled = _first_per_class(y_train, train_subset, rng)
        unlabeled = train_rows[~labeled]
        train_rows, y_train = train_rows[labeled], y_train[labeled]
    return Selection(train_rows, y_train, val, y_val, test_rows, y_test, unlabeled, num_classes)


def keep_classes(y: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the listed classes, and their labels relabelled 0..k-1 in the listed order."""
    relabel = {label: index for index, label in enumerate(classes)}
    rows = np.flatnonzero(np.isin(y, list(classes)))
    return rows, np.array([relabel[label] for label in y[rows]], dtype=np.int64)


def stratified_mask(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask selecting about ``fraction`` of each class (at least one if it has two)."""
    mask = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        mask[members[:count]] = True
    return mask


def _first_per_class(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        mask[rng.permutation(np.flatnonzero(y == label))[:per_class]] = True
    return mask
