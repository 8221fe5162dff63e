"""From a dataset's arrays to the splits a job trains on.

In order: keep and relabel ``classes``; split a validation set off the
training set (seeded, stratified); keep ``train_subset`` labeled examples per
class, the other training inputs becoming the unlabeled pool (with any
unlabeled inputs the dataset brings); normalize every split per channel with
statistics of the training inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from otrt_core.data.catalog import ArraySplits


@dataclass(frozen=True)
class PreparedData:
    x_train: Tensor  # (N, *input_shape) labeled training inputs, normalized
    y_train: Tensor  # (N,)
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    x_unlabeled: Tensor  # training inputs whose labels are left unused (may be empty)
    num_classes: int
    mean: Tensor  # (C,) per-channel statistics of the training inputs
    std: Tensor  # (C,)


def prepare(
    arrays: ArraySplits,
    *,
    classes: Sequence[int] | None,
    train_subset: int | None,
    val_fraction: float,
    seed: int,
) -> PreparedData:
    x_train, y_train, x_test, y_test = arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    if classes is not None:
        x_train, y_train = _keep_classes(x_train, y_train, classes)
        x_test, y_test = _keep_classes(x_test, y_test, classes)
        num_classes = len(classes)

    rng = np.random.default_rng(seed)
    val_mask = _stratified_mask(y_train, val_fraction, rng)
    x_val, y_val = x_train[val_mask], y_train[val_mask]
    x_train, y_train = x_train[~val_mask], y_train[~val_mask]

    x_unlabeled = x_train[:0]
    if train_subset is not None:
        labeled = _first_per_class(y_train, train_subset, rng)
        x_unlabeled = x_train[~labeled]
        x_train, y_train = x_train[labeled], y_train[labeled]

    if arrays.x_unlabeled is not None:  # an uploaded unlabeled set joins the pool
        x_unlabeled = np.concatenate([x_unlabeled, arrays.x_unlabeled])

    every_train_input = np.concatenate([x_train, x_unlabeled])
    channel_axes = (0, *range(2, every_train_input.ndim))
    mean = every_train_input.mean(axis=channel_axes)
    std = every_train_input.std(axis=channel_axes) + 1e-6

    def normalized(x: np.ndarray) -> Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return torch.from_numpy(((x - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32))

    def labels(y: np.ndarray) -> Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return PreparedData(
        x_train=normalized(x_train),
        y_train=labels(y_train),
        x_val=normalized(x_val),
        y_val=labels(y_val),
        x_test=normalized(x_test),
        y_test=labels(y_test),
        x_unlabeled=normalized(x_unlabeled),
        num_classes=num_classes,
        mean=torch.from_numpy(mean.astype(np.float32)),
        std=torch.from_numpy(std.astype(np.float32)),
    )


def _keep_classes(x: np.ndarray, y: np.ndarray, classes: Sequence[int]) -> tuple:
    """Rows of the listed classes, relabelled 0..k-1 in the listed order."""
    relabel = {label: index for index, label in enumerate(classes)}
    keep = np.isin(y, list(classes))
    return x[keep], np.array([relabel[label] for label in y[keep]], dtype=np.int64)


def _stratified_mask(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
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
