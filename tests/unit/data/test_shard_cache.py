"""The host's shard cache: shared by snapshot, bounded, and safe when processes evict at once."""

from __future__ import annotations

import os
import time
from multiprocessing import get_context
from pathlib import Path

from otrt_core.data.shard_cache import ShardCache, touch

SHARD = 10_000


def _fill_and_evict(root: str, worker: int, rounds: int) -> int:
    """Writes shards of two snapshots and evicts after each, as a job's loader does."""
    cache = ShardCache(Path(root), 5 * SHARD)
    for n in range(rounds):
        directory = cache.directory(f"s3://bucket/snapshot-{n % 2}/")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{worker}-{n:04d}.tar"
        temp = path.with_suffix(".part")
        temp.write_bytes(b"\0" * SHARD)
        os.replace(temp, path)
        cache.evict(keep=path)
        touch(directory / f"{worker}-{n - 1:04d}.tar")  # may be gone: no error either way
    return rounds


def test_four_processes_evicting_at_once_never_fail_and_keep_the_bound(tmp_path):
    with get_context("spawn").Pool(4) as pool:
        done = pool.starmap(_fill_and_evict, [(str(tmp_path), w, 150) for w in range(4)])
    assert done == [150] * 4
    cache = ShardCache(tmp_path, 5 * SHARD)
    cache.evict(keep=tmp_path / "none")
    sizes = [p.stat().st_size for p in tmp_path.glob("*/*.tar")]
    assert 0 < sum(sizes) <= 5 * SHARD


def test_two_jobs_on_one_snapshot_share_its_directory_and_the_oldest_goes_first(tmp_path):
    cache = ShardCache(tmp_path, 2 * SHARD)
    assert cache.directory("s3://b/shop/") == ShardCache(tmp_path, 1).directory("s3://b/shop/")
    assert cache.directory("s3://b/shop/") != cache.directory("s3://b/other/")
    paths = []
    for n, location in enumerate(["s3://b/shop/", "s3://b/other/", "s3://b/shop/"]):
        directory = cache.directory(location)
        directory.mkdir(parents=True, exist_ok=True)
        paths.append(directory / f"{n}.tar")
        paths[-1].write_bytes(b"\0" * SHARD)
        os.utime(paths[-1], (time.time() - 100 + n, time.time() - 100 + n))
    touch(paths[0])  # read again: now the most recent
    assert cache.evict(keep=paths[2]) == [paths[1]]
    assert paths[0].exists() and paths[2].exists()
