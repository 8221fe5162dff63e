"""Where uploaded files, checkpoints and job artifacts live: one interface, two stores.

Callers name objects by a relative key (``uploads/file_…``,
``artifacts/job_…/student.safetensors``, ``checkpoints/job_…/checkpoint.pt``)
and never build paths themselves. :class:`LocalStorage` keeps them under a
directory; :class:`otrt_core.jobs.s3.S3Storage` in an S3-compatible bucket, so
API replicas and workers on several hosts share them. Either way a reader
never sees half an object: local writes go to a temporary file renamed into
place, S3 writes become visible only when complete.

What needs a file on disk (the inspector child, the trainer) asks for
:meth:`fetch`: the file itself here, a copy in a local cache keyed by sha256
for S3.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from otrt_core.atomic import atomic_path
from otrt_core.errors import TooLarge


@dataclass(frozen=True)
class StoredObject:
    key: str
    bytes: int
    sha256: str


CHUNK = 1 << 20


class StorageUnavailable(RuntimeError):
    """The store cannot be used: missing bucket, refused credentials, unreachable endpoint."""


class Storage(Protocol):
    """What the service and the executor ask of a store (keys are relative paths)."""

    # Whether other hosts see this store: the executor then pushes checkpoints to it.
    shared: bool
    root: Path  # a local directory of this host's (the objects, or their cache)

    async def receive(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> StoredObject: ...
    def put(self, key: str, source: Path) -> StoredObject: ...
    def fetch(self, key: str, sha256: str | None = None) -> Path: ...
    def download(self, key: str, target: Path) -> bool: ...
    def read_bytes(self, key: str) -> bytes: ...
    def chunks(self, key: str) -> Iterator[bytes]: ...  # the whole object, in pieces
    def rename(self, key: str, new_key: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def modified_before(self, prefix: str, before: float) -> list[str]: ...
    def keys(self, prefix: str) -> list[str]: ...  # every object under prefix, as it is
    def location(self, prefix: str) -> str: ...  # where a trainer reads objects under prefix


class LocalStorage:
    """Objects as files under ``root``."""

    shared = False  # another host shares it only through a shared file system

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The local file of ``key``; keys are relative and never leave the root."""
        return self.root / valid_key(key)

    def location(self, prefix: str) -> str:
        """The local directory of the objects under ``prefix``."""
        return str(self.path(prefix))

    async def receive(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> StoredObject:
        """Streams ``chunks`` to ``key``, hashing on the way; :class:`TooLarge` past ``limit``.

        Chunks are gathered to :data:`CHUNK` bytes and written in a thread, so the
        event loop never waits on the disk.
        """
        with atomic_path(self.path(key)) as temp, open(temp, "wb") as handle:
            writer, buffer = HashingWriter(handle, limit), bytearray()
            async for chunk in chunks:
                buffer += chunk
                if len(buffer) >= CHUNK:
                    await asyncio.to_thread(writer.write, bytes(buffer))
                    buffer.clear()
            await asyncio.to_thread(writer.write, bytes(buffer))
        return writer.stored(key)

    def put(self, key: str, source: Path) -> StoredObject:
        """Copies a local file in as ``key``."""
        with atomic_path(self.path(key)) as temp, open(temp, "wb") as handle:
            writer = HashingWriter(handle)
            with open(source, "rb") as reader:
                while chunk := reader.read(CHUNK):
                    writer.write(chunk)
        return writer.stored(key)

    def fetch(self, key: str, sha256: str | None = None) -> Path:
        """The file of ``key`` itself; ``LookupError(key)`` when there is none."""
        path = self.path(key)
        if not path.is_file():
            raise LookupError(key)
        return path

    def download(self, key: str, target: Path) -> bool:
        """Copies ``key`` to ``target``; False when there is no such object."""
        try:
            source = self.fetch(key)
        except LookupError:
            return False
        with atomic_path(target) as temp:
            shutil.copyfile(source, temp)
        return True

    def read_bytes(self, key: str) -> bytes:
        return self.fetch(key).read_bytes()

    def chunks(self, key: str) -> Iterator[bytes]:
        with open(self.fetch(key), "rb") as reader:
            while chunk := reader.read(CHUNK):
                yield chunk

    def rename(self, key: str, new_key: str) -> None:
        target = self.path(new_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path(key), target)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def modified_before(self, prefix: str, before: float) -> list[str]:
        """Keys under ``prefix`` (temporary ``.part`` files included) last written before
        ``before`` (seconds since the epoch)."""
        root = self.path(prefix)
        if not root.is_dir():
            return []
        return [
            path.relative_to(self.root).as_posix()
            for path in root.rglob("*")
            if path.is_file() and path.stat().st_mtime < before
        ]

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (temporary ``.part`` files included)."""
        return self.modified_before(prefix, float("inf"))


def valid_key(key: str) -> PurePosixPath:
    """``key`` as a relative path that never leaves the store's root."""
    relative = PurePosixPath(key)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(f"invalid storage key {key!r}")
    return relative


class HashingWriter:
    """Writes chunks to ``handle``, counting and hashing them; :class:`TooLarge` past ``limit``."""

    def __init__(self, handle: BinaryIO, limit: int | None = None) -> None:
        self.handle, self.limit = handle, limit
        self.digest, self.size = hashlib.sha256(), 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise TooLarge(f"the upload exceeds the limit of {self.limit} bytes")
        self.digest.update(chunk)
        self.handle.write(chunk)

    def stored(self, key: str) -> StoredObject:
        return StoredObject(key, self.size, self.digest.hexdigest())
