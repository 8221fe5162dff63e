"""read_idx(): the MNIST-family file format."""

import gzip
import struct

import numpy as np
import pytest

from otrt_core.data.idx import read_idx


def write_idx(path, array: np.ndarray, type_code: int = 0x08) -> None:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        struct.pack(">I", size) for size in array.shape
    )
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as stream:
        stream.write(payload)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_reads_back_what_was_written(tmp_path, suffix):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / f"images-idx3-ubyte{suffix}"
    write_idx(path, images)
    np.testing.assert_array_equal(read_idx(path), images)


def test_reads_big_endian_integers(tmp_path):
    values = np.array([1, -2, 70000], dtype=np.int32)
    write_idx(tmp_path / "values.idx", values, type_code=0x0C)
    np.testing.assert_array_equal(read_idx(tmp_path / "values.idx"), values)


def test_rejects_other_files_and_truncated_ones(tmp_path):
    (tmp_path / "text").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "text")
    write_idx(tmp_path / "whole", np.zeros((4, 4), dtype=np.uint8))
    (tmp_path / "cut").write_bytes((tmp_path / "whole").read_bytes()[:-3])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "cut")
