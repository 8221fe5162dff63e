"""Where an upload's parts wait until they are joined: one interface, two stores.

- :class:`ObjectParts` (a local store): each part is an object of its own
  (``upload-parts/{id}/{n}``) with a row recording its size and sha256;
  joining reads them back, in order, into one object.
- :class:`S3MultipartParts` (an S3 store): the upload is an S3 multipart
  upload, begun when the upload is; a part is one of its parts, PUT by the
  client straight to a presigned URL (``OTRT_S3_PRESIGN=on``) or through the
  service's part route, and S3 lists what it holds. Joining is S3's own
  ``CompleteMultipartUpload``: no byte of the parts crosses the service then;
  the whole is read once, to hash it and hand it to the inspector. S3 wants
  parts of at least 5 MiB but the last.

Either way a part must have exactly its size (the last one the rest): the
object store checks as it receives, S3 at joining, where a wrong part is a 422
that names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Protocol

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from otrt_core.atomic import writer
from otrt_core.errors import TooLarge
from otrt_core.jobs.refusals import Invalid, NotFound
from otrt_core.jobs.s3 import PRESIGNED_SECONDS, S3Storage
from otrt_core.jobs.storage import Storage, StoredObject
from otrt_core.jobs.tables import Upload, UploadPart

MIB = 1 << 20
S3_MIN_PART_SIZE = 5 * MIB  # S3's least part but the last


@dataclass(frozen=True)
class StoredPart:
    number: int
    bytes: int
    etag: str  # the part's sha256 (object store) or S3's ETag (its MD5)


class PartStore(Protocol):
    """The parts of uploads: begun, received, listed, joined and discarded."""

    min_part_size: int

    def begin(self, upload_id: str) -> str | None:
        """Prepares a new upload; the store's own id for it (S3's UploadId), if any."""

    def urls(self, upload: Upload, numbers: Iterable[int]) -> dict[int, str]:
        """Where the client PUTs each part directly; none: through the service's route."""

    def stored(self, upload: Upload) -> dict[int, StoredPart]:
        """The parts held so far, by number."""

    async def receive(
        self, upload: Upload, number: int, chunks: AsyncIterator[bytes], size: int
    ) -> StoredPart:
        """Stores part ``number``, which must have ``size`` bytes (422 otherwise)."""

    async def join(
        self, upload: Upload, sizes: dict[int, int], stored: dict[int, StoredPart]
    ) -> StoredObject:
        """The parts (``sizes``: number -> the size each must have; ``stored``: what
        :meth:`stored` listed, every one of them) as one object."""

    def discard(self, upload: Upload) -> None:
        """Frees what the upload holds (its parts, a joined object left behind)."""


def part_store(storage: Storage, sessions: sessionmaker[Session]) -> PartStore:
    """S3 multipart on an S3 store, objects of their own elsewhere."""
    if isinstance(storage, S3Storage):
        return S3MultipartParts(storage)
    return ObjectParts(storage, sessions)


def _prefix(upload_id: str) -> str:
    return f"upload-parts/{upload_id}"


def part_key(upload_id: str, number: int) -> str:
    return f"{_prefix(upload_id)}/{number:05d}"


def _wrong_size(number: int, has: int, size: int) -> Invalid:
    if has > size:
        return Invalid.at(["body"], f"part {number} is past the declared size: it has {size} bytes")
    return Invalid.at(["body"], f"part {number} has {has} bytes; it must have {size}")


class ObjectParts:
    """Each part an object of the store, recorded in ``upload_parts`` once whole."""

    min_part_size = 64 * 1024  # small enough to test resuming on a few MB

    def __init__(self, storage: Storage, sessions: sessionmaker[Session]) -> None:
        self.storage, self.sessions = storage, sessions

    def begin(self, upload_id: str) -> str | None:
        return None

    def urls(self, upload: Upload, numbers: Iterable[int]) -> dict[int, str]:
        return {}

    def stored(self, upload: Upload) -> dict[int, StoredPart]:
        with self.sessions() as session:
            rows = session.scalars(select(UploadPart).where(UploadPart.upload_id == upload.id))
            return {row.number: StoredPart(row.number, row.bytes, row.etag) for row in rows}

    async def receive(
        self, upload: Upload, number: int, chunks: AsyncIterator[bytes], size: int
    ) -> StoredPart:
        key = part_key(upload.id, number)
        try:
            stored = await self.storage.receive(key, chunks, size)
        except TooLarge:
            self.storage.delete(key)
            raise _wrong_size(number, size + 1, size) from None
        if stored.bytes != size:
            self.storage.delete(key)
            raise _wrong_size(number, stored.bytes, size)
        with self.sessions.begin() as session:
            if session.get(Upload, upload.id) is None:  # aborted meanwhile
                self.storage.delete(key)
                raise NotFound(f"no upload {upload.id}")
            row = UploadPart(upload_id=upload.id, number=number, bytes=size, etag=stored.sha256)
            session.merge(row)  # a part sent again replaces the first
        return StoredPart(number, size, stored.sha256)

    async def join(
        self, upload: Upload, sizes: dict[int, int], stored: dict[int, StoredPart]
    ) -> StoredObject:
        """Each part was checked for its size as it came: read back in order."""
        key = f"{_prefix(upload.id)}/whole{writer()}.upload"
        return await self.storage.receive(key, self._chunks(upload.id, sorted(sizes)), 1 << 62)

    async def _chunks(self, upload_id: str, numbers: list[int]) -> AsyncIterator[bytes]:
        """Every part's bytes in order, each read in a thread (never on the event loop)."""
        for number in numbers:
            chunks = await asyncio.to_thread(self.storage.chunks, part_key(upload_id, number))
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                yield chunk

    def discard(self, upload: Upload) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(UploadPart).where(UploadPart.upload_id == upload.id))
        for key in self.storage.keys(_prefix(upload.id)):
            self.storage.delete(key)


