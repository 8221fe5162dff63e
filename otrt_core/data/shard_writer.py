"""Writing a dataset's snapshot: WebDataset tar shards plus one ``index.json``.

A shard is a plain tar (``<split>-<n>.tar``) of samples, each two members:
``<key>.<jpg|png>`` (the stored image) and ``<key>.cls`` (its label as text,
``-1`` for an unlabeled image). Any WebDataset tool reads them. A shard is
written under a temporary name and renamed once complete, so a shard that
exists is whole; the conversion resumes after the last complete one.

``index.json`` (:class:`ShardIndex`) lists every shard with its sample count,
bytes and sha256, and the dataset's classes, channels and pixel statistics:
the reader needs nothing else.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

INDEX = "index.json"
SHARD_BYTES = 64 << 20  # a shard's target size: few enough files, small enough to cache


@dataclass(frozen=True)
class ShardInfo:
    name: str  # the file name, relative to the snapshot's root
    split: str
    samples: int
    bytes: int
    sha256: str
    labels: list[int] = field(default_factory=list)  # of its samples, in order (-1: none)


@dataclass
class ShardIndex:
    """What a snapshot holds; written last, so a snapshot with an index is complete."""

    classes: list[str]
    channels: int  # 1 when every image is grey, else 3
    mean: list[float]  # per channel, of the training images' pixels in [0, 1]
    std: list[float]
    median_size: list[int]  # [h, w] of the images as stored (what image_size defaults to)
    shards: list[ShardInfo] = field(default_factory=list)

    def split_shards(self, split: str) -> list[ShardInfo]:
        return [shard for shard in self.shards if shard.split == split]

    def count(self, split: str) -> int:
        return sum(shard.samples for shard in self.split_shards(split))

    def write(self, root: Path) -> None:
        temp = root / f".{INDEX}.tmp"
        temp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temp, root / INDEX)

    @classmethod
    def read(cls, path: Path) -> ShardIndex:
        raw = json.loads(path.read_text())
        raw["shards"] = [ShardInfo(**shard) for shard in raw["shards"]]
        return cls(**raw)


class ShardWriter:
    """Samples of one split into tar shards of about ``shard_bytes`` under ``root``."""

    def __init__(self, root: Path, split: str, first_shard: int, shard_bytes: int = SHARD_BYTES):
        self.root, self.split, self.shard_bytes = root, split, shard_bytes
        self.number = first_shard
        self._tar: tarfile.TarFile | None = None
        self._labels: list[int] = []

    def add(self, key: str, image: bytes, suffix: str, label: int) -> ShardInfo | None:
        """Appends a sample; returns the shard it completed, if it completed one."""
        if self._tar is None:
            # Closed by :meth:`close`, once the shard is full or the split ends.
            self._tar = tarfile.open(self._temp_path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        _add_member(self._tar, f"{key}.{suffix}", image)
        _add_member(self._tar, f"{key}.cls", str(label).encode())
        self._labels.append(label)
        if self._temp_path.stat().st_size >= self.shard_bytes:
            return self.close()
        return None

    def close(self) -> ShardInfo | None:
        """Completes the open shard (fsync, rename); ``None`` if it holds no sample."""
        if self._tar is None:
            return None
        self._tar.close()
        self._tar = None
        name = f"{self.split}-{self.number:06d}.tar"
        with open(self._temp_path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
            os.fsync(handle.fileno())
        size = self._temp_path.stat().st_size
        os.replace(self._temp_path, self.root / name)
        info = ShardInfo(name, self.split, len(self._labels), size, digest, self._labels)
        self.number, self._labels = self.number + 1, []
        return info

    @property
    def _temp_path(self) -> Path:
        return self.root / f".{self.split}-{self.number:06d}.tar.part"


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
