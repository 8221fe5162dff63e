"""Sources: what they list and read, and everything outside the admin's prefixes refused
(``..``, symbolic links out, sibling prefixes, other buckets, unsafe zip members)."""

import os
import stat
import zipfile

import boto3
import pytest

from otrt_core.data.sources import (
    LocalSource,
    SourceObject,
    SourceRefused,
    SourceUnavailable,
    ZipSource,
    check_allowed,
    open_source,
)
from otrt_core.errors import UserError
from tests.utils.s3 import new_bucket, s3_server


@pytest.fixture
def datasets(tmp_path):
    """``tmp/datasets/photos``: nested files, links in and out, a FIFO; ``tmp/secret``."""
    root = tmp_path / "datasets" / "photos"
    (root / "train" / "cat").mkdir(parents=True)
    (root / "train" / "cat" / "1.jpg").write_bytes(b"c1")
    (root / "train" / "cat.txt").write_bytes(b"sorts before cat/")
    (root / "train" / "dog").mkdir()
    (root / "train" / "dog" / "2.jpg").write_bytes(b"dog")
    (tmp_path / "secret").write_bytes(b"not yours")
    (root / "train" / "dog" / "out.jpg").symlink_to(tmp_path / "secret")
    (root / "train" / "dog" / "in.jpg").symlink_to(root / "train" / "cat" / "1.jpg")
    (root / "train" / "bird").symlink_to(tmp_path)  # a linked directory: never followed
    (root / "train" / "dangling.jpg").symlink_to(tmp_path / "gone")
    os.mkfifo(root / "train" / "fifo.jpg")  # a read would block forever
    return tmp_path


def allowed_in(tmp_path) -> list[str]:
    return [f"{(tmp_path / 'datasets').as_uri()}/"]


# --- local directories ----------------------------------------------------------------


def test_a_local_source_lists_regular_files_sorted_by_key(datasets):
    source = open_source(f"{(datasets / 'datasets/photos').as_uri()}/", allowed_in(datasets))
    assert list(source.list()) == [
        SourceObject("train/cat.txt", 17),
        SourceObject("train/cat/1.jpg", 2),
        SourceObject("train/dog/2.jpg", 3),
        SourceObject("train/dog/in.jpg", 2),  # a link to a file under the root
    ]
    assert source.read("train/dog/in.jpg") == b"c1"
    with source.open("train/dog/2.jpg") as stream:
        assert stream.read(2) == b"do"


def test_a_local_source_never_reads_outside_its_root(datasets):
    source = LocalSource(datasets / "datasets" / "photos")
    for key in ["../../secret", "train/../../../secret", "/etc/passwd", "train//cat/1.jpg"]:
        with pytest.raises(SourceRefused):
            source.read(key)
    for key in ["train/dog/out.jpg", "train/bird/secret", "train/fifo.jpg", "train/nothing"]:
        with pytest.raises(SourceUnavailable, match="no such file in this source"):
            source.read(key)


def test_a_uri_with_dot_dot_is_refused_before_any_path_is_resolved(datasets):
    allowed = allowed_in(datasets)
    for uri in [
        f"{(datasets / 'datasets').as_uri()}/photos/../../secret",
        f"{(datasets / 'datasets').as_uri()}/%2e%2e/secret",  # percent-encoded
    ]:
        with pytest.raises(SourceRefused, match=r"without '\.\.'"):
            check_allowed(uri, allowed)


def test_a_sibling_directory_sharing_the_prefix_string_is_outside_it(tmp_path):
    (tmp_path / "datasets2").mkdir()
    with pytest.raises(SourceRefused, match="not under a source prefix"):
        open_source(f"{(tmp_path / 'datasets2').as_uri()}/", [f"{tmp_path.as_uri()}/datasets/"])
    with pytest.raises(SourceRefused, match="not under a source prefix"):
        open_source(f"{(tmp_path / 'datasets2').as_uri()}/", [f"{tmp_path.as_uri()}/datasets"])


