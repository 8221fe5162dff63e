"""CIFAR from a local torchvision root (download disabled), on a tiny copy in the same format."""

import hashlib
import pickle

import numpy as np
import pytest
from torchvision.datasets import CIFAR10

from otrt_core.data import DatasetUnavailable, load_arrays


def write_tiny_cifar10(root, per_batch: int = 4) -> None:
    """The files torchvision's CIFAR10 reads (pickled dicts of uint8 rows), with their checksums."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": list(range(per_batch)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [f"c{i}" for i in range(10)]})
    )
    # torchvision checks each file's md5 against its own table: point the table at our copy.
    for table in (CIFAR10.train_list, CIFAR10.test_list):
        for entry in table:
            entry[1] = hashlib.md5((folder / entry[0]).read_bytes()).hexdigest()
    CIFAR10.meta["md5"] = hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest()


def test_cifar10_reads_a_local_root(tmp_path, monkeypatch):
    monkeypatch.setattr(CIFAR10, "train_list", [list(entry) for entry in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [list(entry) for entry in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", dict(CIFAR10.meta))
    write_tiny_cifar10(tmp_path)
    arrays = load_arrays("cifar10", tmp_path)
    assert arrays.x_train.shape == (20, 3, 32, 32) and arrays.x_test.shape == (4, 3, 32, 32)
    assert arrays.x_train.max() <= 1.0 and arrays.y_test.tolist() == [0, 1, 2, 3]


def test_a_missing_root_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetUnavailable, match="cifar-10-batches-py/ under OTRT_DATASETS_ROOT"):
        load_arrays("cifar10", tmp_path)
