"""Formats: ImageFolder trees (split, flat, unlabeled, wrapped in a zip), WebDataset shards
(with a hostile member or two) and Hugging Face Parquet, read into classes, labelled
records per split, and the problems a caller lists as unreadable."""

import io
import json
import os
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from otrt_core.data.formats import Layout, detect, records
from otrt_core.data.sources import LocalSource, SourceObject, ZipSource
from otrt_core.errors import UserError


def png(value: int = 0, size: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), value).save(buffer, format="PNG")
    return buffer.getvalue()


def tree(root: Path, files: dict[str, bytes]) -> LocalSource:
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return LocalSource(root)


def read_all(layout: Layout) -> list:
    """Every record as (key, split, label name or None, bytes); checks that each label
    indexes the classes at the moment its record comes out."""
    out = []
    for record in layout.records:
        name = None if record.label is None else layout.classes[record.label]
        out.append((record.key, record.split, name, record.read()))
    return out


def counts(rows: list) -> dict[tuple[str, str | None], int]:
    return dict(Counter((split, name) for _, split, name, _ in rows))


class CountingSource:
    """A source that counts its reads (for laziness) and can refuse to seek (as S3)."""

    def __init__(self, inner, *, seekable: bool = True) -> None:
        self.inner, self.seekable, self.reads = inner, seekable, 0
        self.uri = inner.uri

    def list(self):
        return self.inner.list()

    def read(self, key):
        self.reads += 1
        return self.inner.read(key)

    def open(self, key):
        stream = self.inner.open(key)
        if self.seekable:
            return stream
        data = stream.read()
        stream.close()
        return Unseekable(data)


class Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.data.readinto(buffer)


# --- detect ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keys, format",
    [
        (["train/cat/1.JPG", "train/dog/2.png", "README.md"], "imagefolder"),
        (["train-000.tar", "train-001.tar", "classes.txt"], "webdataset"),
        (["data/train-00000-of-00001.parquet", "README.md", ".gitattributes"], "parquet"),
        (["digits.npz"], "npz"),
        (["photos.zip"], "zip"),
        (["a.png", ".backup.tar", "__MACOSX/x.parquet"], "imagefolder"),  # hidden ones skip
    ],
)
def test_detect_names_the_format_from_the_keys(keys, format):
    assert detect([SourceObject(key, 1) for key in keys]) == format


def test_detect_asks_for_a_format_when_there_is_none_or_several():
    with pytest.raises(UserError, match="found no images") as caught:
        detect([SourceObject("notes.txt", 1)])
    assert caught.value.loc == ("format",)
    with pytest.raises(UserError, match=r"several formats \(imagefolder, webdataset\)"):
        detect([SourceObject("preview.jpg", 1), SourceObject("train-000.tar", 1)])


# --- ImageFolder -----------------------------------------------------------------------


def test_an_imagefolder_with_splits_gives_classes_labels_and_problems(tmp_path):
    source = tree(
        tmp_path,
        {
            "train/cat/1.png": png(1),
            "train/cat/2.JPG": png(2),  # by its name: decoding is the caller's
            "train/cat/deeper/3.png": png(3),  # nested below a class folder
            "train/dog/1.png": png(4),
            "train/bird/.DS_Store": b"\0",  # a class folder without images
            "train/cat/notes.txt": b"not an image",
            "train/cat/._1.png": b"AppleDouble",
            "__MACOSX/train/cat/._1.png": b"AppleDouble",
            ".DS_Store": b"\0",
            "val/dog/5.png": png(5),
            "test/cat/6.png": png(6),
        },
    )
    layout = records(source, "imagefolder")
    assert (layout.format, layout.classes) == ("imagefolder", ["cat", "dog"])
    assert layout.problems == [("train/bird/", "empty class folder")]  # known up front
    rows = read_all(layout)
    assert counts(rows) == {
        ("test", "cat"): 1,
        ("train", "cat"): 3,
        ("train", "dog"): 1,
        ("val", "dog"): 1,
    }
    assert ("train/cat/deeper/3.png", "train", "cat", png(3)) in rows
    assert layout.problems == [
        ("train/bird/", "empty class folder"),
        ("train/cat/notes.txt", "not an image file"),
    ]


