"""Datasets: built-in ones that ship inside a package, users' files, registered datasets
(sources, formats, shards), and the splits a job uses.

Every name is imported on first use (PEP 562): the API reads ``otrt_core.data.sources``
to check a registration without importing numpy, and the inspector reads an upload
without torch.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from pathlib import Path
from typing import Any

_LAZY = {
    "DATASETS": "otrt_core.data.catalog",
    "ArraySplits": "otrt_core.data.catalog",
    "BuiltinDataset": "otrt_core.data.catalog",
    "DatasetUnavailable": "otrt_core.data.catalog",
    "ZipLimits": "otrt_core.data.uploads",
    "load_dataset_file": "otrt_core.data.uploads",
    "is_dataset_file": "otrt_core.catalog",
    "PreparedData": "otrt_core.data.splits",
    "prepare": "otrt_core.data.splits",
}

__all__ = [*_LAZY, "load_arrays"]


@lru_cache(maxsize=4)
def load_arrays(name: str, datasets_root: Path | None = None):
    """The arrays of a built-in dataset, read-only and cached per process.

    Unknown names list the valid ones.
    """
    from otrt_core.data.catalog import DATASETS
    from otrt_core.errors import UserError

    if name not in DATASETS:
        message = f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}"
        raise UserError(message, ("dataset", "name"))
    arrays = DATASETS[name].load(datasets_root)
    for array in (arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test):
        array.setflags(write=False)  # shared by every caller of the cache
    return arrays


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
