"""Formats: how a source's objects become records (an image's bytes, its label, its split).

:func:`detect` names the format from the keys; :func:`records` reads one of
ImageFolder, WebDataset or Parquet as a :class:`Layout`. v1's ``.npz`` and
``.zip`` uploads are read by :mod:`otrt_core.data.uploads` (an ImageFolder
inside a zip reads here too, through :class:`~otrt_core.data.sources.ZipSource`).

Nothing here holds a dataset: an ImageFolder's records read their file when
asked (:attr:`Record.read`), a shard's or a Parquet file's are read one
sample or one batch of rows at a time and carry their bytes, so consume them
as they come. Nothing is ever extracted to disk.

Two kinds of trouble:

- a file or sample that cannot be a record (not an image, too large, an
  unsafe tar member, a label out of range) is a problem ``(key, reason)`` in
  :attr:`Layout.problems`, for the dataset's ``unreadable`` list;
- a dataset that cannot be one (no images, fewer than two classes for labeled
  data, a Parquet file without an image column) is a
  :class:`~otrt_core.errors.UserError`.

Some of this is only known as the records are read (a shard's labels, a
Parquet file's schema): ``problems`` is complete once the records are
exhausted, ``classes`` grows as labels show up (a record's label always
indexes ``classes`` once the record is yielded), and the records' iterator
raises the ``UserError`` that needs the whole dataset seen. An ImageFolder
knows its classes and its folder problems up front.
"""

from __future__ import annotations

import json
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from otrt_core.data.sources import Source, SourceObject
from otrt_core.errors import UserError
from otrt_core.protocol import MAX_CLASSES

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
# A WebDataset sample's image field, the first of these it has.
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
SPLITS = ("train", "val", "test")
UNLABELED = "unlabeled"
# Skipped silently wherever they are, with everything under them: what file managers leave.
JUNK = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SPLIT_PREFIX = re.compile(r"(train|validation|valid|val|test)(?![a-z])", re.IGNORECASE)
CLASS_FILES = ("classes.json", "classes.txt")

MAX_MEMBER_BYTES = 256 << 20  # one image (a file, a tar member): far above any photo
# A Parquet file from a source that cannot seek (S3) is read whole: Hugging Face writes
# files of at most ~500 MB, so 2 GiB leaves room and still bounds the inspector's memory.
MAX_FILE_BYTES = 2 << 30
BATCH_ROWS = 256  # Parquet rows read at a time

KINDS = {
    ".tar": "webdataset",
    ".parquet": "parquet",
    ".npz": "npz",
    ".zip": "zip",
    **dict.fromkeys(IMAGE_SUFFIXES, "imagefolder"),
}


@dataclass(frozen=True)
class Record:
    """One image: ``key`` names it in reports, ``split`` is ``train``, ``val``, ``test`` or
    ``unlabeled`` (then ``label`` is None), ``read()`` gives its bytes."""

    key: str
    split: str
    label: int | None
    read: Callable[[], bytes]


@dataclass
class Layout:
    """A dataset as read: its format, class names (label ``i`` is ``classes[i]``; empty for
    an unlabeled pool), its records and the problems met on the way (see the module)."""

    format: str
    classes: list[str]
    records: Iterator[Record]
    problems: list[tuple[str, str]] = field(default_factory=list)


def detect(objects: Iterable[SourceObject]) -> str:
    """``imagefolder``, ``webdataset``, ``parquet``, ``npz`` or ``zip``, from the keys' suffixes
    (other files, as a ``classes.txt`` or a README, do not count). Finding none of them, or
    several (images beside ``.tar`` shards), is a ``UserError``: name the format then."""
    found = {
        KINDS[suffix]
        for item in objects
        if not _hidden(item.key) and (suffix := PurePosixPath(item.key).suffix.lower()) in KINDS
    }
    if not found:
        message = "found no images, .tar shards, .parquet, .npz or .zip files"
        raise UserError(message, ("format",))
    if len(found) > 1:
        message = f"found files of several formats ({', '.join(sorted(found))}): name one"
        raise UserError(message, ("format",))
    return found.pop()


