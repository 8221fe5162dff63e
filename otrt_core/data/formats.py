"""Formats: a source's objects as (image bytes, split, label) records, one at a time.

- ``imagefolder``: ``train/<class>/…`` (optional ``val/`` and ``test/``), or
  ``<class>/…`` with no split folders (all training images), or images with no
  class folders at all: an unlabeled pool. Classes in name order.
- ``webdataset``: tar shards whose samples are members sharing a key (the path
  up to the first dot of the file name): an image member and a ``.cls`` label.
  Class names from ``classes.txt`` (one a line) or ``classes.json`` (a list, or
  names to ids) beside the shards, else the label ids. A member with an unsafe
  path, a link or a device is skipped and reported; nothing is extracted to disk.
- ``parquet``: as Hugging Face ``datasets`` writes it: an ``image`` struct of
  ``bytes`` and ``path`` and a ``label`` column whose ``ClassLabel`` names are in
  the schema's ``huggingface`` metadata. Read a row group at a time.

The split of a shard or Parquet file comes from its path (``train/``, ``test-…``).
Records read their bytes lazily where the source allows (folders), so nothing
ever holds a dataset. What is not an image, hidden files aside, is reported in
``Layout.problems`` as ``(key, reason)``; a whole-dataset fault is a ``UserError``.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from otrt_core.data.sources import Source, SourceObject
from otrt_core.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"validation": "val", "valid": "val"}
MAX_MEMBER_BYTES = 256 << 20  # an image member of a tar past this is reported, not read
MAX_PARQUET_BYTES = 4 << 30  # a Parquet file is read whole from its source
LOC = ("source",)


@dataclass(frozen=True)
class Record:
    key: str  # a name for reports: the object's key, or shard/member
    split: str  # train, val, test or unlabeled
    label: int | None  # an index into the layout's classes; None for an unlabeled image
    read: Callable[[], bytes]


@dataclass
class Layout:
    format: str
    classes: list[str]
    records: Iterator[Record]
    problems: list[tuple[str, str]] = field(default_factory=list)  # filled as records go
    named: bool = True  # False: classes are label ids, added as records show them


def detect(objects: list[SourceObject]) -> str:
    """The format of a source from its keys: tar shards, Parquet files, an .npz, a .zip,
    else an image folder."""
    suffixes = {PurePosixPath(o.key).suffix.lower() for o in objects if not _hidden(o.key)}
    for suffix, format in ((".tar", "webdataset"), (".parquet", "parquet"), (".npz", "npz")):
        if suffix in suffixes:
            return format
    if suffixes == {".zip"}:
        return "zip"
    return "imagefolder"


def records(source: Source, format: str) -> Layout:
    objects = [o for o in source.list() if not _hidden(o.key)]
    if format == "imagefolder":
        return _image_folder(source, objects)
    if format == "webdataset":
        return _webdataset(source, objects)
    if format == "parquet":
        return _parquet(source, objects)
    raise UserError(f"unknown format {format!r}", ("format",))


def _hidden(key: str) -> bool:
    """macOS and editor litter: dot files, ``__MACOSX/``, ``Thumbs.db``."""
    parts = PurePosixPath(key).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1] == "Thumbs.db"


def _is_image(key: str) -> bool:
    return PurePosixPath(key).suffix.lower() in IMAGE_SUFFIXES


def _split_of(part: str) -> str | None:
    name = part.lower()
    name = SPLIT_ALIASES.get(name, name)
    return name if name in SPLITS else None


# --- image folders ----------------------------------------------------------------------


def _image_folder(source: Source, objects: list[SourceObject]) -> Layout:
    """Splits and classes from the folders: ``<split>/<class>/…`` or ``<class>/…``, or an
    unlabeled pool when no image lies in a class folder."""
    problems: list[tuple[str, str]] = []
    placed: list[tuple[str, str | None, SourceObject]] = []  # (split, class, object)
    for obj in objects:
        parts = PurePosixPath(obj.key).parts
        if not _is_image(obj.key):
            problems.append((obj.key, "not an image file (by its name)"))
            continue
        split = _split_of(parts[0]) if len(parts) > 1 else None
        rest = parts[1:] if split else parts
        label = rest[0] if len(rest) > 1 else None
        placed.append((split or "train", label, obj))
    if not placed:
        raise UserError("the source holds no image files", LOC)
    if all(label is None for _, label, _ in placed):  # a pool of images without classes
        pool = [Record(o.key, "unlabeled", None, _reader(source, o.key)) for *_, o in placed]
        return Layout("imagefolder", [], iter(pool), problems)
    loose = [o.key for _, label, o in placed if label is None]
    problems += [(key, "an image outside the class folders") for key in loose]
    classes = sorted({label for split, label, _ in placed if label and split == "train"})
    if len(classes) < 2:
        raise UserError(
            f"labeled images need at least two class folders under train/ (found {classes})",
            LOC,
        )
    index = {name: i for i, name in enumerate(classes)}
    extra = sorted({label for _, label, _ in placed if label and label not in index})
    problems += [(f"{name}/", "a class that train/ lacks") for name in extra]
    kept = [
        Record(o.key, split, index[label], _reader(source, o.key))
        for split, label, o in placed
        if label in index
    ]
    order = {split: n for n, split in enumerate(SPLITS)}
    kept.sort(key=lambda record: (order[record.split], record.key))
    return Layout("imagefolder", classes, iter(kept), problems)


def _reader(source: Source, key: str) -> Callable[[], bytes]:
    return lambda: source.read(key)


# --- WebDataset tars ----------------------------------------------------------------------


def _webdataset(source: Source, objects: list[SourceObject]) -> Layout:
    shards = [o for o in objects if o.key.endswith(".tar")]
    classes = _class_names(source, objects)
    layout = Layout("webdataset", classes or [], iter(()), named=classes is not None)
    layout.records = _tar_records(source, shards, layout)
    return layout


def _class_names(source: Source, objects: list[SourceObject]) -> list[str] | None:
    keys = {PurePosixPath(o.key).name: o.key for o in objects}
    if "classes.txt" in keys:
        text = source.read(keys["classes.txt"]).decode("utf-8", "replace")
        return [line.strip() for line in text.splitlines() if line.strip()]
    if "classes.json" in keys:
        try:
            named = json.loads(source.read(keys["classes.json"]))
        except ValueError as error:
            raise UserError(f"classes.json is not JSON: {error}", LOC) from None
        if isinstance(named, dict):
            return [name for name, _ in sorted(named.items(), key=lambda item: item[1])]
        return [str(name) for name in named]
    return None


def _tar_records(source: Source, shards: list[SourceObject], layout: Layout) -> Iterator[Record]:
    for shard in shards:
        split = _path_split(shard.key)
        try:
            with source.open(shard.key) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                yield from _samples(tar, shard.key, split, layout)
        except (tarfile.TarError, OSError, EOFError) as error:
            layout.problems.append((shard.key, f"not a readable tar ({error})"))


def _samples(tar: tarfile.TarFile, shard: str, split: str, layout: Layout) -> Iterator[Record]:
    """Consecutive members sharing a key make one sample (WebDataset's convention)."""
    current, image, label = None, None, None
    for member in tar:
        name = member.name
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
            layout.problems.append((f"{shard}/{name}", "unsafe member path or not a file"))
            continue
        if member.isdir():
            continue
        key = str(path.parent / path.name.split(".", 1)[0])
        if key != current:
            if image is not None:
                yield _tar_record(shard, current, image, label, split, layout)
            current, image, label = key, None, None
        suffix = "." + path.name.split(".", 1)[1].lower() if "." in path.name else ""
        if member.size > MAX_MEMBER_BYTES:
            layout.problems.append((f"{shard}/{name}", "too large"))
        elif suffix in IMAGE_SUFFIXES:
            image = tar.extractfile(member).read()
        elif suffix == ".cls":
            label = tar.extractfile(member).read().decode("ascii", "replace").strip()
    if image is not None:
        yield _tar_record(shard, current, image, label, split, layout)


def _tar_record(shard, key, image: bytes, label: str | None, split, layout) -> Record:
    value = int(label) if label is not None and label.lstrip("-").isdigit() else None
    if value is not None and not _labelled(layout, value):
        layout.problems.append((f"{shard}/{key}", f"label {value} has no class name"))
        value = None
    split = split if value is not None else "unlabeled"
    return Record(f"{shard}/{key}", split, value, _constant(image))


def _labelled(layout: Layout, label: int) -> bool:
    """Whether ``label`` names a class: one of the named classes, or (without names) any
    id from 0, its name its own digits."""
    if label < 0:
        return False
    if not layout.named:
        layout.classes.extend(str(i) for i in range(len(layout.classes), label + 1))
    return label < len(layout.classes)


def _path_split(key: str) -> str:
    """The split a shard or file belongs to, from its folders or its name's first word."""
    path = PurePosixPath(key)
    for part in path.parts[:-1]:
        if split := _split_of(part):
            return split
    first = path.name.split(".")[0].replace("_", "-").split("-")[0]
    return _split_of(first) or "train"


# --- Parquet (Hugging Face datasets) ----------------------------------------------------


def _parquet(source: Source, objects: list[SourceObject]) -> Layout:
    files = [o for o in objects if o.key.endswith(".parquet")]
    classes = _parquet_classes(source, files[0])
    layout = Layout("parquet", classes, iter(()), named=bool(classes))
    layout.records = _parquet_records(source, files, layout)
    return layout


def _parquet_file(source: Source, obj: SourceObject):
    import pyarrow.parquet as pq

    if obj.size > MAX_PARQUET_BYTES:
        raise UserError(f"{obj.key} is larger than {MAX_PARQUET_BYTES} bytes: split it", LOC)
    try:
        return pq.ParquetFile(io.BytesIO(source.read(obj.key)))
    except Exception as error:  # pyarrow raises its own ArrowInvalid and OSError
        raise UserError(f"{obj.key} is not a readable Parquet file: {error}", LOC) from None


def _parquet_classes(source: Source, obj: SourceObject) -> list[str]:
    schema = _parquet_file(source, obj).schema_arrow
    if "image" not in schema.names:
        raise UserError(f"{obj.key} has no image column (columns: {schema.names})", LOC)
    metadata = (schema.metadata or {}).get(b"huggingface")
    features = json.loads(metadata).get("info", {}).get("features", {}) if metadata else {}
    names = features.get("label", {}).get("names")
    return [str(name) for name in names] if names else []


def _parquet_records(source: Source, files: list[SourceObject], layout: Layout) -> Iterator[Record]:
    for obj in files:
        split = _path_split(obj.key)
        parquet = _parquet_file(source, obj)
        has_label = "label" in parquet.schema_arrow.names
        columns = ["image", "label"] if has_label else ["image"]
        row = 0
        for batch in parquet.iter_batches(batch_size=256, columns=columns):
            images = batch.column("image").to_pylist()
            labels = batch.column("label").to_pylist() if has_label else [None] * len(images)
            for image, label in zip(images, labels, strict=True):
                key = f"{obj.key}#{row}"
                row += 1
                data = image.get("bytes") if isinstance(image, dict) else image
                if not data:
                    layout.problems.append((key, "no image bytes"))
                    continue
                if label is not None and not _labelled(layout, label):
                    layout.problems.append((key, f"label {label} has no class name"))
                    continue
                labeled = label is not None
                yield Record(key, split if labeled else "unlabeled", label, _constant(data))


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data
