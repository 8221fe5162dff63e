"""Users' dataset files: .npz arrays and ImageFolder .zip archives, read safely."""

import io
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from otrt_core.data import ZipLimits, load_dataset_file
from otrt_core.errors import TooLarge, UserError
from tests.utils.bombs import image_bomb, npz_bomb


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def png(size=(6, 5), mode="L", value=0) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def image_zip(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_npz_with_every_split(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    path = save_npz(
        tmp_path / "d.npz",
        x_train=x,
        y_train=np.arange(10) % 3,
        x_test=x[:4],
        y_test=np.arange(4) % 3,
    )
    arrays = load_dataset_file(path)
    assert arrays.x_train.shape == (10, 1, 28, 28) and arrays.x_test.shape == (4, 1, 28, 28)
    np.testing.assert_allclose(arrays.x_train[3, 0], x[3] / 255.0, rtol=1e-6)


def test_npz_channels_last_and_a_held_out_test_split(tmp_path):
    x = np.random.default_rng(0).random((20, 8, 8, 3)).astype(np.float32)
    arrays = load_dataset_file(save_npz(tmp_path / "d.npz", x_train=x, y_train=np.arange(20) % 2))
    assert arrays.x_train.shape == (17, 3, 8, 8) and arrays.x_test.shape == (3, 3, 8, 8)


def test_npz_sequences_gain_a_channel(tmp_path):
    arrays = load_dataset_file(
        save_npz(tmp_path / "d.npz", x_train=np.zeros((8, 40)), y_train=np.arange(8) % 2)
    )
    assert arrays.x_train.shape[1:] == (1, 40)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((4, 3))}, "lacks y_train"),
        ({"x_train": np.zeros((4, 3)), "y_train": np.zeros(5, dtype=int)}, "4 rows but y_train 5"),
        ({"x_train": np.zeros((4, 3)), "y_train": np.zeros(4)}, "integer labels"),
        (
            {
                "x_train": np.zeros((4, 3)),
                "y_train": np.zeros(4, dtype=int),
                "x_test": np.zeros((2, 3)),
            },
            "both x_test and y_test",
        ),
        (
            {"x_train": np.zeros(4), "y_train": np.zeros(4, dtype=int)},
            r"numeric \(N, \.\.\.\) array",
        ),
    ],
)
def test_npz_problems_are_explained(tmp_path, arrays, message):
    with pytest.raises(UserError, match=message):
        load_dataset_file(save_npz(tmp_path / "d.npz", **arrays))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = save_npz(
        tmp_path / "d.npz",
        x_train=np.array([{"a": 1}], dtype=object),
        y_train=np.zeros(1, dtype=int),
    )
    with pytest.raises(UserError, match="pickles are refused"):
        load_dataset_file(path)


def test_image_zip_reads_classes_in_name_order(tmp_path):
    files = {
        f"train/{name}/{i}.png": png(value=value)
        for name, value in [("cat", 10), ("dog", 200)]
        for i in range(4)
    }
    files |= {"test/dog/0.png": png(value=200), "README.txt": b"ignored"}
    arrays = load_dataset_file(image_zip(tmp_path / "d.zip", files))
    assert arrays.x_train.shape == (8, 1, 5, 6)  # (N, C, H, W)
    assert arrays.y_train.tolist() == [0] * 4 + [1] * 4
    np.testing.assert_allclose(
        arrays.x_train[:, 0, 0, 0], [10 / 255] * 4 + [200 / 255] * 4, rtol=1e-6
    )
    assert arrays.y_test.tolist() == [1]


def test_image_zip_of_colour_images_is_rgb(tmp_path):
    files = {f"train/{c}/{i}.png": png(mode="RGB", value=(1, 2, 3)) for c in "ab" for i in range(5)}
    arrays = load_dataset_file(image_zip(tmp_path / "d.zip", files))
    assert arrays.x_train.shape[1:] == (3, 5, 6) and len(arrays.y_test) == 2


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"../evil.png": png(), "train/a/0.png": png()}, "unsafe path"),
        ({"/abs.png": png()}, "unsafe path"),
        ({"train/a/0.png": png()}, "at least two classes"),
        (
            {"train/a/0.png": png(), "train/b/0.png": png(size=(3, 3))},
            "differ in size: register it",
        ),
        ({"train/a/0.png": png(), "train/b/0.png": b"not an image"}, "not a readable image"),
        (
            {"train/a/0.png": png(), "train/b/0.png": png(), "test/c/0.png": png()},
            "test/ has classes",
        ),
    ],
)
def test_image_zip_problems_are_explained(tmp_path, files, message):
    with pytest.raises(UserError, match=message):
        load_dataset_file(image_zip(tmp_path / "d.zip", files))


