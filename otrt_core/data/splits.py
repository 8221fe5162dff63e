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
from typing import Any

import numpy as np
import torch
from torch import Tensor

from otrt_core.data.catalog import ArraySplits
from otrt_core.data.selection import select


@dataclass(frozen=True)
class PreparedData:
    x_train: Tensor  # (N, *input_shape) labeled training inputs, normalized
    y_train: Tensor  # (N,)
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    # Training inputs whose labels are left unused (may be empty); a registered pool too
    # large for memory beside streamed data is a PoolStream (otrt_core.data.registered).
    x_unlabeled: Tensor | Any
    num_classes: int
    mean: Tensor  # (C,) per-channel statistics of the training inputs
    std: Tensor  # (C,)
    # Training batches from a registered dataset's shards (otrt_core.data.registered);
    # ``None`` when the inputs are tensors. Streamed inputs are then StreamedInputs.
    stream: Any = None

    @property
    def streamed(self) -> bool:
        return self.stream is not None


def prepare(
    arrays: ArraySplits,
    *,
    classes: Sequence[int] | None,
    train_subset: int | None,
    val_fraction: float,
    seed: int,
) -> PreparedData:
    chosen = select(
        arrays.y_train,
        arrays.y_test,
        classes=classes,
        train_subset=train_subset,
        val_fraction=val_fraction,
        seed=seed,
    )
    x_train, y_train = arrays.x_train[chosen.train], chosen.y_train
    x_val, y_val = arrays.x_train[chosen.val], chosen.y_val
    x_test, y_test = arrays.x_test[chosen.test], chosen.y_test
    x_unlabeled = arrays.x_train[chosen.unlabeled]
    num_classes = chosen.num_classes

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
