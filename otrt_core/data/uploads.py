"""Datasets from users' files: ``.npz`` arrays and ImageFolder ``.zip`` archives.

Both are read without unpickling anything and checked before use; a bad file
raises ``UserError`` (at ``dataset.name``) with a message for the user. Archives are unpacked
defensively: no absolute paths, no ``..``, no links, and bounded member count
and uncompressed size (against zip bombs). Before anything is decoded, what
decoding will cost is read from the headers alone (each ``.npy`` member's shape
and dtype, each image's size and bands) and checked against
``ZipLimits.max_decoded_bytes``: a 2 KB archive of two 6000x6000 PNGs, or a
265 KB ``.npz`` of 256 MB of zeros, is refused before it costs any memory.
"""

from __future__ import annotations

import math
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np

from otrt_core.data.catalog import ArraySplits, fixed_test_split
from otrt_core.errors import TooLarge, UserError
from otrt_core.protocol import MAX_CLASSES

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


FLOAT32 = 4  # bytes per decoded input value


SKIP = "; register the zip (POST /v1/datasets) to skip and list its unreadable files"


class NeedsRegistration(UserError):
    """An ImageFolder zip that is safe but not one array (its images differ in size, or
    some are unreadable): it is used through a registered dataset (otrt_core.data.convert,
    which skips and lists unreadable files), not as it is."""


@dataclass(frozen=True)
class ZipLimits:
    max_members: int = 200_000
    max_uncompressed_bytes: int = 8 << 30
    # What decoding may cost: the arrays as stored plus the float32 copy of the inputs.
    max_decoded_bytes: int = 8 << 30


def load_dataset_file(path: Path, limits: ZipLimits | None = None) -> ArraySplits:
    """The arrays of an uploaded ``.npz`` or ImageFolder ``.zip``, within ``limits``."""
    limits = limits or ZipLimits()
    if path.suffix not in (".npz", ".zip"):
        raise UserError(f"{path.name}: datasets are .npz or ImageFolder .zip files")
    members = safe_members(path, limits)
    costs = npz_costs(path, members) if path.suffix == ".npz" else image_costs(path, members)
    check_decoded_size(costs, limits.max_decoded_bytes)
    if path.suffix == ".npz":
        return load_npz(path)
    return load_image_zip(path, members)


def check_decoded_size(costs: Iterator[tuple[str, int]], limit: int) -> int:
    """The total of ``(member, bytes)`` costs; ``TooLarge`` at the member that passes it."""
    total = 0
    for member, cost in costs:
        total += cost
        if total > limit:
            raise TooLarge(
                f"{member} takes the decoded dataset past the limit of {limit} bytes "
                f"(at least {total} bytes)"
            )
    return total


def npz_costs(path: Path, members: list[zipfile.ZipInfo]) -> Iterator[tuple[str, int]]:
    """Each array's decoded bytes, read from its ``.npy`` header (nothing is decompressed).

    Inputs (``x_*``) also count their float32 copy.
    """
    with zipfile.ZipFile(path) as archive:
        for info in members:
            try:
                with archive.open(info) as stream:
                    shape, dtype = _npy_header(stream)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
                message = f"{info.filename} is not a readable .npy array: {error}"
                raise UserError(message) from None
            if dtype.hasobject:
                raise UserError(f"{info.filename} holds Python objects (pickles are refused)")
            count = math.prod(shape)
            per_value = dtype.itemsize + (FLOAT32 if info.filename.startswith("x_") else 0)
            yield info.filename, count * per_value


def _npy_header(stream) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return shape, dtype


def image_costs(path: Path, members: list[zipfile.ZipInfo]) -> Iterator[tuple[str, int]]:
    """Each image's decoded bytes from its header alone: pixels x (its bands + an RGB float32)."""
    from PIL import Image

    with zipfile.ZipFile(path) as archive:
        for info in members:
            if PurePosixPath(info.filename).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with archive.open(info) as stream, Image.open(stream) as image:
                    width, height = image.size
                    bands = len(image.getbands())
            except Image.DecompressionBombError as error:
                raise TooLarge(f"{info.filename}: {error}") from None
            except (OSError, ValueError, zipfile.BadZipFile) as error:
                message = f"{info.filename} is not a readable image: {error}{SKIP}"
                raise NeedsRegistration(message) from None
            yield info.filename, width * height * (bands + 3 * FLOAT32)