def test_a_link_inside_the_prefix_that_leads_out_is_refused(datasets):
    (datasets / "datasets" / "escape").symlink_to(datasets)
    uri = f"{(datasets / 'datasets' / 'escape').as_uri()}/"
    check_allowed(uri, allowed_in(datasets))  # as a string, it is under the prefix
    with pytest.raises(SourceRefused, match="leads out of the allowed prefixes"):
        open_source(uri, allowed_in(datasets))


def test_a_prefix_that_is_itself_a_link_is_followed_once(tmp_path):
    (tmp_path / "disk" / "photos").mkdir(parents=True)
    (tmp_path / "disk" / "photos" / "a.png").write_bytes(b"a")
    (tmp_path / "mnt").symlink_to(tmp_path / "disk")  # as /mnt/datasets -> /data often is
    source = open_source(f"{(tmp_path / 'mnt/photos').as_uri()}/", [f"{tmp_path.as_uri()}/mnt/"])
    assert [item.key for item in source.list()] == ["a.png"]


def test_nothing_is_allowed_by_default_nor_any_other_scheme(datasets):
    uri = f"{(datasets / 'datasets/photos').as_uri()}/"
    with pytest.raises(SourceRefused):
        open_source(uri, [])
    for other in ["http://example.com/photos/", "/mnt/datasets/photos", "file://host/mnt/x/"]:
        with pytest.raises(SourceRefused):
            check_allowed(other, allowed_in(datasets))


def test_refusals_are_user_errors_at_the_source(datasets):
    with pytest.raises(UserError) as caught:
        check_allowed("s3://elsewhere/", allowed_in(datasets))
    assert caught.value.loc == ("source",)


def test_a_misspelled_admin_prefix_is_a_configuration_error():
    with pytest.raises(ValueError, match="neither"):
        check_allowed("s3://team-data/x/", ["/mnt/datasets/"])


def test_a_missing_directory_is_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable, match="no such directory"):
        open_source(f"{tmp_path.as_uri()}/absent/", [f"{tmp_path.as_uri()}/"])


def test_percent_encoded_names_are_decoded(tmp_path):
    (tmp_path / "my photos").mkdir()
    (tmp_path / "my photos" / "a.png").write_bytes(b"a")
    source = open_source(f"{tmp_path.as_uri()}/my%20photos/", [f"{tmp_path.as_uri()}/"])
    assert source.read("a.png") == b"a"


# --- S3 prefixes, judged from the URI ----------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    ["s3://team-data/", "s3://team-data", "s3://team-data/photos/2024/", "s3://shared/team-a/x"],
)
def test_an_s3_uri_under_an_allowed_prefix_is_allowed(uri):
    check_allowed(uri, ["s3://team-data/", "s3://shared/team-a/"])


@pytest.mark.parametrize(
    "uri",
    [
        "s3://team-data-evil/",  # a bucket whose name starts like an allowed one
        "s3://other/team-data/",
        "s3://shared/team-ab/",  # a sibling prefix
        "s3://shared/",
        "s3://shared/team-a/../team-b/",
        "s3://team-data@evil/",
        "s3://Team-Data/",
    ],
)
def test_other_buckets_and_prefixes_are_refused(uri):
    with pytest.raises(SourceRefused):
        check_allowed(uri, ["s3://team-data/", "s3://shared/team-a/"])


# --- S3, against moto's server ---------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server.url


@pytest.mark.services
def test_an_s3_prefix_lists_its_nested_objects_relative_to_the_prefix(s3_endpoint):
    bucket = new_bucket(s3_endpoint)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for key, body in [
        ("team/photos/train/dog/2.jpg", b"dog"),
        ("team/photos/train/cat/1.jpg", b"c1"),
        ("team/photos/test/cat/9.jpg", b"c9!"),
        ("team/photos/folder/", b""),  # a console's folder marker
        ("team/photos2/x.jpg", b"a sibling prefix"),
        ("other/y.jpg", b"elsewhere"),
    ]:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    uri = f"s3://{bucket}/team/photos/"
    source = open_source(uri, [f"s3://{bucket}/team/"], s3_endpoint_url=s3_endpoint)
    assert source.uri == uri
    assert list(source.list()) == [
        SourceObject("test/cat/9.jpg", 3),
        SourceObject("train/cat/1.jpg", 2),
        SourceObject("train/dog/2.jpg", 3),
    ]
    assert source.read("train/dog/2.jpg") == b"dog"
    with source.open("test/cat/9.jpg") as stream:
        assert stream.read() == b"c9!"
    with pytest.raises(SourceUnavailable, match="no such object"):
        source.read("train/cat/404.jpg")
    with pytest.raises(SourceRefused):
        source.read("../photos2/x.jpg")


