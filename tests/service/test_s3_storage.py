"""S3Storage against a real S3 API (moto's server): streaming, visibility, cache, failures."""

import asyncio
import hashlib
import os
import tracemalloc

import boto3
import pytest

from otrt_core.errors import TooLarge
from otrt_core.jobs.s3 import PART, S3Storage
from otrt_core.jobs.storage import StorageUnavailable
from tests.utils.s3 import s3_server

pytestmark = pytest.mark.services


@pytest.fixture
def storage(s3_endpoint, s3_bucket, tmp_path) -> S3Storage:
    return S3Storage(s3_bucket, "team/a", tmp_path / "cache", endpoint_url=s3_endpoint)


def chunks_of(data: bytes, size: int = 64 * 1024):
    async def chunks():
        for start in range(0, len(data), size):
            yield data[start : start + size]

    return chunks()


def receive(storage: S3Storage, key: str, data: bytes, limit: int = 1 << 40):
    return asyncio.run(storage.receive(key, chunks_of(data), limit))


def objects(storage: S3Storage) -> list[str]:
    listing = storage.client.list_objects_v2(Bucket=storage.bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


def pending_uploads(storage: S3Storage) -> list:
    return storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])


def test_an_upload_streams_in_parts_and_is_cached_by_its_sha256(storage):
    data = os.urandom(5 * PART + 12345)  # six parts, the last one short
    tracemalloc.start()
    stored = receive(storage, "uploads/file_1.npz", data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * PART < len(data)  # a few parts' worth in memory, never the whole file
    assert (stored.bytes, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert objects(storage) == ["team/a/uploads/file_1.npz"]
    head = storage.client.head_object(Bucket=storage.bucket, Key="team/a/uploads/file_1.npz")
    assert head["ETag"].strip('"').endswith("-6")  # S3's mark of a six-part upload
    # What the API inspects comes from the local copy made on the way, not a download.
    assert storage.fetch("uploads/file_1.npz", stored.sha256).read_bytes() == data


def test_a_small_upload_is_one_object_and_reads_back_by_range(storage):
    stored = receive(storage, "uploads/small.bin", b"0123456789")
    assert stored.bytes == 10
    assert b"".join(storage.stream("uploads/small.bin", 2, 5)) == b"234"
    assert storage.read_bytes("uploads/small.bin") == b"0123456789"


def test_an_upload_past_the_limit_leaves_nothing_in_the_bucket_or_the_cache(storage):
    with pytest.raises(TooLarge):
        receive(storage, "uploads/big.bin", os.urandom(2 * PART), limit=PART + 1)
    assert objects(storage) == [] and pending_uploads(storage) == []
    assert [p.name for p in storage.root.iterdir()] == ["sha256"]
    assert list((storage.root / "sha256").iterdir()) == []


def test_a_worker_downloads_once_and_checks_what_it_got(storage, tmp_path):
    source = tmp_path / "teacher.safetensors"
    source.write_bytes(os.urandom(1000))
    stored = storage.put("uploads/file_t.safetensors", source)
    worker = S3Storage(storage.bucket, "team/a", tmp_path / "host2", endpoint_url=storage.endpoint)
    local = worker.fetch(stored.key, stored.sha256)
    assert local.read_bytes() == source.read_bytes()
    storage.delete(stored.key)
    assert worker.fetch(stored.key, stored.sha256) == local  # the cache answers
    with pytest.raises(LookupError):
        worker.fetch(stored.key)  # no sha256 to look it up by: asks the store, which has none
    storage.put("uploads/other", source)
    with pytest.raises(StorageUnavailable, match="does not match its recorded sha256"):
        S3Storage(
            storage.bucket, "team/a", tmp_path / "host3", endpoint_url=storage.endpoint
        ).fetch("uploads/other", "0" * 64)


def test_rename_delete_and_listing_by_age(storage, tmp_path):
    receive(storage, "uploads/a.upload", b"abc")
    storage.rename("uploads/a.upload", "uploads/a.npz")
    assert objects(storage) == ["team/a/uploads/a.npz"]
    assert storage.modified_before("uploads", before=0) == []
    assert storage.modified_before("uploads", before=2e9) == ["uploads/a.npz"]
    target = tmp_path / "copy"
    assert storage.download("uploads/a.npz", target) and target.read_bytes() == b"abc"
    storage.delete("uploads/a.npz")
    storage.delete("uploads/a.npz")  # deleting what is gone is not an error
    assert not storage.download("uploads/a.npz", target)


def test_an_upload_cut_off_by_a_dead_process_is_aborted_by_the_orphan_sweep(storage):
    """A multipart upload never completed (its process killed) is invisible, but stored
    until aborted: the start-up sweep aborts those older than the grace period."""
    key = storage.object_key("uploads/file_dead.upload")
    storage.client.create_multipart_upload(Bucket=storage.bucket, Key=key)
    assert len(pending_uploads(storage)) == 1
    storage.modified_before("uploads", before=2e9)
    assert pending_uploads(storage) == []


def test_a_missing_bucket_is_named(s3_endpoint, tmp_path):
    storage = S3Storage("no-such-bucket", "", tmp_path, endpoint_url=s3_endpoint)
    with pytest.raises(StorageUnavailable, match="bucket 'no-such-bucket' does not exist"):
        storage.check()


def test_refused_credentials_are_named(tmp_path):
    with s3_server(tmp_path / "moto.log", check_credentials=True) as server:
        storage = S3Storage("any", "", tmp_path / "cache", endpoint_url=server.url)
        with pytest.raises(StorageUnavailable, match="credentials were refused"):
            storage.check()


def test_a_store_that_dies_mid_upload_is_a_clear_error_and_shows_nothing(tmp_path):
    with s3_server(tmp_path / "moto.log") as server:
        boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket="dying")
        storage = S3Storage("dying", "", tmp_path / "cache", endpoint_url=server.url)
        data = os.urandom(3 * PART)

        async def chunks():
            for part in range(3):
                if part == 1:  # the first part is in; the store goes away
                    server.process.kill()
                    server.process.wait()
                yield data[part * PART : (part + 1) * PART]

        with pytest.raises(StorageUnavailable, match="uploading uploads/x"):
            asyncio.run(storage.receive("uploads/x", chunks(), 1 << 40))
    assert list((storage.root / "sha256").iterdir()) == []