def load_npz(path: Path) -> ArraySplits:
    """``x_train, y_train[, x_test, y_test][, x_unlabeled]``.

    Without a test split, 15% is held out (fixed seed). ``x_unlabeled`` joins
    the pool that ``regularizer.unlabeled`` draws from.

    Inputs may be ``(N, L)``, ``(N, H, W)``, ``(N, C, H, W)`` or channels-last
    ``(N, H, W, C)`` with C in 1..4; uint8 inputs are scaled to [0, 1].
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{path.name} is not a readable .npz without pickles: {error}") from None
    missing = [name for name in ("x_train", "y_train") if name not in arrays]
    if missing:
        raise UserError(f"{path.name} lacks {', '.join(missing)} (found {', '.join(arrays)})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise UserError(f"{path.name}: give both x_test and y_test, or neither")
    x_train, y_train = _inputs(arrays["x_train"], "x_train"), _labels(arrays["y_train"], "y_train")
    if len(x_train) != len(y_train):
        raise UserError(f"x_train has {len(x_train)} rows but y_train {len(y_train)}")
    x_unlabeled = None
    if "x_unlabeled" in arrays:
        x_unlabeled = _inputs(arrays["x_unlabeled"], "x_unlabeled")
        if x_unlabeled.shape[1:] != x_train.shape[1:]:
            raise UserError("x_unlabeled must have x_train's input shape")
    if "x_test" not in arrays:
        split = fixed_test_split(x_train, y_train, test_size=max(1, round(0.15 * len(y_train))))
        return replace(split, x_unlabeled=x_unlabeled)
    x_test, y_test = _inputs(arrays["x_test"], "x_test"), _labels(arrays["y_test"], "y_test")
    if len(x_test) != len(y_test) or x_test.shape[1:] != x_train.shape[1:]:
        raise UserError("x_test must have x_train's input shape and as many rows as y_test")
    return ArraySplits(x_train, y_train, x_test, y_test, x_unlabeled)


def _inputs(x: np.ndarray, name: str) -> np.ndarray:
    if x.dtype.kind not in "uif" or x.ndim not in (2, 3, 4) or len(x) == 0:
        raise UserError(
            f"{name} must be a non-empty numeric (N, ...) array; got {x.dtype} {x.shape}"
        )
    scaled = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    if x.ndim == 2:
        return scaled[:, None, :]  # (N, 1, L)
    if x.ndim == 3:
        return scaled[:, None, :, :]  # (N, 1, H, W)
    if x.shape[1] not in (1, 2, 3, 4) and x.shape[3] in (1, 2, 3, 4):
        return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))  # channels last -> first
    return scaled


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) == 0 or y.min() < 0:
        raise UserError(f"{name} must be non-negative integer labels (N,); got {y.dtype} {y.shape}")
    if y.max() >= MAX_CLASSES:
        message = f"{name} holds label {y.max()}; labels are class indices below {MAX_CLASSES}"
        raise UserError(message)
    return y.astype(np.int64)


def load_image_zip(path: Path, members: list[zipfile.ZipInfo]) -> ArraySplits:
    """``train/<class>/*.png`` (and optionally ``test/<class>/...``), or ``<class>/*.png``
    alone, classes in name order.

    Without ``test/``, 15% of the training images are held out (fixed seed).
    Images must share one size; they are read as grey when all are grey, else RGB.
    """
    from PIL import Image, UnidentifiedImageError

    splits: dict[str, dict[str, list[zipfile.ZipInfo]]] = {"train": {}, "test": {}}
    images = [
        (PurePosixPath(info.filename).parts, info)
        for info in members
        if PurePosixPath(info.filename).suffix.lower() in IMAGE_SUFFIXES
    ]
    for parts, info in images:
        if len(parts) == 3 and parts[0] in splits:
            splits[parts[0]].setdefault(parts[1], []).append(info)
    if not splits["train"]:  # a folder of class folders, as a camera roll is sorted
        for parts, info in images:
            if len(parts) == 2:
                splits["train"].setdefault(parts[0], []).append(info)
    classes = sorted(splits["train"])
    if len(classes) < 2:
        raise UserError(
            f"{path.name} needs <class>/<image> or train/<class>/<image> files for at "
            "least two classes"
        )
    unknown = sorted(set(splits["test"]) - set(classes))
    if unknown:
        raise UserError(f"test/ has classes that train/ lacks: {', '.join(unknown)}")

    with zipfile.ZipFile(path) as archive:

        def read(split: str) -> tuple[list[Image.Image], list[int]]:
            images, labels = [], []
            for label, name in enumerate(classes):
                for info in splits[split].get(name, []):
                    try:
                        with archive.open(info) as stream:
                            image = Image.open(stream)
                            image.load()
                    except (UnidentifiedImageError, OSError) as error:
                        message = f"{info.filename} is not a readable image: {error}{SKIP}"
                        raise NeedsRegistration(message) from None
                    images.append(image)
                    labels.append(label)
            return images, labels

        train_images, train_labels = read("train")
        test_images, test_labels = read("test")

    every = train_images + test_images
    if len({image.size for image in every}) != 1:
        raise NeedsRegistration(
            "its images differ in size: register it (POST /v1/datasets with this file_… as "
            "source) and train on the ds_… dataset, decoded to one dataset.image_size"
        )
    mode = "L" if all(image.mode in ("L", "1", "I;16") for image in every) else "RGB"

    def stack(images: list) -> np.ndarray:
        arrays = [np.asarray(image.convert(mode), dtype=np.float32) / 255.0 for image in images]
        x = np.stack(arrays)
        return x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)  # (N, C, H, W)

    x_train, y_train = stack(train_images), np.array(train_labels, dtype=np.int64)
    if not test_images:
        return fixed_test_split(x_train, y_train, test_size=max(1, round(0.15 * len(y_train))))
    return ArraySplits(x_train, y_train, stack(test_images), np.array(test_labels, dtype=np.int64))


def safe_members(path: Path, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The archive's file members, after refusing anything unsafe in it."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError(f"{path.name} is not a readable zip: {error}") from None
    if len(members) > limits.max_members:
        raise UserError(f"{path.name} has {len(members)} members (limit {limits.max_members})")
    total = 0
    for info in members:
        name = PurePosixPath(info.filename)
        if name.is_absolute() or ".." in name.parts or "\\" in info.filename:
            raise UserError(f"{path.name} holds an unsafe path: {info.filename!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"{path.name} holds a symbolic link: {info.filename!r}")
        total += info.file_size
        if total > limits.max_uncompressed_bytes:
            raise UserError(
                f"{path.name} unpacks to more than {limits.max_uncompressed_bytes} bytes"
            )
    return [info for info in members if not info.is_dir()]
