"""Where a dataset's files come from: a local directory, an S3 prefix, an uploaded zip.

A source lists its objects (files only, sorted by key, the key being the
path relative to the source's root in POSIX form) and opens them; it knows
nothing of formats. What a user may name is bounded by the admin's
``OTRT_DATA_SOURCES`` prefixes (``s3://team-data/``, ``file:///mnt/datasets/``;
none by default), and nothing outside them is ever read:

- :func:`check_allowed` refuses, from the URI alone (no I/O: what the API
  checks for its 422), any other scheme, a ``..`` segment, another bucket
  (bucket names compare exactly: ``team-data-evil`` is not ``team-data``) and
  a path outside every prefix, prefixes ending at a path boundary
  (``/mnt/datasets2`` is not under ``/mnt/datasets/``);
- :func:`open_source` (the worker's) also refuses a local path whose real
  path leaves its prefix (a symbolic link out) and checks the source exists;
- :class:`LocalSource` never follows a symbolic link whose target leaves its
  root, nor any symbolically linked directory (no loops, no escapes), and
  lists regular files only (a FIFO would block a read forever);
- :class:`ZipSource` refuses an archive holding absolute names, ``..``,
  backslashes, symbolic links or too many members.

Refusals are :class:`SourceRefused` (a :class:`~otrt_core.errors.UserError`
at ``source``); a source that cannot be read (missing, a bucket that does not
exist, credentials refused, endpoint down) is :class:`SourceUnavailable`,
whose message says which, never a botocore trace.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from otrt_core.errors import UserError

MAX_ZIP_MEMBERS = 1_000_000
S3_READ_BUFFER = 1 << 20
CREDENTIALS_REFUSED = ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")


class SourceRefused(UserError):
    """A source outside the admin's allowlist, or an archive holding an unsafe member."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ("source",))


class SourceUnavailable(Exception):
    """A source (or one of its objects) that cannot be read; the message says why."""


@dataclass(frozen=True)
class SourceObject:
    """A file of a source: its key (POSIX path relative to the source's root) and size."""

    key: str
    size: int


