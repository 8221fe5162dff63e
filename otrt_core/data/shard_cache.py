"""The shards of remote snapshots, cached on this host for every job that reads them.

One directory per snapshot (named by a hash of its location) under one root, so
two jobs on the same dataset fetch each shard once. The whole stays under
``max_bytes`` (``OTRT_SHARD_CACHE_BYTES``): after a fetch, the least recently
used shards (by modification time; a reader touches a shard it opens) are
removed until it fits. Several processes (the jobs on a worker, their loader
workers) evict at once: eviction holds an exclusive ``flock`` on the root's
lock file, and every file may vanish between listing and use, so a missing file
is skipped, never an error. A shard removed under a reader that has it open
stays readable (POSIX keeps an unlinked file until its last descriptor closes);
one removed before the reader opens it is fetched again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCK = ".evicting"


@dataclass(frozen=True)
class ShardCache:
    root: Path
    max_bytes: int

    def directory(self, location: str) -> Path:
        """Where the shards of the snapshot at ``location`` are kept."""
        return self.root / hashlib.sha256(location.encode()).hexdigest()[:24]

    def evict(self, keep: Path) -> list[Path]:
        """Removes least recently used shards (never ``keep``) until the cache fits;
        returns what it removed."""
        removed = []
        with self._locked():
            shards = sorted(_shards(self.root))  # (mtime, bytes, path), oldest first
            total = sum(size for _, size, _ in shards)
            for _, size, path in shards:
                if total <= self.max_bytes:
                    break
                if path == keep:
                    continue
                path.unlink(missing_ok=True)
                total -= size
                removed.append(path)
        return removed

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _shards(root: Path) -> Iterator[tuple[float, int, Path]]:
    for path in root.glob("*/*.tar"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed since the listing
            continue
        yield stat.st_mtime, stat.st_size, path


def touch(path: Path) -> bool:
    """Marks ``path`` recently used; False when it is gone."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True
