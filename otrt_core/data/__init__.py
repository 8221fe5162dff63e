"""Offline datasets: built-in ones that ship inside a package, and the splits a job uses."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from otrt_core.data.catalog import DATASETS, ArraySplits, DatasetInfo, DatasetUnavailable
from otrt_core.data.splits import PreparedData, prepare


@lru_cache(maxsize=4)
def load_arrays(name: str, datasets_root: Path | None = None) -> ArraySplits:
    """The arrays of a built-in dataset, read-only and cached per process.

    Unknown names list the valid ones.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    arrays = DATASETS[name].load(datasets_root)
    for array in (arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test):
        array.setflags(write=False)  # shared by every caller of the cache
    return arrays


__all__ = [
    "DATASETS",
    "ArraySplits",
    "DatasetInfo",
    "DatasetUnavailable",
    "PreparedData",
    "load_arrays",
    "prepare",
]