def test_class_folders_at_the_top_are_all_training_images(tmp_path):
    source = tree(tmp_path, {"cat/1.png": png(), "dog/1.webp": png(), "loose.png": png()})
    layout = records(source, "imagefolder")
    rows = read_all(layout)
    assert layout.classes == ["cat", "dog"]
    assert counts(rows) == {("train", "cat"): 1, ("train", "dog"): 1}
    assert layout.problems == [("loose.png", "not in a class folder")]


def test_images_with_no_class_folders_are_an_unlabeled_pool(tmp_path):
    source = tree(tmp_path, {"a.png": png(), "b.tif": b"x", "c.gif": b"y", "d.txt": b"z"})
    layout = records(source, "imagefolder")
    rows = read_all(layout)
    assert layout.classes == []
    assert [(key, split, name) for key, split, name, _ in rows] == [
        ("a.png", "unlabeled", None),
        ("b.tif", "unlabeled", None),
        ("c.gif", "unlabeled", None),
    ]
    assert layout.problems == [("d.txt", "not an image file")]


def test_images_outside_the_split_and_class_folders_are_reported(tmp_path):
    source = tree(
        tmp_path,
        {
            "train/cat/1.png": png(),
            "train/dog/1.png": png(),
            "train/stray.png": png(),
            "extra/cat/1.png": png(),
        },
    )
    layout = records(source, "imagefolder")
    assert len(read_all(layout)) == 2
    assert sorted(layout.problems) == [
        ("extra/cat/1.png", "outside train/, val/ and test/"),
        ("train/stray.png", "not in a class folder"),
    ]


def test_an_imagefolder_inside_a_zip_reads_through_the_zip_source(tmp_path):
    """Zipping a folder wraps everything in it: the layout starts inside."""
    path = tmp_path / "upload.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for key in ["shop/train/bag/1.png", "shop/train/shoe/1.png", "shop/test/bag/2.png"]:
            archive.writestr(key, png())
        archive.writestr("__MACOSX/shop/._train", b"")
        archive.writestr("backup/train/bird/.DS_Store", b"")  # outside shop/: no class
    with ZipSource(path) as source:
        layout = records(source, "imagefolder")
        rows = read_all(layout)
    assert layout.classes == ["bag", "shoe"]
    assert counts(rows) == {("test", "bag"): 1, ("train", "bag"): 1, ("train", "shoe"): 1}
    assert layout.problems == []


def test_records_read_their_file_only_when_asked(tmp_path):
    source = CountingSource(tree(tmp_path, {"a/1.png": png(), "b/1.png": png()}))
    layout = records(source, "imagefolder")
    listed = list(layout.records)
    assert len(listed) == 2 and source.reads == 0
    assert listed[0].read() == png() and source.reads == 1


def test_an_image_past_the_member_limit_is_reported_unread(tmp_path):
    source = CountingSource(tree(tmp_path, {"a/1.png": png(size=64), "b/1.png": png()}))
    layout = records(source, "imagefolder", max_member_bytes=len(png()))
    assert [record.key for record in layout.records] == ["b/1.png"]
    ((key, reason),) = layout.problems
    assert key == "a/1.png" and reason.startswith("too large")


@pytest.mark.parametrize(
    "files, message",
    [
        ({"notes.txt": b"x"}, "holds no images"),
        ({"train/cat/1.png": b"x", "train/cat/2.png": b"x"}, "at least two classes"),
        ({"train/cat/1.png": b"", "train/dog/1.png": b"", "test/cow/1.png": b""}, "lacks"),
    ],
)
def test_an_imagefolder_that_cannot_be_a_dataset_is_a_user_error(tmp_path, files, message):
    with pytest.raises(UserError, match=message):
        records(tree(tmp_path, files), "imagefolder")


# --- WebDataset ------------------------------------------------------------------------