class S3MultipartParts:
    """An S3 multipart upload per upload, at ``upload-parts/{id}/whole``."""

    min_part_size = S3_MIN_PART_SIZE

    def __init__(self, storage: S3Storage) -> None:
        self.storage, self.client, self.bucket = storage, storage.client, storage.bucket

    def _whole(self, upload_id: str) -> str:
        return f"{_prefix(upload_id)}/whole"

    def _object(self, upload_id: str) -> str:
        return self.storage.object_key(self._whole(upload_id))

    def begin(self, upload_id: str) -> str | None:
        with self.storage.translated("beginning an upload"):
            answer = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self._object(upload_id)
            )
        return answer["UploadId"]

    def urls(self, upload: Upload, numbers: Iterable[int]) -> dict[int, str]:
        if not self.storage.presign:
            return {}
        params = {"Bucket": self.bucket, "Key": self._object(upload.id)}
        params["UploadId"] = upload.multipart_id
        with self.storage.translated(f"signing the parts of {upload.id}"):
            return {
                number: self.client.generate_presigned_url(
                    "upload_part",
                    Params=params | {"PartNumber": number},
                    ExpiresIn=PRESIGNED_SECONDS,
                )
                for number in numbers
            }

    def stored(self, upload: Upload) -> dict[int, StoredPart]:
        found: dict[int, StoredPart] = {}
        with self.storage.translated(f"listing the parts of {upload.id}"):
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=self._object(upload.id), UploadId=upload.multipart_id
            )
            try:
                for page in pages:
                    for part in page.get("Parts", []):
                        number = part["PartNumber"]
                        found[number] = StoredPart(number, part["Size"], part["ETag"].strip('"'))
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    raise NotFound(f"no upload {upload.id}") from None
                raise
        return found

    async def receive(
        self, upload: Upload, number: int, chunks: AsyncIterator[bytes], size: int
    ) -> StoredPart:
        """Spooled to a file (a part may be 512 MiB), then sent as that part."""
        with tempfile.TemporaryFile(dir=self.storage.root) as spool:
            received = 0
            async for chunk in chunks:
                received += len(chunk)
                if received > size:
                    raise _wrong_size(number, received, size)
                await asyncio.to_thread(spool.write, chunk)
            if received != size:
                raise _wrong_size(number, received, size)
            spool.seek(0)
            answer = await asyncio.to_thread(self._send, upload, number, spool)
        return StoredPart(number, size, answer["ETag"].strip('"'))

    def _send(self, upload: Upload, number: int, body) -> dict:
        with self.storage.translated(f"storing part {number} of {upload.id}"):
            return self.client.upload_part(
                Bucket=self.bucket,
                Key=self._object(upload.id),
                UploadId=upload.multipart_id,
                PartNumber=number,
                Body=body,
            )

    async def join(
        self, upload: Upload, sizes: dict[int, int], stored: dict[int, StoredPart]
    ) -> StoredObject:
        """S3 joins the parts in place once each has its size; the whole is then read
        once, into the local cache, for its sha256."""
        for number, size in sorted(sizes.items()):
            if stored[number].bytes != size:
                raise _wrong_size(number, stored[number].bytes, size)
        parts = [{"PartNumber": n, "ETag": f'"{stored[n].etag}"'} for n in sorted(sizes)]
        with self.storage.translated(f"joining the parts of {upload.id}"):
            await asyncio.to_thread(
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=self._object(upload.id),
                UploadId=upload.multipart_id,
                MultipartUpload={"Parts": parts},
            )
        return await asyncio.to_thread(self.storage.described, self._whole(upload.id))

    def discard(self, upload: Upload) -> None:
        """Aborts the multipart upload (gone already once joined) and deletes the whole."""
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._object(upload.id), UploadId=upload.multipart_id
            )
        self.storage.delete(self._whole(upload.id))