@pytest.mark.services
def test_another_bucket_is_refused_without_a_request(s3_endpoint):
    bucket = new_bucket(s3_endpoint)
    with pytest.raises(SourceRefused):
        open_source(f"s3://{bucket}/", ["s3://team-data/"], s3_endpoint_url=s3_endpoint)


@pytest.mark.services
def test_an_allowed_bucket_that_does_not_exist_is_unavailable(s3_endpoint):
    with pytest.raises(SourceUnavailable, match="bucket 'no-such-bucket' does not exist"):
        open_source("s3://no-such-bucket/x/", ["s3://no-such-bucket/"], s3_endpoint_url=s3_endpoint)


@pytest.mark.services
def test_refused_credentials_are_unavailable_with_the_reason(tmp_path):
    """moto's server takes any key unless told to check them; then it knows none."""
    with (
        s3_server(tmp_path / "moto.log", check_credentials=True) as server,
        pytest.raises(SourceUnavailable, match="credentials were refused") as caught,
    ):
        open_source("s3://team-data/", ["s3://team-data/"], s3_endpoint_url=server.url)
    assert "Traceback" not in str(caught.value) and "botocore" not in str(caught.value)


@pytest.mark.services
def test_an_endpoint_that_is_down_is_unavailable():
    with pytest.raises(SourceUnavailable, match="s3://team-data/: listing"):
        open_source("s3://team-data/", ["s3://team-data/"], s3_endpoint_url="http://127.0.0.1:9")


# --- uploaded zips ---------------------------------------------------------------------


def zip_of(path, members: dict[str, bytes], links: tuple[str, ...] = ()) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def test_a_zip_lists_its_file_members_sorted(tmp_path):
    path = zip_of(tmp_path / "d.zip", {"train/b/2.png": b"22", "train/a/1.png": b"1"})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("train/empty/", b"")  # a directory member
    with ZipSource(path) as source:
        assert list(source.list()) == [
            SourceObject("train/a/1.png", 1),
            SourceObject("train/b/2.png", 2),
        ]
        assert source.read("train/b/2.png") == b"22"
        with pytest.raises(SourceUnavailable, match="no such member"):
            source.read("train/c/3.png")


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../evil.png", "train/../../evil.png", "train\\a\\1.png"]
)
def test_a_zip_with_an_unsafe_member_path_is_refused_naming_it(tmp_path, name):
    path = zip_of(tmp_path / "d.zip", {"train/a/1.png": b"1", name: b"x"})
    with pytest.raises(SourceRefused, match="unsafe member path") as caught:
        ZipSource(path)
    assert repr(name) in str(caught.value)


def test_a_zip_with_a_link_or_a_repeated_name_is_refused(tmp_path):
    with pytest.raises(SourceRefused, match=r"'train/a/link\.png' is a symbolic link"):
        ZipSource(zip_of(tmp_path / "l.zip", {"train/a/1.png": b"1"}, links=("train/a/link.png",)))
    twice = tmp_path / "t.zip"
    with zipfile.ZipFile(twice, "w") as archive:
        archive.writestr("a.png", b"1")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("a.png", b"2")
    with pytest.raises(SourceRefused, match="appears twice"):
        ZipSource(twice)


def test_a_zip_with_too_many_members_is_refused(tmp_path):
    path = zip_of(tmp_path / "d.zip", {f"{n}.png": b"" for n in range(5)})
    with pytest.raises(SourceRefused, match="5 members"):
        ZipSource(path, max_members=4)


def test_a_file_that_is_no_zip_is_unavailable(tmp_path):
    (tmp_path / "d.zip").write_bytes(b"PK but not really")
    with pytest.raises(SourceUnavailable, match="not a readable zip"):
        ZipSource(tmp_path / "d.zip")