def shard(path: Path, members: list[tuple[str, bytes]], links: tuple[str, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)


def sample(key: str, label: int | None, image: bytes, field: str = "jpg") -> list:
    cls = [] if label is None else [(f"{key}.cls", str(label).encode())]
    return [(f"{key}.{field}", image), *cls, (f"{key}.json", b"{}")]


def test_webdataset_shards_give_samples_with_named_classes_and_splits(tmp_path):
    shard(tmp_path / "train-000.tar", sample("s/0001", 0, png(1)) + sample("s/0002", 1, png(2)))
    shard(tmp_path / "train-001.tar", sample("0003", 1, png(3), "png") + sample("0004", None, b"u"))
    shard(tmp_path / "val" / "000.tar", sample("0005", 0, png(5)))
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    layout = records(LocalSource(tmp_path), "webdataset")
    assert layout.classes == ["cat", "dog"]
    rows = read_all(layout)
    assert rows[0] == ("train-000.tar:s/0001.jpg", "train", "cat", png(1))
    assert counts(rows) == {
        ("train", "cat"): 1,
        ("train", "dog"): 2,
        ("unlabeled", None): 1,  # no .cls
        ("val", "cat"): 1,
    }
    assert layout.problems == []


def test_unsafe_tar_members_are_reported_and_never_written_anywhere(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = tmp_path / "data"
    members = [
        ("../evil.jpg", png()),
        ("/tmp/abs.jpg", png()),
        *sample("0001", 0, png()),
        *sample("0002", 1, png()),
    ]
    shard(data / "train.tar", members, links=("0003.jpg",))
    (data / "classes.json").write_text(json.dumps({"dog": 1, "cat": 0}))
    layout = records(LocalSource(data), "webdataset")
    assert len(read_all(layout)) == 2 and layout.classes == ["cat", "dog"]
    assert layout.problems == [
        ("train.tar:../evil.jpg", "unsafe member path"),
        ("train.tar:/tmp/abs.jpg", "unsafe member path"),
        ("train.tar:0003.jpg", "unsafe member (a link or a device)"),
    ]
    assert not (tmp_path / "evil.jpg").exists() and list(work.iterdir()) == []


def test_label_ids_name_the_classes_without_a_class_file(tmp_path):
    shard(tmp_path / "shards" / "a.tar", sample("0", 2, png()) + sample("1", 0, png()))
    layout = records(LocalSource(tmp_path), "webdataset")
    assert layout.classes == []  # not known before the shards are read
    rows = read_all(layout)  # each label indexes the classes as its record comes out
    assert [name for _, _, name, _ in rows] == ["2", "0"]
    assert layout.classes == ["0", "1", "2"]


def test_bad_samples_are_reported(tmp_path):
    members = [
        *sample("0", 0, png()),
        ("1.cls", b"1"),  # no image
        *sample("2", 7, png()),  # beyond classes.txt
        *sample("3", 1, png(size=64)),  # past the member limit
        ("4.jpg", png()),
        ("4.cls", b"one"),
    ]
    shard(tmp_path / "a.tar", members)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    layout = records(LocalSource(tmp_path), "webdataset", max_member_bytes=len(png()) + 10)
    assert [key for key, *_ in read_all(layout)] == ["a.tar:0.jpg"]
    problems = dict(layout.problems)
    assert problems["a.tar:1"] == "no image in the sample"
    assert problems["a.tar:2"] == "label 7 is not below the number of classes (2)"
    assert problems["a.tar:3.jpg"].startswith("too large")
    assert problems["a.tar:4"] == "its .cls is not an integer"


@pytest.mark.parametrize(
    "cut, kept",
    [
        ("offset_data", ["5", "6"]),  # inside an image's data
        ("offset", ["5"]),  # between two members: tarfile alone would see a whole shard
    ],
)
def test_a_shard_that_breaks_off_keeps_its_complete_samples(tmp_path, cut, kept):
    path = tmp_path / "b.tar"
    shard(path, sample("5", 1, png()) + sample("6", 0, png()) + sample("7", 1, png()))
    with tarfile.open(path) as tar:
        at = getattr(tar.getmember("7.jpg"), cut) + (20 if cut == "offset_data" else 0)
    path.write_bytes(path.read_bytes()[:at])
    layout = records(LocalSource(tmp_path), "webdataset")
    # The last sample before the break may have lost members: it is dropped too.
    assert [key for key, *_ in read_all(layout)] == [f"b.tar:{n}.jpg" for n in kept]
    ((key, reason),) = layout.problems
    assert key == "b.tar" and reason.startswith("unreadable tar")


def test_shards_of_one_class_only_are_a_user_error_once_read(tmp_path):
    shard(tmp_path / "a.tar", sample("0", 0, png()) + sample("1", 0, png()))
    layout = records(LocalSource(tmp_path), "webdataset")
    with pytest.raises(UserError, match="at least two classes"):
        read_all(layout)


# --- Parquet (Hugging Face datasets) ---------------------------------------------------


def hf_metadata(names: list[str] | None, image: str = "image") -> dict[bytes, bytes]:
    """The schema metadata ``datasets`` writes (built by hand: it is not installed here)."""
    features = {image: {"_type": "Image"}}
    if names is not None:
        features["label"] = {"names": names, "_type": "ClassLabel"}
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def parquet_file(
    path: Path,
    images: list[bytes | None],
    labels: list[int] | None,
    names: list[str] | None = None,
    image: str = "image",
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    column = pa.array(
        [{"bytes": data, "path": f"{n}.png"} for n, data in enumerate(images)], type=struct
    )
    columns = {image: column} | ({} if labels is None else {"label": pa.array(labels, pa.int64())})
    table = pa.table(columns).replace_schema_metadata(hf_metadata(names, image))
    pq.write_table(table, path, row_group_size=100)


def test_parquet_as_datasets_writes_it_gives_named_classes_and_splits(tmp_path):
    train = [png(n % 7) for n in range(300)]  # several row groups and batches
    parquet_file(
        tmp_path / "data" / "train-00000-of-00001.parquet",
        train,
        [n % 3 for n in range(300)],
        ["airplane", "bird", "cat"],
    )
    parquet_file(
        tmp_path / "data" / "test-00000-of-00001.parquet",
        [png(1), None, png(2)],
        [2, 0, -1],  # -1: datasets' mark of a missing label
        ["airplane", "bird", "cat"],
    )
    (tmp_path / "README.md").write_text("# card")
    layout = records(LocalSource(tmp_path), "parquet")
    rows = read_all(layout)
    assert layout.classes == ["airplane", "bird", "cat"]
    assert counts(rows) == {
        ("train", "airplane"): 100,
        ("train", "bird"): 100,
        ("train", "cat"): 100,
        ("test", "cat"): 1,
        ("unlabeled", None): 1,
    }
    assert ("data/train-00000-of-00001.parquet:299", "train", "cat", train[299]) in rows
    missing = ("data/test-00000-of-00001.parquet:1", "no image bytes (only a path)")
    assert layout.problems == [missing]


def test_the_image_feature_names_the_column_and_ids_name_unnamed_classes(tmp_path):
    parquet_file(
        tmp_path / "default" / "validation" / "0000.parquet", [png()] * 2, [0, 1], image="img"
    )
    layout = records(LocalSource(tmp_path), "parquet")
    rows = read_all(layout)
    assert [(split, name) for _, split, name, _ in rows] == [("val", "0"), ("val", "1")]
    assert layout.classes == ["0", "1"]


def test_parquet_without_labels_is_an_unlabeled_pool(tmp_path):
    parquet_file(tmp_path / "pool.parquet", [png()] * 3, None)
    layout = records(LocalSource(tmp_path), "parquet")
    assert {(split, name) for _, split, name, _ in read_all(layout)} == {("unlabeled", None)}


def test_parquet_without_an_image_column_is_a_user_error(tmp_path):
    pq.write_table(pa.table({"text": ["a"], "label": [0]}), tmp_path / "train.parquet")
    with pytest.raises(UserError, match="no image column"):
        read_all(records(LocalSource(tmp_path), "parquet"))


def test_a_corrupt_parquet_file_is_reported(tmp_path):
    parquet_file(tmp_path / "train-0.parquet", [png()] * 2, [0, 1], ["a", "b"])
    (tmp_path / "train-1.parquet").write_bytes(b"PAR1 but not really")
    layout = records(LocalSource(tmp_path), "parquet")
    assert len(read_all(layout)) == 2
    ((key, reason),) = layout.problems
    assert key == "train-1.parquet" and reason.startswith("unreadable parquet")


def test_a_parquet_file_the_source_cannot_seek_in_is_read_whole_within_a_bound(tmp_path):
    parquet_file(tmp_path / "train.parquet", [png()] * 2, [0, 1], ["a", "b"])
    source = CountingSource(LocalSource(tmp_path), seekable=False)
    assert len(read_all(records(source, "parquet"))) == 2 and source.reads == 1
    size = os.path.getsize(tmp_path / "train.parquet")
    with pytest.raises(UserError, match="split it into smaller files"):
        read_all(records(source, "parquet", max_file_bytes=size - 1))