def test_symbolic_links_in_a_zip_are_refused(tmp_path):
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w") as archive:
        link = zipfile.ZipInfo("train/a/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(UserError, match="symbolic link"):
        load_dataset_file(path)


def test_zip_bombs_and_huge_archives_are_refused(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train/a/0.png", b"\0" * 2_000_000)  # compresses to a few KB
    with pytest.raises(UserError, match="unpacks to more than"):
        load_dataset_file(bomb, ZipLimits(max_uncompressed_bytes=1_000_000))
    many = image_zip(tmp_path / "many.zip", {f"train/a/{i}.png": b"" for i in range(20)})
    with pytest.raises(UserError, match="20 members"):
        load_dataset_file(many, ZipLimits(max_members=10))


def test_other_files_are_refused(tmp_path):
    (tmp_path / "d.zip").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable zip"):
        load_dataset_file(tmp_path / "d.zip")
    with pytest.raises(UserError, match=r"\.npz or ImageFolder \.zip"):
        load_dataset_file(tmp_path / "d.csv")


def test_an_uploaded_unlabeled_set_joins_the_pool(tmp_path):
    from otrt_core.data import prepare

    x = np.random.default_rng(0).random((40, 12)).astype(np.float32)
    path = save_npz(tmp_path / "d.npz", x_train=x, y_train=np.arange(40) % 2, x_unlabeled=x[:7])
    arrays = load_dataset_file(path)
    assert arrays.x_unlabeled.shape == (7, 1, 12)
    data = prepare(arrays, classes=None, train_subset=None, val_fraction=0.2, seed=0)
    assert len(data.x_unlabeled) == 7
    with pytest.raises(UserError, match="x_unlabeled must have"):
        load_dataset_file(
            save_npz(tmp_path / "e.npz", x_train=x, y_train=np.arange(40) % 2, x_unlabeled=x[:, :5])
        )


def test_decompression_bombs_are_refused_from_their_headers_naming_the_member(tmp_path):
    limits = ZipLimits(max_decoded_bytes=64 << 20)
    assert image_bomb(tmp_path / "b.zip").stat().st_size < 5_000
    with pytest.raises(TooLarge, match=r"train/a/0\.png takes the decoded dataset past"):
        load_dataset_file(tmp_path / "b.zip", limits)
    assert npz_bomb(tmp_path / "b.npz").stat().st_size < 400_000
    with pytest.raises(TooLarge, match=r"x_train\.npy takes the decoded dataset past"):
        load_dataset_file(tmp_path / "b.npz", limits)


def test_the_decoded_size_counts_stored_arrays_and_float32_inputs(tmp_path):
    x = np.zeros((100, 8, 8), dtype=np.uint8)  # 6400 bytes stored, 25600 as float32
    path = save_npz(tmp_path / "d.npz", x_train=x, y_train=np.zeros(100, dtype=np.int64))
    exact = 6400 + 25600 + 800
    assert len(load_dataset_file(path, ZipLimits(max_decoded_bytes=exact)).x_train) > 0
    with pytest.raises(TooLarge, match=r"y_train\.npy"):
        load_dataset_file(path, ZipLimits(max_decoded_bytes=exact - 1))


def test_labels_are_class_indices_of_bounded_size(tmp_path):
    y = np.array([0, 1, 2**40])
    path = save_npz(tmp_path / "d.npz", x_train=np.zeros((3, 4)), y_train=y)
    with pytest.raises(UserError, match="label 1099511627776"):
        load_dataset_file(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip"])
def test_empty_or_corrupt_npz_files_are_input_errors(tmp_path, content):
    (tmp_path / "d.npz").write_bytes(content)
    with pytest.raises(UserError, match="not a readable zip"):
        load_dataset_file(tmp_path / "d.npz")


def test_a_sound_zip_that_is_not_one_array_is_accepted_for_registration(tmp_path):
    """Images of varying sizes, or an unreadable one: the upload is kept (its members are
    safe), and its details say to register it rather than name it in a job."""
    from otrt_core.jobs.inspection import inspect_dataset

    path = tmp_path / "shop.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train/a/0.png", png(size=(8, 8)))
        archive.writestr("train/b/0.png", png(size=(12, 9)))
        archive.writestr("train/b/1.jpg", b"")
    format, details = inspect_dataset(path, 1 << 20)
    assert format == "imagefolder_zip" and details["input_shape"] is None
    assert "POST /v1/datasets" in details["registration"]
