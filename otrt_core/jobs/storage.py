"""Where uploaded files and job artifacts live: one interface, a local directory for now.

Callers name objects by a relative key (``uploads/file_…``,
``artifacts/job_…/student.safetensors``) and never build paths themselves, so
an S3-compatible store can replace :class:`LocalStorage` without touching them.
Writes go to a temporary file and are renamed into place: a reader never sees
half an object.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from otrt_core.atomic import atomic_path
from otrt_core.errors import TooLarge


@dataclass(frozen=True)
class StoredObject:
    key: str
    bytes: int
    sha256: str


CHUNK = 1 << 20


class LocalStorage:
    """Objects as files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The local file of ``key``; keys are relative and never leave the root."""
        relative = PurePosixPath(key)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / relative

    async def receive(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> StoredObject:
        """Streams ``chunks`` to ``key``, hashing on the way; :class:`TooLarge` past ``limit``.

        Chunks are gathered to :data:`CHUNK` bytes and written in a thread, so the
        event loop never waits on the disk.
        """
        with atomic_path(self.path(key)) as temp, open(temp, "wb") as handle:
            writer, buffer = _HashingWriter(handle, limit), bytearray()
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
            writer = _HashingWriter(handle)
            with open(source, "rb") as reader:
                while chunk := reader.read(CHUNK):
                    writer.write(chunk)
        return writer.stored(key)

    def rename(self, key: str, new_key: str) -> None:
        os.replace(self.path(key), self.path(new_key))

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


class _HashingWriter:
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
