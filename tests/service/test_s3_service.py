"""The whole service on an S3 store (moto's server): upload, train, download, failures;
and a download whose local file is gone."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import boto3
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

from otrt.wiring import build_embedded
from otrt_core.settings import Settings
from tests.utils.processes import free_port
from tests.utils.s3 import keys_in, s3_server

pytestmark = pytest.mark.services


def settings_for(tmp_path, endpoint: str, bucket: str, **extra) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        storage_url=f"s3://{bucket}/otrt",
        s3_endpoint_url=endpoint,
        heartbeat_seconds=0.5,
        torch_threads=1,
        **extra,
    )


def digits_npz() -> bytes:
    digits = load_digits()
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=(digits.images / 16.0).astype(np.float32)[:, None],
        y_train=digits.target,
    )
    return buffer.getvalue()


def wait_done(client: TestClient, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    return job


def test_a_job_runs_from_and_publishes_to_the_bucket(tmp_path, s3_endpoint, s3_bucket):
    embedded = build_embedded(settings_for(tmp_path, s3_endpoint, s3_bucket))
    embedded.executor.start()
    try:
        client = TestClient(embedded.app)
        data = digits_npz()
        uploaded = client.post(
            "/v1/files?purpose=dataset", content=data, headers={"X-Filename": "digits.npz"}
        )
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["details"]["num_classes"] == 10  # inspected from the cached copy
        spec = {
            "mode": "supervised",
            "student": {"architecture": "mlp_small"},
            "dataset": {"name": uploaded.json()["id"]},
            "training": {"epochs": 2, "batch_size": 64},
        }
        created = client.post("/v1/jobs", json=spec)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        job = wait_done(client, job_id)
        assert job["status"] == "succeeded", job
    finally:
        embedded.executor.shutdown()

    keys = keys_in(s3_endpoint, s3_bucket)
    assert f"otrt/uploads/{uploaded.json()['id']}.npz" in keys
    assert f"otrt/artifacts/{job_id}/student.onnx" in keys
    assert not [k for k in keys if k.startswith("otrt/checkpoints/")]  # removed at the end
    artifacts = {a["name"]: a for a in client.get(f"/v1/jobs/{job_id}/artifacts").json()}
    whole = client.get(f"/v1/jobs/{job_id}/artifacts/student.onnx")
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == artifacts["student.onnx"]["sha256"]
    assert whole.headers["etag"] == f'"{artifacts["student.onnx"]["sha256"]}"'
    part = client.get(f"/v1/jobs/{job_id}/artifacts/student.onnx", headers={"Range": "bytes=10-29"})
    assert part.status_code == 206 and part.content == whole.content[10:30]
    assert part.headers["content-range"] == f"bytes 10-29/{len(whole.content)}"
    report = client.get(f"/v1/jobs/{job_id}/report")
    assert (
        report.status_code == 200
        and report.json()["test_accuracy"] == job["metrics"]["test_accuracy"]
    )
    stored = client.get(f"/v1/jobs/{job_id}/artifacts/report.json").content
    assert report.content == stored  # one document: the route adds no nulls

    presigned = TestClient(
        build_embedded(settings_for(tmp_path, s3_endpoint, s3_bucket, s3_presign="on")).app
    )
    redirect = presigned.get(f"/v1/jobs/{job_id}/artifacts/student.onnx", follow_redirects=False)
    assert redirect.status_code == 307
    assert httpx.get(redirect.headers["location"]).content == whole.content


def test_an_upload_while_the_store_is_down_is_503_and_records_nothing(tmp_path):
    with s3_server(tmp_path / "moto.log") as server:
        boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket="going-down")
        client = TestClient(build_embedded(settings_for(tmp_path, server.url, "going-down")).app)
        server.process.kill()
        server.process.wait()
        answer = client.post(
            "/v1/files?purpose=dataset", content=digits_npz(), headers={"X-Filename": "d.npz"}
        )
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "retry-after" in answer.headers and "store" in answer.json()["detail"]
    assert "going-down" not in answer.text  # the bucket is the operator's business
    assert client.get("/v1/files").json()["data"] == []


def test_a_server_on_a_missing_bucket_refuses_to_start_and_says_why(tmp_path, s3_endpoint):
    env = os.environ | {
        "OTRT_DATA_DIR": str(tmp_path),
        "OTRT_STORAGE_URL": "s3://no-such-bucket/otrt",
        "OTRT_S3_ENDPOINT_URL": s3_endpoint,
    }
    command = [sys.executable, "-m", "otrt", "serve", "--port", str(free_port())]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "bucket 'no-such-bucket' does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_store_down_mid_job_loses_no_job(tmp_path):
    """The store goes away while a job trains (its checkpoint pushes fail, logged) and
    comes back (empty: moto keeps nothing) before the end: the job goes on and
    publishes its artifacts."""
    with s3_server(tmp_path / "moto.log") as server:
        port = int(server.url.rsplit(":", 1)[1])
        boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket="flaky")
        embedded = build_embedded(settings_for(tmp_path, server.url, "flaky"))
        embedded.executor.start()
        client = TestClient(embedded.app)
        spec = {
            "mode": "supervised",
            "student": {"architecture": "mlp_small"},
            "dataset": {"name": "digits"},
            "training": {"epochs": 40, "batch_size": 32},
        }
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        wait_for_epochs(client, job_id, 2)
        server.process.kill()
        server.process.wait()
    try:
        wait_for_epochs(client, job_id, 6)  # trains on with the store down
        with s3_server(tmp_path / "moto-again.log", port=port) as again:
            boto3.client("s3", endpoint_url=again.url).create_bucket(Bucket="flaky")
            job = wait_done(client, job_id)
            assert job["status"] == "succeeded" and job["attempt"] == 1, job
            assert f"otrt/artifacts/{job_id}/student.onnx" in keys_in(again.url, "flaky")
    finally:
        embedded.executor.shutdown()


def wait_for_epochs(client: TestClient, job_id: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (
        len([e for e in client.get(f"/v1/jobs/{job_id}/events").json() if e["type"] == "epoch"])
        < count
    ):
        assert time.monotonic() < deadline, client.get(f"/v1/jobs/{job_id}").json()
        time.sleep(0.2)


def test_an_artifact_whose_local_file_was_removed_is_404_not_500(tmp_path):
    embedded = build_embedded(Settings(data_dir=tmp_path, heartbeat_seconds=0.5, torch_threads=1))
    embedded.executor.start()
    try:
        client = TestClient(embedded.app)
        spec = {
            "mode": "supervised",
            "student": {"architecture": "mlp_small"},
            "dataset": {"name": "digits"},
            "training": {"epochs": 1},
        }
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        assert wait_done(client, job_id)["status"] == "succeeded"
    finally:
        embedded.executor.shutdown()
    (tmp_path / "store" / "artifacts" / job_id / "student.onnx").unlink()
    answer = client.get(f"/v1/jobs/{job_id}/artifacts/student.onnx")
    assert answer.status_code == 404 and "is gone" in answer.json()["detail"]


def large_npz(copies: int) -> bytes:
    """Digits repeated ``copies`` times: an npz past S3's 5 MiB least part."""
    digits = load_digits()
    buffer = io.BytesIO()
    images = np.tile((digits.images / 16.0).astype(np.float32)[:, None], (copies, 1, 1, 1))
    np.savez(buffer, x_train=images, y_train=np.tile(digits.target, copies))
    return buffer.getvalue()


