"""Offline datasets: built-in ones that ship inside a package, and the splits a job uses."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from otrt_core.catalog import is_dataset_file
from otrt_core.data.catalog import DATASETS, ArraySplits, DatasetInfo, DatasetUnavailable
from otrt_core.data.uploads import ZipLimits, load_dataset_file
from otrt_core.errors import UserError


@lru_cache(maxsize=4)
def load_arrays(name: str, datasets_root: Path | None = None) -> ArraySplits:
    """The arrays of a built-in dataset, read-only and cached per process.

    Unknown names list the valid ones.
    """
    if name not in DATASETS:
        message = f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}"
        raise UserError(message, ("dataset", "name"))
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
    "ZipLimits",
    "is_dataset_file",
    "load_arrays",
    "load_dataset_file",
    "prepare",
]


def __getattr__(name: str):
    """``prepare`` and ``PreparedData`` need torch: imported on first use, so that reading
    an uploaded file (the service's inspector) stays torch-free."""
    if name in ("PreparedData", "prepare"):
        from otrt_core.data import splits

        return getattr(splits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
