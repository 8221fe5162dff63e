"""Uploads in parts (API.md v1.3): a file of any size sent as numbered parts, resumably.

An upload declares its size (and, optionally, its sha256) and gets a part size;
part ``n`` (from 1) covers bytes ``[(n - 1) * part_size, n * part_size)`` of the
whole, the last one the rest. Each part is stored as an object of its own
(``upload-parts/{id}/{n}``) and recorded with its sha256 (its ETag) once
complete, so a client that stopped asks which parts are stored and sends only
the others; a part sent again replaces the first. Completing concatenates the
parts, in order, into one upload that is checked and recorded like any
``POST /v1/files`` (purpose ``dataset``), then frees the parts. Nothing is
decoded here: the converter bounds memory per image, so the only limit on the
whole is ``OTRT_MAX_PUSH_BYTES``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from otrt_core.atomic import writer
from otrt_core.errors import TooLarge
from otrt_core.jobs.refusals import Invalid, NotFound, PayloadTooLarge
from otrt_core.jobs.storage import Storage, StoredObject
from otrt_core.jobs.store import new_id
from otrt_core.jobs.tables import StoredFile, Upload, UploadPart

MIB = 1 << 20
DEFAULT_PART_SIZE = 16 * MIB
MIN_PART_SIZE = 64 * 1024  # small enough to test resuming on a few MB
MAX_PART_SIZE = 512 * MIB
MAX_PARTS = 10_000  # S3's bound on a multipart upload
UPLOAD_SUFFIXES = (".zip", ".npz")  # what POST /v1/datasets registers from a file


@dataclass(frozen=True)
class UploadState:
    """An upload and the parts stored so far (number -> its row)."""

    upload: Upload
    stored: dict[int, UploadPart]

    @property
    def part_count(self) -> int:
        return part_count(self.upload.bytes, self.upload.part_size)

    def part_bytes(self, number: int) -> int:
        """The size part ``number`` must have: ``part_size``, the last one the rest."""
        if number < self.part_count:
            return self.upload.part_size
        return self.upload.bytes - (self.part_count - 1) * self.upload.part_size

    @property
    def missing(self) -> list[int]:
        return [n for n in range(1, self.part_count + 1) if n not in self.stored]


def part_count(size: int, part_size: int) -> int:
    return -(-size // part_size)


# Records a completed upload like POST /v1/files: (owner, purpose, filename, file id,
# the stored object) -> the file's row; raises a ServiceError when its content is refused.
Accept = Callable[[str, str, str, str, StoredObject], StoredFile]


class UploadService:
    """Creates, fills, completes and aborts uploads; expires the forgotten ones."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        storage: Storage,
        accept: Accept,
        *,
        max_push_bytes: int,
        expiry: timedelta,
    ) -> None:
        self.sessions, self.storage, self.accept = sessions, storage, accept
        self.max_push_bytes, self.expiry = max_push_bytes, expiry

    def create(
        self, owner: str, filename: str, size: int, sha256: str | None, part_size: int | None
    ) -> UploadState:
        if not filename.lower().endswith(UPLOAD_SUFFIXES):
            raise Invalid.at(["body", "filename"], "datasets are .npz or ImageFolder .zip")
        if size > self.max_push_bytes:
            raise PayloadTooLarge(f"{size} bytes exceed the limit of {self.max_push_bytes} bytes")
        part_size = part_size or max(DEFAULT_PART_SIZE, -(-size // MAX_PARTS))
        if part_count(size, part_size) > MAX_PARTS:
            smallest = -(-size // MAX_PARTS)
            raise Invalid.at(
                ["body", "part_size"],
                f"{size} bytes in parts of {part_size} make over {MAX_PARTS} parts; "
                f"use parts of at least {smallest} bytes",
            )
        upload = Upload(
            id=new_id("upl"),
            owner=owner,
            filename=filename,
            bytes=size,
            sha256=sha256,
            part_size=part_size,
            expires_at=datetime.now(UTC) + self.expiry,
        )
        with self.sessions.begin() as session:
            session.add(upload)
        return UploadState(upload, {})

    def state(self, owner: str, upload_id: str) -> UploadState:
        with self.sessions() as session:
            upload = session.get(Upload, upload_id)
            if upload is None or upload.owner != owner:
                raise NotFound(f"no upload {upload_id}")
            parts = session.scalars(select(UploadPart).where(UploadPart.upload_id == upload_id))
            return UploadState(upload, {part.number: part for part in parts})

    async def receive_part(
        self, owner: str, upload_id: str, number: int, chunks: AsyncIterator[bytes]
    ) -> UploadPart:
        """Stores part ``number``; 422 when it is not one of the upload's parts or is not
        exactly its size (a part past the declared size included)."""
        state = await asyncio.to_thread(self.state, owner, upload_id)
        if not 1 <= number <= state.part_count:
            raise Invalid.at(
                ["path", "number"], f"part {number} is not one of 1-{state.part_count}"
            )
        expected = state.part_bytes(number)
        key = part_key(upload_id, number)
        try:
            stored = await self.storage.receive(key, chunks, expected)
        except TooLarge:
            self.storage.delete(key)
            raise Invalid.at(
                ["body"], f"part {number} is past the declared size: it has {expected} bytes"
            ) from None
        if stored.bytes != expected:
            self.storage.delete(key)
            raise Invalid.at(
                ["body"], f"part {number} has {stored.bytes} bytes; it must have {expected}"
            )
        part = UploadPart(
            upload_id=upload_id, number=number, bytes=stored.bytes, etag=stored.sha256
        )
        with self.sessions.begin() as session:
            if session.get(Upload, upload_id) is None:  # aborted meanwhile
                self.storage.delete(key)
                raise NotFound(f"no upload {upload_id}")
            session.merge(part)  # a part sent again replaces the first
        return part

    async def complete(self, owner: str, upload_id: str) -> StoredFile:
        """The parts, in order, as one checked and recorded file; the parts are freed."""
        state = await asyncio.to_thread(self.state, owner, upload_id)
        if missing := state.missing:
            shown = ", ".join(map(str, missing[:20])) + (" …" if len(missing) > 20 else "")
            raise Invalid.at(["body"], f"parts missing: {shown} (of {state.part_count})")
        file_id = new_id("file")
        whole = await self.storage.receive(
            f"uploads/{file_id}{writer()}.upload", self._parts(state), self.max_push_bytes
        )
        if state.upload.sha256 and whole.sha256 != state.upload.sha256.lower():
            self.storage.delete(whole.key)
            raise Invalid.at(
                ["body", "sha256"],
                f"the parts' sha256 is {whole.sha256}, not the declared {state.upload.sha256}",
            )
        filename = state.upload.filename
        record = await asyncio.to_thread(self.accept, owner, "dataset", filename, file_id, whole)
        await asyncio.to_thread(self._forget, upload_id, state.part_count)
        return record

    async def _parts(self, state: UploadState) -> AsyncIterator[bytes]:
        """Every part's bytes in order, each read in a thread (never on the event loop)."""
        for number in range(1, state.part_count + 1):
            chunks = await asyncio.to_thread(self.storage.chunks, part_key(state.upload.id, number))
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                yield chunk

    def abort(self, owner: str, upload_id: str) -> None:
        state = self.state(owner, upload_id)
        self._forget(upload_id, state.part_count)

    def expire(self, now: datetime | None = None) -> list[str]:
        """Aborts every upload past its ``expires_at``; returns their ids."""
        with self.sessions() as session:
            expired = list(
                session.scalars(
                    select(Upload).where(Upload.expires_at < (now or datetime.now(UTC)))
                )
            )
        for upload in expired:
            self._forget(upload.id, part_count(upload.bytes, upload.part_size))
        return [upload.id for upload in expired]

    def _forget(self, upload_id: str, parts: int) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))
            session.execute(delete(Upload).where(Upload.id == upload_id))
        for number in range(1, parts + 1):
            self.storage.delete(part_key(upload_id, number))


def part_key(upload_id: str, number: int) -> str:
    return f"upload-parts/{upload_id}/{number:05d}"


def planned_parts(state: UploadState) -> Iterator[tuple[int, int]]:
    """(number, bytes) of every part of the upload."""
    return ((n, state.part_bytes(n)) for n in range(1, state.part_count + 1))