class Source(Protocol):
    """Lists and opens the objects under one root; ``uri`` names the root."""

    uri: str

    def list(self) -> Iterator[SourceObject]:
        """Every file, sorted by key."""
        ...

    def read(self, key: str) -> bytes:
        """The whole content of ``key`` (a key :meth:`list` gave)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """``key`` as a binary stream to read in pieces (the caller closes it)."""
        ...


# --- which URIs are allowed ------------------------------------------------------------


def check_allowed(uri: str, allowed: list[str]) -> None:
    """Raises :class:`SourceRefused` unless ``uri`` lies under one of ``allowed``, judged from
    the strings alone. ``ValueError`` for an ``allowed`` entry that is no such prefix."""
    scheme = urlsplit(uri).scheme
    if scheme == "file":
        path = _file_path(uri)
        inside = any(path.is_relative_to(prefix) for prefix in _prefixes(allowed, "file"))
    elif scheme == "s3":
        bucket, key_prefix = _s3_location(uri)
        inside = any(
            bucket == allowed_bucket and key_prefix.startswith(allowed_prefix)
            for allowed_bucket, allowed_prefix in _prefixes(allowed, "s3")
        )
    else:
        raise SourceRefused(f"{uri!r}: a source is an s3://bucket/prefix/ or file:///path/ URI")
    if not inside:
        raise SourceRefused(f"{uri!r} is not under a source prefix this service allows")


def open_source(uri: str, allowed: list[str], *, s3_endpoint_url: str | None = None) -> Source:
    """The source ``uri`` names, once allowed (:func:`check_allowed`, and a local path's real
    path under its prefix's) and found to exist (:class:`SourceUnavailable` if not)."""
    check_allowed(uri, allowed)
    if urlsplit(uri).scheme == "file":
        return LocalSource(real_local_path(uri, allowed), uri=uri)
    bucket, key_prefix = _s3_location(uri)
    source = S3Source(bucket, key_prefix, endpoint_url=s3_endpoint_url)
    source.check()
    return source


def real_local_path(uri: str, allowed: list[str]) -> Path:
    """The real path of an allowed ``file://`` URI (its symbolic links followed, nothing
    read); :class:`SourceRefused` when it leads out of every allowed prefix."""
    real = Path(os.path.realpath(_file_path(uri)))
    if not any(
        real.is_relative_to(os.path.realpath(prefix)) for prefix in _prefixes(allowed, "file")
    ):
        raise SourceRefused(f"{uri!r} leads out of the allowed prefixes (a symbolic link)")
    return real


def _prefixes(allowed: list[str], scheme: str) -> Iterator:
    """The ``allowed`` entries of ``scheme``: paths for ``file``, (bucket, key prefix) for
    ``s3``."""
    for entry in allowed:
        entry_scheme = urlsplit(entry).scheme
        if entry_scheme not in ("file", "s3"):
            raise ValueError(f"source prefix {entry!r} is neither file:///… nor s3://bucket/…")
        if entry_scheme == scheme:
            yield _file_path(entry) if scheme == "file" else _s3_location(entry)


def _file_path(uri: str) -> PurePosixPath:
    """The absolute path of a ``file:///…`` URI (percent-decoded), refusing ``..``."""
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise SourceRefused(f"{uri!r}: a local source is file:///absolute/path/")
    if not path.startswith("/") or "\0" in path or ".." in path.split("/"):
        raise SourceRefused(f"{uri!r}: a local source is an absolute path without '..'")
    return PurePosixPath(os.path.normpath(path))


def _s3_location(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` as ``("bucket", "a/b/")`` (the key prefix of a folder), refusing
    ``..``; keys are taken literally, as S3 does (no percent-decoding)."""
    parts = urlsplit(uri)
    segments = [segment for segment in parts.path.split("/") if segment]
    if not parts.netloc or parts.query or parts.fragment or ".." in segments:
        raise SourceRefused(f"{uri!r}: an S3 source is s3://bucket/prefix/ without '..'")
    return parts.netloc, "".join(f"{segment}/" for segment in segments)


def _check_key(key: str) -> PurePosixPath:
    """``key`` as a relative path, or :class:`SourceRefused` (see :func:`_is_plain_key`)."""
    if not _is_plain_key(key):
        raise SourceRefused(f"{key!r} is not a key of this source")
    return PurePosixPath(key)


def _is_plain_key(key: str) -> bool:
    """A relative path without ``..``, ``.`` or empty segments, nor NUL: a key that means
    the same object to S3, to stores that map keys to files, and to a file system."""
    return "\0" not in key and all(s not in ("", ".", "..") for s in key.split("/"))


# --- a local directory -----------------------------------------------------------------


class LocalSource:
    """The regular files under a local directory ``root`` (resolved to its real path)."""

    def __init__(self, root: Path, *, uri: str | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        self.uri = f"{(uri or self.root.as_uri()).rstrip('/')}/"  # keys follow it
        if not self.root.is_dir():
            raise SourceUnavailable(f"{self.uri}: no such directory")

    def list(self) -> Iterator[SourceObject]:
        """Every regular file, sorted by key; a link counts when its target is a regular file
        under the root, a linked directory never."""
        yield from self._walk(self.root, "")

    def _walk(self, directory: Path, prefix: str) -> Iterator[SourceObject]:
        try:
            with os.scandir(directory) as scan:
                # "name/" sorts a directory where its keys ("name/…") fall among its siblings'.
                entries = sorted(scan, key=lambda e: e.name + "/" * _is_directory(e))
        except OSError as error:
            raise SourceUnavailable(f"{self.uri}{prefix}: cannot list ({error.strerror})") from None
        for entry in entries:
            if _is_directory(entry):
                yield from self._walk(Path(entry.path), f"{prefix}{entry.name}/")
            elif (size := self._regular_size(entry.path)) is not None:
                yield SourceObject(prefix + entry.name, size)

    def _regular_size(self, path: str) -> int | None:
        """The size of the regular file at ``path`` (after a link under the root), else None."""
        real = os.path.realpath(path)
        try:
            status = os.stat(real)
        except OSError:  # a dangling link, or a file gone since the listing
            return None
        if not Path(real).is_relative_to(self.root) or not stat.S_ISREG(status.st_mode):
            return None
        return status.st_size

    def _path(self, key: str) -> str:
        path = os.path.join(self.root, _check_key(key))
        if self._regular_size(path) is None:
            raise SourceUnavailable(f"{self.uri}{key}: no such file in this source")
        return os.path.realpath(path)

    def read(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except OSError as error:
            raise SourceUnavailable(f"{self.uri}{key}: cannot read ({error.strerror})") from None


def _is_directory(entry: os.DirEntry) -> bool:
    """A real directory: a link to one is never followed."""
    return entry.is_dir(follow_symlinks=False)


# --- an S3 prefix ----------------------------------------------------------------------


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client as otrt uses one everywhere: path-style addressing (MinIO and
    moto's server take it), standard retries, bounded timeouts, the default credentials."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


class S3Source:
    """The objects under ``prefix`` (``""`` or ending in ``/``) in an S3 bucket, through boto3
    with its default credential chain; keys are relative to the prefix."""

    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None = None) -> None:
        self.bucket, self.prefix = bucket, prefix
        self.uri = f"s3://{bucket}/{prefix}"
        self.endpoint = endpoint_url or "AWS"
        self.client = s3_client(endpoint_url)

    def check(self) -> None:
        """:class:`SourceUnavailable` unless the bucket exists and lets us list the prefix."""
        with self._translated("listing"):
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    def list(self) -> Iterator[SourceObject]:
        """Every object under the prefix in S3's order (by key: UTF-8 bytes sort as code
        points do); folder markers (keys ending in ``/``) and keys that are no plain path
        (``..``, ``//``: an escape on stores that map keys to files) are left out."""
        pages = self.client.get_paginator("list_objects_v2")
        with self._translated("listing"):
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if _is_plain_key(key):
                        yield SourceObject(key, item["Size"])

    def read(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open(self, key: str) -> BinaryIO:
        object_key = self.prefix + _check_key(key).as_posix()
        with self._translated(f"reading {key!r}"):
            body = self.client.get_object(Bucket=self.bucket, Key=object_key)["Body"]
        stream = _TranslatedStream(body, self, f"reading {key!r}")
        return io.BufferedReader(stream, buffer_size=S3_READ_BUFFER)

    @contextlib.contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """The store's failures as :class:`SourceUnavailable` naming the cause."""
        try:
            yield
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                reason = f"bucket {self.bucket!r} does not exist at {self.endpoint}"
            elif code in ("NoSuchKey", "404"):
                reason = "no such object"
            elif code in CREDENTIALS_REFUSED:
                reason = f"the credentials were refused for bucket {self.bucket!r} ({code})"
            else:
                reason = f"{code or 'error'}: {error.response.get('Error', {}).get('Message')}"
            raise SourceUnavailable(f"{self.uri}: {doing}: {reason}") from None
        except BotoCoreError as error:  # no credentials, endpoint down, timeouts, a cut stream
            raise SourceUnavailable(f"{self.uri}: {doing}: {error}") from None


class _TranslatedStream(io.RawIOBase):
    """An S3 object's body whose failures mid-read are :class:`SourceUnavailable` too."""

    def __init__(self, body, source: S3Source, doing: str) -> None:
        self.body, self.source, self.doing = body, source, doing

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with self.source._translated(self.doing):
            data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.body.close()
        super().close()


# --- an uploaded zip -------------------------------------------------------------------


class ZipSource:
    """The file members of a zip archive (an upload), checked when opened: an absolute name,
    a ``..`` segment, a backslash (a Windows path another tool would split), a symbolic link,
    a name given twice or more than ``max_members`` members is :class:`SourceRefused`.

    The archive stays open for the source's life: :meth:`close` it (or use ``with``).
    """

    def __init__(
        self, path: Path, *, uri: str | None = None, max_members: int = MAX_ZIP_MEMBERS
    ) -> None:
        self.uri = uri or Path(path).resolve().as_uri()
        try:
            self.archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as error:
            raise SourceUnavailable(f"{self.uri}: not a readable zip ({error})") from None
        try:
            self.members = _safe_members(self.archive, self.uri, max_members)
        except SourceRefused:
            self.archive.close()
            raise

    def list(self) -> Iterator[SourceObject]:
        for name in sorted(self.members):
            yield SourceObject(name, self.members[name].file_size)

    def read(self, key: str) -> bytes:
        with self.open(key) as stream:
            try:
                return stream.read()
            except (zipfile.BadZipFile, OSError, EOFError) as error:  # zlib.error is no OSError
                raise SourceUnavailable(f"{self.uri}: {key}: corrupt member ({error})") from None

    def open(self, key: str) -> BinaryIO:
        if key not in self.members:
            raise SourceUnavailable(f"{self.uri}: {key}: no such member")
        try:
            return self.archive.open(self.members[key])  # at most its declared size
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError) as error:
            raise SourceUnavailable(f"{self.uri}: {key}: cannot read ({error})") from None

    def close(self) -> None:
        self.archive.close()

    def __enter__(self) -> ZipSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _safe_members(
    archive: zipfile.ZipFile, uri: str, max_members: int
) -> dict[str, zipfile.ZipInfo]:
    """The file members by name, or :class:`SourceRefused` naming the first unsafe one."""
    infos = archive.infolist()
    if len(infos) > max_members:
        raise SourceRefused(f"{uri}: {len(infos)} members (the limit is {max_members})")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if name.startswith("/") or "\\" in name or ".." in name.split("/") or "\0" in name:
            raise SourceRefused(f"{uri}: unsafe member path {name!r}")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise SourceRefused(f"{uri}: member {name!r} is a symbolic link")
        if name in members:
            raise SourceRefused(f"{uri}: member {name!r} appears twice")
        if not info.is_dir():
            members[name] = info
    return members
