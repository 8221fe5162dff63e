"""A registered dataset's snapshot as its samples: labels from the index, bytes by number.

Every sample has a global number per split (shards in index order, samples in
shard order), and its label is in the index (``index.json``). How a shard's
sample is read (a local directory, an S3 prefix through the host's cache) is
the :class:`SampleReader`'s business: ``otrt_core.data.shard_reader`` has the
one the service uses, and builds snapshots with it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from otrt_core.data.shard_writer import ShardIndex, ShardInfo


class SampleReader(Protocol):
    def read(self, shard: ShardInfo, position: int) -> bytes:
        """The image bytes of the ``position``-th sample of ``shard``."""
        ...


class Snapshot:
    """A snapshot's index and reader: labels per split, image bytes per sample."""

    def __init__(self, index: ShardIndex, reader: SampleReader) -> None:
        self.index, self.reader = index, reader
        self._starts: dict[str, np.ndarray] = {}
        for split in ("train", "val", "test", "unlabeled"):
            counts = [shard.samples for shard in index.split_shards(split)]
            self._starts[split] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def median_size(self) -> list[int]:
        return self.index.median_size

    def labels(self, split: str) -> np.ndarray:
        shards = self.index.split_shards(split)
        return np.array([label for s in shards for label in s.labels], dtype=np.int64)

    def shard_of(self, split: str, rows: np.ndarray) -> np.ndarray:
        """The position (among the split's shards) of the shard holding each row."""
        return np.searchsorted(self._starts[split], rows, side="right") - 1

    def image(self, split: str, row: int) -> bytes:
        shard = int(self.shard_of(split, np.array([row]))[0])
        info = self.index.split_shards(split)[shard]
        return self.reader.read(info, row - int(self._starts[split][shard]))
