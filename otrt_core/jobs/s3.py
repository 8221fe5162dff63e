"""Objects in an S3-compatible bucket (AWS S3, MinIO, moto's server), through boto3.

The interface is :class:`otrt_core.jobs.storage.Storage`'s. What it promises:

- an upload streams into a multipart upload, a part (:data:`PART`) at a time,
  never the whole file in memory; it becomes visible only when complete, and a
  failed one is aborted, so no reader sees half an object;
- what needs a file on disk gets one from a local cache keyed by sha256
  (``<cache>/sha256/<hex>``): a worker downloads a teacher or a dataset once,
  and the API keeps the copy it received for the inspector;
- every failure of the store itself (bucket missing, credentials refused,
  endpoint down) is a :class:`StorageUnavailable` that says which, never a
  botocore stack trace.

Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``, a profile, an instance role).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from otrt_core.data.sources import s3_client
from otrt_core.jobs.storage import (
    CHUNK,
    HashingWriter,
    StorageUnavailable,
    StoredObject,
    valid_key,
)

PART = 8 * 1024**2  # multipart upload part size (S3's minimum is 5 MiB)
TRANSFER = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
# Downloads in ranges of 64 MiB: 8 MiB ranges made a 200 MB download 4.4x slower on
# moto's server (3.0 s against 0.68 s), each range a request of its own.
DOWNLOAD = TransferConfig(multipart_threshold=64 * 1024**2, multipart_chunksize=64 * 1024**2)
PRESIGNED_SECONDS = 3600
COPY_OBJECT_BYTES = 5 * 1024**3  # the largest object one CopyObject copies
MISSING = ("404", "NoSuchKey", "NotFound")


class S3Storage:
    """Objects under ``prefix`` in ``bucket``; local copies under ``cache_dir``."""

    shared = True

    def __init__(
        self,
        bucket: str,
        prefix: str,
        cache_dir: Path,
        *,
        endpoint_url: str | None = None,
        presign: bool = False,
    ) -> None:
        self.bucket, self.prefix, self.presign = bucket, prefix.strip("/"), presign
        self.root = Path(cache_dir).resolve()
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        self.endpoint = endpoint_url or "AWS"
        self.client = s3_client(endpoint_url)

    @classmethod
    def from_url(cls, url: str, cache_dir: Path, **options) -> S3Storage:
        """``s3://bucket/prefix``."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageUnavailable(f"not an s3://bucket/prefix URL: {url!r}")
        return cls(parsed.netloc, parsed.path, cache_dir, **options)

    def location(self, prefix: str) -> str:
        """The ``s3://`` URI of the objects under ``prefix`` (a trainer reads them there)."""
        return f"s3://{self.bucket}/{self.object_key(prefix)}/"

    def object_key(self, key: str) -> str:
        relative = valid_key(key).as_posix()
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _relative(self, object_key: str) -> str:
        return object_key[len(self.prefix) + 1 :] if self.prefix else object_key

    @contextlib.contextmanager
    def translated(self, doing: str) -> Iterator[None]:
        """Turns the store's failures into :class:`StorageUnavailable` naming the cause."""
        try:
            yield
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket",) or (code in MISSING and "bucket" in doing):
                reason = f"bucket {self.bucket!r} does not exist at {self.endpoint}"
            elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                reason = f"the credentials were refused for bucket {self.bucket!r} ({code})"
            else:
                reason = f"{code or 'error'}: {error.response.get('Error', {}).get('Message')}"
            raise StorageUnavailable(f"object store: {doing}: {reason}") from None
        except (BotoCoreError, Boto3Error) as error:  # no credentials, endpoint down, timeouts
            # (boto3's managed transfers wrap those in S3UploadFailedError and the like)
            raise StorageUnavailable(f"object store: {doing}: {error}") from None

    def check(self) -> None:
        """Raises :class:`StorageUnavailable` unless the bucket exists and takes our keys."""
        with self.translated(f"checking the bucket {self.bucket!r}"):
            self.client.head_bucket(Bucket=self.bucket)

    # --- writing -------------------------------------------------------------------------

    async def receive(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> StoredObject:
        """Streams ``chunks`` to ``key`` part by part, hashing on the way, and keeps a local
        copy in the cache; :class:`TooLarge` past ``limit``, nothing left in the bucket."""
        upload = _MultipartUpload(self.client, self.bucket, self.object_key(key))
        with self._spool() as (spool, handle):
            writer, buffer = HashingWriter(handle, limit), bytearray()
            try:
                async for chunk in chunks:
                    buffer += chunk
                    if len(buffer) >= PART:
                        await asyncio.to_thread(self._send, upload, writer, bytes(buffer))
                        buffer.clear()
                await asyncio.to_thread(self._send, upload, writer, bytes(buffer), last=True)
            except BaseException:
                await asyncio.to_thread(upload.abort)
                raise
            stored = writer.stored(key)
            handle.close()
            os.replace(spool, self._cached(stored.sha256, key))
        return stored

    def _send(
        self, upload: _MultipartUpload, writer: HashingWriter, data: bytes, last: bool = False
    ) -> None:
        """Spools and hashes ``data``, then sends it as the upload's next part (its last,
        which completes the upload, with ``last``)."""
        writer.write(data)
        with self.translated(f"uploading {upload.key}"):
            if last:
                upload.finish(data)
            else:
                upload.part(data)

    def put(self, key: str, source: Path) -> StoredObject:
        """Uploads a local file as ``key`` (a multipart upload past :data:`PART`)."""
        sha256 = _sha256_of(source)
        with self.translated(f"uploading {key}"):
            self.client.upload_file(str(source), self.bucket, self.object_key(key), Config=TRANSFER)
        return StoredObject(key, Path(source).stat().st_size, sha256)

    def rename(self, key: str, new_key: str) -> None:
        """A copy inside the store, then the old key's deletion: one ``CopyObject`` up to
        S3's 5 GiB bound on it, a multipart copy past that."""
        with self.translated(f"renaming {key}"):
            source = {"Bucket": self.bucket, "Key": self.object_key(key)}
            size = self.client.head_object(**source)["ContentLength"]
            if size <= COPY_OBJECT_BYTES:
                self.client.copy_object(
                    CopySource=source, Bucket=self.bucket, Key=self.object_key(new_key)
                )
            else:
                self.client.copy(source, self.bucket, self.object_key(new_key), Config=TRANSFER)
            self.client.delete_object(**source)

    def delete(self, key: str) -> None:
        with self.translated(f"deleting {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def modified_before(self, prefix: str, before: float) -> list[str]:
        """Keys under ``prefix`` last written before ``before`` (seconds since the epoch).

        Also aborts the multipart uploads started under it before then: what an
        upload cut off by a killed process leaves (invisible, but stored).
        """
        found = [
            self._relative(item["Key"])
            for item in self._objects(prefix)
            if item["LastModified"].timestamp() < before
        ]
        with self.translated(f"listing {prefix}"):
            uploads = self.client.list_multipart_uploads(
                Bucket=self.bucket, Prefix=self.object_key(prefix) + "/"
            )
            for upload in uploads.get("Uploads", []):
                if upload["Initiated"].timestamp() < before:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
        return found

    def keys(self, prefix: str) -> list[str]:
        """Every stored key under ``prefix`` (multipart uploads in flight are not keys)."""
        return [self._relative(item["Key"]) for item in self._objects(prefix)]

    def _objects(self, prefix: str) -> list[dict]:
        """The listing of every stored object under ``prefix``, all pages."""
        with self.translated(f"listing {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.object_key(prefix) + "/"
            )
            return [item for page in pages for item in page.get("Contents", [])]

    # --- reading -------------------------------------------------------------------------

    def fetch(self, key: str, sha256: str | None = None) -> Path:
        """A local copy of ``key``: from the cache when ``sha256`` is there, else downloaded
        (and checked against ``sha256``). ``LookupError(key)`` when there is no object."""
        if sha256 and (cached := self._from_cache(sha256, key)):
            return cached
        return self._downloaded(key, sha256)[0]

    def described(self, key: str) -> StoredObject:
        """``key`` as a stored object (its size and sha256), read once into the cache, where
        a later ``fetch(key, sha256)`` finds it."""
        path, digest = self._downloaded(key, None)
        return StoredObject(key, path.stat().st_size, digest)

    def _downloaded(self, key: str, sha256: str | None) -> tuple[Path, str]:
        """``key`` downloaded into the cache and hashed on disk (checked against ``sha256``
        when given): the cached file and its sha256."""
        with self._spool() as (spool, handle):
            handle.close()
            if not self.download(key, spool):
                raise LookupError(key)
            digest = _sha256_of(spool)
            if sha256 and digest != sha256:
                message = f"object store: {key} does not match its recorded sha256"
                raise StorageUnavailable(message)
            os.replace(spool, self._cached(digest, key))
        return self._cached(digest, key), digest

    def download(self, key: str, target: Path) -> bool:
        """Downloads ``key`` to ``target`` (written aside, then renamed); False when missing."""
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.download")
        try:
            with self.translated(f"downloading {key}"):
                try:
                    self.client.download_file(
                        self.bucket, self.object_key(key), str(temp), Config=DOWNLOAD
                    )
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") in MISSING:
                        return False
                    raise
            os.replace(temp, target)
            return True
        finally:
            temp.unlink(missing_ok=True)

    def read_bytes(self, key: str) -> bytes:
        """A small object's content (a report); ``LookupError(key)`` when missing."""
        with self.translated(f"reading {key}"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))[
                    "Body"
                ].read()
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in MISSING:
                    raise LookupError(key) from None
                raise

    def chunks(self, key: str) -> Iterator[bytes]:
        """The whole of ``key``, a chunk at a time."""
        with self.translated(f"reading {key}"):
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        return response["Body"].iter_chunks(CHUNK)

    def stream(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of ``key``, a chunk at a time. The request
        is made now, so that a failing store fails before a response has begun."""
        if end <= start:
            return iter(())
        with self.translated(f"reading {key}"):
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.object_key(key), Range=f"bytes={start}-{end - 1}"
            )
        return response["Body"].iter_chunks(CHUNK)

    def presigned_url(self, key: str, filename: str) -> str:
        """A URL that downloads ``key`` as ``filename`` for :data:`PRESIGNED_SECONDS`."""
        with self.translated(f"signing {key}"):
            return self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self.object_key(key),
                    "ResponseContentDisposition": f'attachment; filename="{filename}"',
                },
                ExpiresIn=PRESIGNED_SECONDS,
            )

    # --- the local cache -----------------------------------------------------------------

    def _cached(self, sha256: str, key: str) -> Path:
        """The cache's file of that content under the key's suffix (what the inspector and
        the trainer read a file's kind from)."""
        return self.root / "sha256" / (sha256 + PurePosixPath(key).suffix)

    def _from_cache(self, sha256: str, key: str) -> Path | None:
        """The cached copy of that content for ``key``: linked from a copy of the same
        content under another suffix (an upload renamed) if that is all there is."""
        target = self._cached(sha256, key)
        if not target.is_file():
            sibling = next((self.root / "sha256").glob(f"{sha256}*"), None)
            if sibling is None:
                return None
            with contextlib.suppress(FileExistsError):  # another thread linked it first
                os.link(sibling, target)
        return target

    @contextlib.contextmanager
    def _spool(self) -> Iterator[tuple[Path, object]]:
        """A temporary file in the cache, removed unless renamed away."""
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".spool.", delete=False) as handle:
            path = Path(handle.name)
            try:
                yield path, handle
            finally:
                path.unlink(missing_ok=True)


class _MultipartUpload:
    """One object's upload: a single PUT when it fits in one part, else S3's multipart
    upload, created at the first full part and completed (or aborted) at the end."""

    def __init__(self, client, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    def part(self, data: bytes) -> None:
        if self.upload_id is None:
            created = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
            self.upload_id = created["UploadId"]
        number = len(self.parts) + 1
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def finish(self, data: bytes) -> None:
        if self.upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data)
            return
        if data:
            self.part(data)
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )

    def abort(self) -> None:
        """Drops the parts sent so far; best effort (the store may be what failed)."""
        if self.upload_id is None:
            return
        # When the store is what failed, remove_orphans aborts it later (modified_before).
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
