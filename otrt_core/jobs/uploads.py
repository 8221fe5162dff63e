"""Uploads in parts (API.md v1.3): a file of any size sent as numbered parts, resumably.

An upload declares its size (and, optionally, its sha256) and gets a part size;
part ``n`` (from 1) covers bytes ``[(n - 1) * part_size, n * part_size)`` of the
whole, the last one the rest. Where the parts wait is the part store's affair
(``upload_parts``: objects of their own on a local store, an S3 multipart upload
on S3, with presigned URLs when the client may reach the bucket). A client that
stopped asks which parts are stored and sends only the others; a part sent again
replaces the first. Completing joins the parts, in order, into one upload that is
checked and recorded like any ``POST /v1/files`` (purpose ``dataset``), then
frees them. Nothing is decoded here: the converter bounds memory per image, so
the only limit on the whole is ``OTRT_MAX_PUSH_BYTES``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from otrt_core.jobs.refusals import Invalid, NotFound, PayloadTooLarge
from otrt_core.jobs.storage import Storage, StoredObject
from otrt_core.jobs.store import new_id
from otrt_core.jobs.tables import StoredFile, Upload
from otrt_core.jobs.upload_parts import PartStore, StoredPart, part_store

MIB = 1 << 20
DEFAULT_PART_SIZE = 16 * MIB
MIN_PART_SIZE = 64 * 1024  # the least any store takes (S3 wants 5 MiB: see upload_parts)
MAX_PART_SIZE = 512 * MIB
MAX_PARTS = 10_000  # S3's bound on a multipart upload
UPLOAD_SUFFIXES = (".zip", ".npz")  # what POST /v1/datasets registers from a file


@dataclass(frozen=True)
class UploadState:
    """An upload, the parts stored so far (by number) and where the client PUTs each
    part directly (by number; none: through the service's part route)."""

    upload: Upload
    stored: dict[int, StoredPart]
    urls: dict[int, str] = field(default_factory=dict)

    @property
    def part_count(self) -> int:
        return part_count(self.upload.bytes, self.upload.part_size)

    def part_bytes(self, number: int) -> int:
        """The size part ``number`` must have: ``part_size``, the last one the rest."""
        if number < self.part_count:
            return self.upload.part_size
        return self.upload.bytes - (self.part_count - 1) * self.upload.part_size

    @property
    def sizes(self) -> dict[int, int]:
        return {n: self.part_bytes(n) for n in range(1, self.part_count + 1)}

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
        self.sessions, self.accept = sessions, accept
        self.parts: PartStore = part_store(storage, sessions)
        self.max_push_bytes, self.expiry = max_push_bytes, expiry

    def create(
        self, owner: str, filename: str, size: int, sha256: str | None, part_size: int | None
    ) -> UploadState:
        if not filename.lower().endswith(UPLOAD_SUFFIXES):
            raise Invalid.at(["body", "filename"], "datasets are .npz or ImageFolder .zip")
        if size > self.max_push_bytes:
            raise PayloadTooLarge(f"{size} bytes exceed the limit of {self.max_push_bytes} bytes")
        least = self.parts.min_part_size
        if part_size is not None and part_size < least and size > part_size:
            raise Invalid.at(
                ["body", "part_size"], f"this store takes parts of at least {least} bytes"
            )
        part_size = part_size or max(DEFAULT_PART_SIZE, -(-size // MAX_PARTS))
        if part_count(size, part_size) > MAX_PARTS:
            smallest = -(-size // MAX_PARTS)
            raise Invalid.at(
                ["body", "part_size"],
                f"{size} bytes in parts of {part_size} make over {MAX_PARTS} parts; "
                f"use parts of at least {smallest} bytes",
            )
        upload_id = new_id("upl")
        upload = Upload(
            id=upload_id,
            owner=owner,
            filename=filename,
            bytes=size,
            sha256=sha256,
            part_size=part_size,
            multipart_id=self.parts.begin(upload_id),
            expires_at=datetime.now(UTC) + self.expiry,
        )
        with self.sessions.begin() as session:
            session.add(upload)
        numbers = range(1, part_count(size, part_size) + 1)
        return UploadState(upload, {}, self.parts.urls(upload, numbers))

    def state(self, owner: str, upload_id: str) -> UploadState:
        """The upload, its stored parts and fresh URLs for the missing ones."""
        upload = self._upload(owner, upload_id)
        state = UploadState(upload, self.parts.stored(upload))
        return replace(state, urls=self.parts.urls(upload, state.missing))

    def _upload(self, owner: str, upload_id: str) -> Upload:
        with self.sessions() as session:
            upload = session.get(Upload, upload_id)
            if upload is None or upload.owner != owner:
                raise NotFound(f"no upload {upload_id}")
            return upload

    async def receive_part(
        self, owner: str, upload_id: str, number: int, chunks: AsyncIterator[bytes]
    ) -> StoredPart:
        """Stores part ``number``; 422 when it is not one of the upload's parts or is not
        exactly its size (a part past the declared size included)."""
        upload = await asyncio.to_thread(self._upload, owner, upload_id)
        state = UploadState(upload, {})
        if not 1 <= number <= state.part_count:
            raise Invalid.at(
                ["path", "number"], f"part {number} is not one of 1-{state.part_count}"
            )
        return await self.parts.receive(upload, number, chunks, state.part_bytes(number))

    async def complete(self, owner: str, upload_id: str) -> StoredFile:
        """The parts, in order, as one checked and recorded file; the parts are freed."""
        upload = await asyncio.to_thread(self._upload, owner, upload_id)
        state = UploadState(upload, await asyncio.to_thread(self.parts.stored, upload))
        if missing := state.missing:
            shown = ", ".join(map(str, missing[:20])) + (" …" if len(missing) > 20 else "")
            raise Invalid.at(["body"], f"parts missing: {shown} (of {state.part_count})")
        whole = await self.parts.join(upload, state.sizes, state.stored)
        if upload.sha256 and whole.sha256 != upload.sha256.lower():
            await asyncio.to_thread(self._forget, upload)
            raise Invalid.at(
                ["body", "sha256"],
                f"the parts' sha256 is {whole.sha256}, not the declared {upload.sha256}; "
                "the upload is aborted",
            )
        record = await asyncio.to_thread(
            self.accept, owner, "dataset", upload.filename, new_id("file"), whole
        )
        await asyncio.to_thread(self._forget, upload)
        return record

    def abort(self, owner: str, upload_id: str) -> None:
        self._forget(self._upload(owner, upload_id))

    def expire(self, now: datetime | None = None) -> list[str]:
        """Aborts every upload past its ``expires_at``; returns their ids."""
        with self.sessions() as session:
            expired = list(
                session.scalars(
                    select(Upload).where(Upload.expires_at < (now or datetime.now(UTC)))
                )
            )
        for upload in expired:
            self._forget(upload)
        return [upload.id for upload in expired]

    def _forget(self, upload: Upload) -> None:
        # The row first: a part arriving meanwhile then finds no upload and is not kept.
        with self.sessions.begin() as session:
            session.execute(delete(Upload).where(Upload.id == upload.id))
        self.parts.discard(upload)


def planned_parts(state: UploadState) -> Iterator[tuple[int, int]]:
    """(number, bytes) of every part of the upload."""
    return iter(state.sizes.items())
