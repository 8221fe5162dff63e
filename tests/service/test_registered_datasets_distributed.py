"""Registered datasets on the distributed service: `otrt api` and Celery workers on
PostgreSQL and Redis, the source an ImageFolder tree in a bucket of moto's S3 server.
A worker SIGKILLed mid-conversion loses nothing: the next attempt resumes."""

from __future__ import annotations

import os
import signal
import time

import boto3
import pytest

from tests.service.cluster import Cluster
from tests.service.conftest import emptied_redis_database
from tests.service.test_distributed import worker_pid
from tests.utils.images import image_tree

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
def bucket_tree(tmp_path, s3_bucket, s3_endpoint) -> str:
    """``s3://<bucket>/shop/``: 3 classes of generated JPEG/PNG images, 40 to 120 px."""
    local = tmp_path / "tree"
    image_tree(local, classes=3, per_class=40, sizes=(40, 120))
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for path in sorted(local.rglob("*.*")):
        s3.upload_file(str(path), s3_bucket, f"shop/{path.relative_to(local).as_posix()}")
    return f"s3://{s3_bucket}/shop/"


@pytest.fixture
def broker_url(redis_url: str) -> str:
    """An emptied Redis database of the real server, for one test."""
    return emptied_redis_database(redis_url, "datasets")


@pytest.fixture
def cluster(tmp_path, postgres_schema_url, broker_url, s3_endpoint, s3_bucket):
    env = {
        "OTRT_DATA_SOURCES": f"s3://{s3_bucket}/",
        "OTRT_S3_ENDPOINT_URL": s3_endpoint,
        "OTRT_MAX_DECODED_BYTES": "100000",  # every job streams
        "OTRT_DATASET_SHARD_BYTES": "20000",  # many small shards: many points to resume from
        "OTRT_LOADER_WORKERS": "1",
    }
    cluster = Cluster(tmp_path, postgres_schema_url, broker_url, env=env)
    yield cluster
    cluster.close()


def wait_dataset(cluster: Cluster, dataset_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while (dataset := cluster.client.get(f"/v1/datasets/{dataset_id}").json())["status"] not in (
        "ready",
        "failed",
    ):
        assert time.monotonic() < deadline, dataset
        time.sleep(0.3)
    return dataset


def test_a_bucket_is_converted_by_a_celery_worker_and_a_job_streams_it(cluster, bucket_tree):
    cluster.start_worker("w1")
    http = cluster.start_api()
    created = http.post("/v1/datasets", json={"source": bucket_tree, "name": "shop"})
    assert created.status_code == 202, created.text
    dataset = wait_dataset(cluster, created.json()["id"])
    assert dataset["status"] == "ready", dataset["error"]
    assert dataset["counts"]["train"] == {"class_0": 40, "class_1": 40, "class_2": 40}
    job = cluster.submit(
        {
            "mode": "supervised",
            "student": {"architecture": "cnn_small"},
            "dataset": {"name": dataset["id"], "image_size": 24},
            "training": {"epochs": 2, "batch_size": 16, "lr": 0.05},
        }
    )
    done = cluster.wait(job, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert cluster.wait_event(job, "started")["data"]["data_path"] == "streamed"
    # The job list shows training jobs only, not the conversion job.
    assert [j["id"] for j in http.get("/v1/jobs").json()["data"]] == [job]


def test_another_bucket_is_refused_and_a_missing_one_fails_the_dataset(cluster, s3_bucket):
    cluster.start_worker("w1")
    http = cluster.start_api()
    refused = http.post("/v1/datasets", json={"source": "s3://someone-else/shop/"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "source"]
    missing = http.post("/v1/datasets", json={"source": f"s3://{s3_bucket}/nothing-here/"})
    dataset = wait_dataset(cluster, missing.json()["id"])
    assert dataset["status"] == "failed" and dataset["error"]["code"] == "invalid_input"


def test_a_worker_killed_mid_conversion_loses_nothing_and_the_next_attempt_resumes(
    cluster, bucket_tree
):
    first = cluster.start_worker("w1")
    http = cluster.start_api()
    dataset_id = http.post("/v1/datasets", json={"source": bucket_tree}).json()["id"]
    deadline = time.monotonic() + 120
    while (dataset := http.get(f"/v1/datasets/{dataset_id}").json())["progress"].get(
        "done", 0
    ) < 40:
        assert time.monotonic() < deadline and dataset["status"] != "ready", dataset
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    cluster.start_worker("w2")
    dataset = wait_dataset(cluster, dataset_id)
    assert dataset["status"] == "ready", dataset["error"]
    assert dataset["counts"]["train"] == {"class_0": 40, "class_1": 40, "class_2": 40}
    events = http.get(f"/v1/datasets/{dataset_id}/events").json()
    workers = {e["data"]["worker"] for e in events if e["type"] == "running"}
    assert (
        len(workers) == 2
        and worker_pid(next(e for e in events if e["type"] == "running")) == first.pid
    )
    # The second attempt started where the first had stored shards, not at 0.
    starts = [e["data"]["done"] for e in events if e["type"] == "converting"]
    assert len(starts) == 2 and starts[1] > 0, starts
    # The snapshot is the one an uninterrupted conversion makes.
    again = http.post("/v1/datasets", json={"source": bucket_tree}).json()["id"]
    assert wait_dataset(cluster, again)["fingerprint"] == dataset["fingerprint"]