def multipart_uploads(endpoint: str, bucket: str) -> list[dict]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_an_upload_in_parts_is_an_s3_multipart_upload_sent_to_presigned_urls(
    tmp_path, s3_endpoint, s3_bucket
):
    """Uploads in parts on S3 (moto's server) with presigning on: each part has a
    presigned URL the client PUTs to without the service's credentials, or goes
    through the service's part route into the same multipart upload; a resumed upload
    gets URLs for its missing parts; S3 joins the parts in place; a part of the wrong
    size is named at completion; an expired upload's multipart upload is aborted."""
    embedded = build_embedded(settings_for(tmp_path, s3_endpoint, s3_bucket, s3_presign="on"))
    client = TestClient(embedded.app)
    data, part = large_npz(24), 5 * 1024**2
    assert 2 * part < len(data) < 3 * part
    body = {"filename": "digits.npz", "size": len(data), "part_size": part}
    answer = client.post("/v1/uploads", json=body | {"sha256": hashlib.sha256(data).hexdigest()})
    assert answer.status_code == 201, answer.text
    upload = answer.json()
    urls = {p["number"]: p["url"] for p in upload["parts"]}
    assert all(url.startswith(s3_endpoint) for url in urls.values()), urls
    assert httpx.put(urls[1], content=data[:part]).status_code == 200  # no Authorization
    through = client.put(f"/v1/uploads/{upload['id']}/parts/2", content=data[part : 2 * part])
    assert through.status_code == 200, through.text

    resumed = client.get(f"/v1/uploads/{upload['id']}").json()
    assert [p["number"] for p in resumed["stored"]] == [1, 2]
    assert [p["number"] for p in resumed["parts"] if p.get("url")] == [3]
    assert not [key for key in keys_in(s3_endpoint, s3_bucket) if "upload-parts/" in key]
    last = resumed["parts"][2]
    assert httpx.put(last["url"], content=data[2 * part :]).status_code == 200
    done = client.post(f"/v1/uploads/{upload['id']}/complete")
    assert done.status_code == 201, done.text
    assert done.json()["format"] == "npz" and done.json()["bytes"] == len(data)
    stored = keys_in(s3_endpoint, s3_bucket)
    assert not [key for key in stored if "upload-parts/" in key]
    assert any(key.endswith(f"uploads/{done.json()['id']}.npz") for key in stored)
    assert not multipart_uploads(s3_endpoint, s3_bucket)

    short = client.post("/v1/uploads", json=body).json()
    for number, start in ((1, 0), (2, part), (3, 2 * part)):
        chunk = data[start : start + part]
        sent = httpx.put(
            short["parts"][number - 1]["url"], content=chunk[:-1] if number == 2 else chunk
        )
        assert sent.status_code == 200
    wrong = client.post(f"/v1/uploads/{short['id']}/complete")
    assert wrong.status_code == 422 and "part 2 has" in wrong.json()["detail"], wrong.text

    forgotten = client.post("/v1/uploads", json=body).json()["id"]
    client.put(f"/v1/uploads/{forgotten}/parts/1", content=data[:part])
    service = embedded.app.state.service
    later = datetime.now(UTC) + timedelta(days=2)
    assert set(service.uploads.expire(later)) == {short["id"], forgotten}
    assert client.get(f"/v1/uploads/{forgotten}").status_code == 404
    assert not multipart_uploads(s3_endpoint, s3_bucket)
    assert not [key for key in keys_in(s3_endpoint, s3_bucket) if "upload-parts/" in key]
    tiny = client.post("/v1/uploads", json=body | {"part_size": 65536})
    assert tiny.status_code == 422 and "at least 5242880" in tiny.json()["detail"]
