"""A shard's index of image offsets, read from its USTAR headers, is tarfile's, and keeps
two integers per sample."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from otrt_core.data.shard_reader import SnapshotUnavailable, _image_offsets
from otrt_core.data.shard_writer import ShardWriter


def test_the_offsets_are_tarfiles_for_every_image_whatever_its_size(tmp_path):
    writer = ShardWriter(tmp_path, "train", 0, shard_bytes=1 << 30)
    sizes = [0, 1, 511, 512, 513, 1024, 5000]
    for number, size in enumerate(sizes):
        suffix = "png" if number % 2 else "jpg"
        writer.add(f"{number:06d}", os.urandom(size), suffix, label=number % 3)
    shard = tmp_path / writer.close().name
    with tarfile.open(shard) as tar:
        expected = [(m.offset_data, m.size) for m in tar if m.name.endswith((".jpg", ".png"))]
    descriptor = os.open(shard, os.O_RDONLY)
    try:
        found = _image_offsets(descriptor)
    finally:
        os.close(descriptor)
    assert list(zip(found[::2], found[1::2], strict=True)) == expected
    assert [size for _, size in expected] == sizes
    assert found.itemsize * len(found) == 16 * len(sizes)  # two int64 per sample


def test_a_shard_with_tar_extensions_is_refused_by_name(tmp_path):
    shard = tmp_path / "train-000000.tar"
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("x" * 120 + ".jpg")  # too long for USTAR: a pax header
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    descriptor = os.open(shard, os.O_RDONLY)
    try:
        with pytest.raises(SnapshotUnavailable, match="not USTAR"):
            _image_offsets(descriptor)
    finally:
        os.close(descriptor)