def records(
    source: Source,
    format: str,
    *,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Layout:
    """``source`` read as ``format`` (``imagefolder``, ``webdataset`` or ``parquet``).

    ``max_member_bytes``: the most one image file or tar member may hold (more is
    the problem ``"too large …"``). ``max_file_bytes``: the most a Parquet file
    may hold when the source cannot seek in it (S3: it is read whole); more is a
    ``UserError``.
    """
    if format == "imagefolder":
        return _imagefolder(source, max_member_bytes)
    if format == "webdataset":
        return _webdataset(source, max_member_bytes)
    if format == "parquet":
        return _parquet(source, max_file_bytes)
    raise ValueError(f"format {format!r} is not read here (npz and zip: otrt_core.data.uploads)")


# --- ImageFolder -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Tree:
    """Where an ImageFolder's layout starts (``base``: inside a folder that wraps it all, as
    zipping a folder makes) and which layout it is."""

    base: tuple[str, ...]
    splits: bool  # train/<class>/… (with val/ and test/), else <class>/…
    unlabeled: bool  # images only, no class folders

    def place(self, folders: tuple[str, ...]) -> tuple[str, str | None] | str:
        """(split, class name) for an image in ``folders``, or why it has no place."""
        if folders[: len(self.base)] != self.base:
            return f"outside {'/'.join(self.base)}/"
        inner = folders[len(self.base) :]
        if self.unlabeled:
            return UNLABELED, None
        if not self.splits:
            return ("train", inner[0]) if inner else "not in a class folder"
        if not inner or inner[0] not in SPLITS:
            return "outside train/, val/ and test/"
        return (inner[0], inner[1]) if len(inner) > 1 else "not in a class folder"

    def class_folders(self, folders: Iterable[tuple[str, ...]]) -> set[tuple[str, str]]:
        """The (split, class) folders that ``folders`` lie in (none in an unlabeled pool)."""
        places = {self.place(inside) for inside in folders}
        return {place for place in places if isinstance(place, tuple) and place[1] is not None}

    def folder_key(self, place: tuple[str, str]) -> str:
        """A class folder's key prefix: ``base/train/cat/`` or ``base/cat/``."""
        split, name = place
        return "/".join((*self.base, *((split, name) if self.splits else (name,)), ""))


def _imagefolder(source: Source, max_member_bytes: int) -> Layout:
    """``train/<class>/…`` (optional ``val/``, ``test/``), or ``<class>/…`` (all train), or
    images with no class folders (an unlabeled pool); images may nest below a class folder.

    Classes are the train split's folders in name order; ``val/`` or ``test/`` naming a
    class that ``train/`` lacks is a ``UserError``. A class folder is seen through its
    files (an empty directory has none to list: S3 has no directories at all): one whose
    files are all hidden or non-images is no class, and the problem "empty class folder".
    Hidden files and folders (``.DS_Store``, ``._x``, ``__MACOSX/``) are skipped silently,
    other files that are not images reported. Lists the source twice (once for the
    folders, once for the records) rather than hold every key.
    """
    image_folders, other_folders = _folders(source.list())
    if not image_folders:
        raise UserError(f"{source.uri} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    tree = _tree(image_folders)
    class_folders = tree.class_folders(image_folders)
    classes = sorted(name for split, name in class_folders if split == "train")
    if not tree.unlabeled:
        _check_classes(classes, source.uri)
        strays = sorted({name for _, name in class_folders} - set(classes))
        if strays:
            raise UserError(f"{source.uri}: val/ or test/ has classes train/ lacks: {strays}")
    empty = sorted(tree.class_folders(other_folders) - class_folders)
    problems = [(tree.folder_key(place), "empty class folder") for place in empty]
    labels = {name: label for label, name in enumerate(classes)}

    def images() -> Iterator[Record]:
        for item in source.list():
            if _hidden(item.key):
                continue
            *folders, name = item.key.split("/")
            if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
                problems.append((item.key, "not an image file"))
                continue
            place = tree.place(tuple(folders))
            if isinstance(place, str):
                problems.append((item.key, place))
            elif place[1] is not None and place[1] not in labels:
                problems.append((item.key, "its class folder appeared after the listing"))
            elif item.size > max_member_bytes:
                problems.append((item.key, _too_large(item.size, max_member_bytes)))
            else:
                split, class_name = place
                label = None if class_name is None else labels[class_name]
                yield Record(item.key, split, label, _reader(source, item.key))

    return Layout("imagefolder", classes, images(), problems)


def _folders(
    objects: Iterable[SourceObject],
) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """The folders holding images, and those holding other files (hidden files included:
    a ``.DS_Store`` shows a folder exists); nothing under a hidden folder counts."""
    image_folders: set[tuple[str, ...]] = set()
    other_folders: set[tuple[str, ...]] = set()
    for item in objects:
        *folders, name = item.key.split("/")
        if _hidden("/".join(folders)):
            continue
        is_image = not _hidden(name) and PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES
        (image_folders if is_image else other_folders).add(tuple(folders))
    return image_folders, other_folders


def _tree(image_folders: set[tuple[str, ...]]) -> _Tree:
    """The layout the images' folders make: their common folders are the base (stopping at
    a split name), then ``train``/``val``/``test`` folders, class folders, or none."""
    base: list[str] = []
    for column in zip(*image_folders, strict=False):
        if len(set(column)) > 1 or column[0] in SPLITS:
            break
        base.append(column[0])
    inner = [folders[len(base) :] for folders in image_folders]
    return _Tree(
        base=tuple(base),
        splits=any(folders and folders[0] in SPLITS for folders in inner),
        unlabeled=all(not folders for folders in inner),
    )


def _reader(source: Source, key: str) -> Callable[[], bytes]:
    return lambda: source.read(key)


# --- WebDataset ------------------------------------------------------------------------


def _webdataset(source: Source, max_member_bytes: int) -> Layout:
    """Tar shards (``*.tar``, in key order) whose samples are consecutive members sharing a
    key (the member's path up to the first dot of its file name): an image member and a
    ``.cls`` (the label as decimal text). A sample without ``.cls`` (or with a negative one)
    is unlabeled. Class names come from the shallowest ``classes.json`` (a list, or a dict
    name -> id) or ``classes.txt`` (one a line), else they are the label ids (``"0"``,
    ``"1"``, …, up to the largest seen).

    A shard's split is its nearest folder named ``train``/``val``/``test`` (or
    ``valid``/``validation``), else its name's prefix (``train-000.tar``), else train.

    Members are read into memory, never extracted: an absolute or ``..`` path is the
    problem "unsafe member path", a link or device "unsafe member (a link or a device)",
    one over ``max_member_bytes`` "too large"; a shard that breaks off (cut short, or
    garbled) is reported, and its last sample, which may have lost members, dropped.
    """
    shards, class_files = [], []
    for item in source.list():
        if _hidden(item.key):
            continue
        if item.key.lower().endswith(".tar"):
            shards.append(item)
        elif item.key.rsplit("/", 1)[-1] in CLASS_FILES:
            class_files.append(item)
    names = _class_names(source, class_files, max_member_bytes)
    if names is not None:
        _check_classes(names, source.uri)
    classes = list(names or [])
    labels = _Labels(classes, named=names is not None)
    problems: list[tuple[str, str]] = []

    def samples() -> Iterator[Record]:
        count = 0
        for shard in shards:
            split = _split_of(shard.key)
            for key, fields in _tar_samples(source, shard, max_member_bytes, problems):
                image = next((name for name in IMAGE_FIELDS if name in fields), None)
                where = f"{shard.key}:{key}"
                if image is None:
                    problems.append((where, "no image in the sample"))
                    continue
                label, reason = labels.of(_cls_label(fields.get("cls")))
                if reason:
                    problems.append((where, reason))
                    continue
                count += 1
                record_split = split if label is not None else UNLABELED
                yield Record(f"{where}.{image}", record_split, label, _holding(fields[image]))
        labels.finish(count, source.uri)

    return Layout("webdataset", classes, samples(), problems)


def _tar_samples(
    source: Source, shard: SourceObject, max_member_bytes: int, problems: list
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The samples of one shard, in order, as ``(key, {field: bytes})`` of the fields read
    (images and ``cls``; others are skipped unread). The shard is streamed, not seeked."""
    wanted = {*IMAGE_FIELDS, "cls"}
    key, fields = None, {}
    try:
        with (
            source.open(shard.key) as stream,
            tarfile.open(fileobj=stream, mode="r|*", tarinfo=_EndMarked) as tar,
        ):
            for member in _members(tar):
                where = f"{shard.key}:{member.name}"
                reason = _unsafe(member)
                if reason:
                    problems.append((where, reason))
                    continue
                member_key, _, name = _sample_key(member.name)
                if member.isdir() or name not in wanted:
                    continue
                if member.size > max_member_bytes:
                    problems.append((where, _too_large(member.size, max_member_bytes)))
                    continue
                if member_key != key:
                    if fields:
                        yield key, fields
                    key, fields = member_key, {}
                fields[name] = tar.extractfile(member).read()
            if fields:
                yield key, fields
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        problems.append((shard.key, f"unreadable tar ({error})"))


class _EndMarked(tarfile.TarInfo):
    """A tar header that marks its archive ``complete`` on reading tar's end-of-archive
    block: tarfile takes a header cut short or garbled for the end too, silently."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            tar.complete = True
            raise


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of a streamed archive, each forgotten once read (tarfile keeps them all,
    as WebDataset's own reader also undoes); a ``ReadError`` when it breaks off."""
    for member in tar:
        tar.members = []
        yield member
    if not getattr(tar, "complete", False):
        raise tarfile.ReadError("it breaks off before its end")


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why a tar member must not be read, or None."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        return "unsafe member path"
    if not (member.isfile() or member.isdir()):
        return "unsafe member (a link or a device)"
    return None


def _sample_key(name: str) -> tuple[str, str, str]:
    """``"a/b.seg.png"`` as ``("a/b", ".", "seg.png")``: WebDataset's key and field."""
    folder, _, file_name = name.rpartition("/")
    stem, dot, extension = file_name.partition(".")
    return (f"{folder}/{stem}" if folder else stem), dot, extension.lower()


def _cls_label(data: bytes | None) -> int | str | None:
    """A ``.cls`` member's label: an int, None when absent, or why it is no label."""
    if data is None:
        return None
    try:
        return int(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return "its .cls is not an integer"


def _class_names(
    source: Source, class_files: list[SourceObject], max_bytes: int
) -> list[str] | None:
    """The names in the shallowest class file (``classes.json`` first at a depth), or None."""
    if not class_files:
        return None
    chosen = min(class_files, key=lambda item: (item.key.count("/"), item.key))
    if chosen.size > max_bytes:
        raise UserError(f"{chosen.key}: {_too_large(chosen.size, max_bytes)}", ("source",))
    try:
        text = source.read(chosen.key).decode("utf-8")
        names = _json_names(json.loads(text)) if chosen.key.endswith(".json") else None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{chosen.key} is not readable: {error}", ("source",)) from None
    if names is None:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if names is None or len(set(names)) != len(names) or len(names) > MAX_CLASSES:
        raise UserError(
            f"{chosen.key} must name distinct classes, at most {MAX_CLASSES}", ("source",)
        )
    return names


def _json_names(value: object) -> list[str] | None:
    """``["cat", "dog"]`` or ``{"cat": 0, "dog": 1}`` (ids 0..n-1) as a list of names; None
    for anything else."""
    if isinstance(value, dict) and sorted(value.values()) == list(range(len(value))):
        value = sorted(value, key=value.__getitem__)
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return value
    return None


# --- Parquet (Hugging Face datasets) ---------------------------------------------------


def _parquet(source: Source, max_file_bytes: int) -> Layout:
    """``*.parquet`` files (in key order) as Hugging Face ``datasets`` writes them: an image
    column (its feature ``{"_type": "Image"}``, else the column ``image``) holding a struct
    of ``bytes`` and ``path`` (or plain bytes), and a label column (the ``ClassLabel``
    feature named ``label``, else the first ``ClassLabel``, else an integer column
    ``label``; none: the rows are unlabeled). Class names are the ``ClassLabel``'s
    ``names`` in the schema metadata ``b"huggingface"``, the same in every file, else the
    label ids. A negative or null label (``-1``: how ``datasets`` marks a test split
    without labels) makes the row unlabeled.

    A file's split is named as a shard's (``data/train-00000-of-00001.parquet``,
    ``default/test/0000.parquet``). Rows are read :data:`BATCH_ROWS` at a time; a file the
    source cannot seek in (S3) is read whole, and one over ``max_file_bytes`` is a
    ``UserError``. A row without image bytes (only a path) is a problem, so is a file that
    cannot be read as Parquet.
    """
    files = [
        item
        for item in source.list()
        if not _hidden(item.key) and item.key.lower().endswith(".parquet")
    ]
    problems: list[tuple[str, str]] = []
    classes: list[str] = []

    def rows() -> Iterator[Record]:
        import pyarrow as pa

        labels: _Labels | None = None
        count = 0
        for item in files:
            try:
                with _parquet_file(source, item, max_file_bytes) as parquet:
                    image, label, names = _columns(parquet.schema_arrow, item.key)
                    if labels is None:  # the first file names the classes
                        classes[:] = names or []
                        labels = _Labels(classes, named=names is not None)
                    if names != (classes if labels.named else None):
                        message = f"{item.key}: its class names differ from the first file's"
                        raise UserError(message, ("source",))
                    for record in _parquet_rows(parquet, item.key, image, label, labels, problems):
                        count += 1
                        yield record
            except (pa.ArrowException, OSError) as error:
                problems.append((item.key, f"unreadable parquet ({error})"))
        (labels or _Labels(classes, named=False)).finish(count, source.uri)

    return Layout("parquet", classes, rows(), problems)


def _parquet_file(source: Source, item: SourceObject, max_file_bytes: int):
    """``item`` as a ``pyarrow.parquet.ParquetFile`` (closing it closes its stream)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stream = source.open(item.key)
    if not stream.seekable():
        stream.close()
        if item.size > max_file_bytes:
            message = (
                f"{item.key}: {_too_large(item.size, max_file_bytes)} to read whole "
                "from this source: split it into smaller files"
            )
            raise UserError(message, ("source",))
        stream = pa.BufferReader(source.read(item.key))
    return pq.ParquetFile(stream)


def _columns(schema, where: str) -> tuple[str, str | None, list[str] | None]:
    """The image column, the label column (or None) and the class names (or None)."""
    import pyarrow as pa

    features = _hf_features(schema)
    typed = {name: feature.get("_type") for name, feature in features.items()}
    image = next((name for name, kind in typed.items() if kind == "Image"), "image")
    if image not in schema.names or not _holds_bytes(schema.field(image).type):
        raise UserError(
            f"{where} has no image column (a struct of bytes and path, or bytes)", ("source",)
        )
    class_labels = [name for name, kind in typed.items() if kind == "ClassLabel"]
    label = "label" if "label" in class_labels else next(iter(class_labels), "label")
    if label not in schema.names:
        return image, None, None
    if not pa.types.is_integer(schema.field(label).type):
        raise UserError(f"{where}: the label column {label!r} is not integers", ("source",))
    names = features.get(label, {}).get("names")
    return image, label, (list(names) if names is not None else None)


def _hf_features(schema) -> dict[str, dict]:
    """The ``datasets`` features in a schema's metadata (``{}`` without them)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in features.items() if isinstance(v, dict)}


def _holds_bytes(kind) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        return index >= 0 and _holds_bytes(kind.field(index).type)
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _parquet_rows(
    parquet, where: str, image: str, label: str | None, labels: _Labels, problems: list
) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.compute as pc

    split = _split_of(where)
    row = 0
    columns = [image] if label is None else [image, label]
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        images = batch.column(0)
        if pa.types.is_struct(images.type):
            images = pc.struct_field(images, "bytes")  # null where the struct is null
        values = batch.column(1).to_pylist() if label else [None] * len(batch)
        for data, value in zip(images.to_pylist(), values, strict=True):
            key, row = f"{where}:{row}", row + 1
            ident, reason = labels.of(value)
            if data is None:
                problems.append((key, "no image bytes (only a path)"))
            elif reason:
                problems.append((key, reason))
            else:
                yield Record(key, split if ident is not None else UNLABELED, ident, _holding(data))


# --- shared ----------------------------------------------------------------------------


class _Labels:
    """Labels checked against the class names, or (without names) taken as ids whose names
    (``"0"``, ``"1"``, …, up to the largest seen) join ``classes`` as records show them."""

    def __init__(self, classes: list[str], *, named: bool) -> None:
        self.classes, self.named, self.labeled = classes, named, False

    def of(self, value: int | str | None) -> tuple[int | None, str | None]:
        """(label, None), (None, None) for an unlabeled record, or (None, why not)."""
        if isinstance(value, str):
            return None, value
        if value is None or value < 0:
            return None, None
        limit = len(self.classes) if self.named else MAX_CLASSES
        if value >= limit:
            return None, f"label {value} is not below the number of classes ({limit})"
        if not self.named:
            self.classes.extend(str(i) for i in range(len(self.classes), value + 1))
        self.labeled = True
        return value, None

    def finish(self, count: int, uri: str) -> None:
        """A ``UserError`` for no records at all, or labeled records of one class only."""
        if count == 0:
            raise UserError(f"{uri} holds no readable images", ("source",))
        if self.labeled:
            _check_classes(self.classes, uri)


def _check_classes(classes: list[str], uri: str) -> None:
    if len(classes) < 2:
        message = f"{uri}: labeled data needs at least two classes; found {classes or 'none'}"
        raise UserError(message, ("source",))


def _split_of(key: str) -> str:
    """The split a shard or a Parquet file holds, from its nearest split folder or its name's
    prefix; train by default."""
    *folders, name = key.split("/")
    for folder in reversed(folders):
        if folder.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[folder.lower()]
    match = SPLIT_PREFIX.match(name)
    return SPLIT_NAMES[match.group(1).lower()] if match else "train"


def _hidden(key: str) -> bool:
    """A key under a hidden or file-manager folder, or naming such a file."""
    return any(part.startswith(".") or part in JUNK for part in key.split("/"))


def _holding(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _too_large(size: int, limit: int) -> str:
    return f"too large ({size} bytes; the limit is {limit})"
