"""Offline datasets: built-in ones that ship inside a package, and the splits a job uses."""

from __future__ import annotations

from pathlib import Path

from otrt_core.data.catalog import DATASETS, ArraySplits, DatasetInfo, DatasetUnavailable
from otrt_core.data.splits import PreparedData, prepare


def load_arrays(name: str, datasets_root: Path | None = None) -> ArraySplits:
    """The arrays of a built-in dataset; unknown names list the valid ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name].load(datasets_root)


__all__ = [
    "DATASETS",
    "ArraySplits",
    "DatasetInfo",
    "DatasetUnavailable",
    "PreparedData",
    "load_arrays",
    "prepare",
]
