"""Fault tests of the distributed shape: real PostgreSQL, Redis, `otrt api` and Celery workers.

Bounded in time (leases of 3 s, heartbeats of 0.5 s, re-dispatch after 5 s)
and marked slow; CI runs them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import redis

from tests.service.cluster import Cluster
from tests.service.conftest import emptied_redis_database
from tests.utils.processes import free_port, pid_gone
from tests.utils.s3 import keys_in

pytestmark = [pytest.mark.slow, pytest.mark.services]

TINY = {
    "mode": "supervised",
    "student": {"architecture": "mlp_small"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 1, "batch_size": 256},
}
# About a second per epoch on this machine: long enough to be caught mid-run.
MEDIUM = {
    "mode": "supervised",
    "student": {"architecture": "cnn"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 8, "batch_size": 16},
}
LONG = MEDIUM | {"training": {"epochs": 500, "batch_size": 16}}


@pytest.fixture
def broker_url(redis_url: str) -> str:
    """An emptied Redis database of the real server, for one test."""
    return emptied_redis_database(redis_url, "distributed")


@pytest.fixture
def cluster(tmp_path, postgres_schema_url, broker_url):
    cluster = Cluster(tmp_path, postgres_schema_url, broker_url)
    yield cluster
    cluster.close()


def worker_pid(event: dict) -> int:
    """The worker process holding an attempt, from its `running` event (celery-<host>-<pid>)."""
    return int(event["data"]["worker"].rsplit("-", 1)[1])


def assert_resumed_once(cluster: Cluster, job_id: str) -> None:
    """The MEDIUM job, whose first worker was killed after 2 epochs, succeeded on its
    second attempt, resumed there, with each of its 8 epochs recorded once."""
    job = cluster.wait(job_id, {"succeeded", "failed"})
    assert job["status"] == "succeeded" and job["attempt"] == 2, job
    second = cluster.wait_event(job_id, "started", count=2)["data"]
    assert second["resumed"] and second["epoch"] >= 2
    epochs = [m["epoch"] for m in cluster.client.get(f"/v1/jobs/{job_id}/metrics").json()]
    assert epochs == list(range(1, 9))  # continuous, each epoch once
    assert [e["type"] for e in cluster.events(job_id)].count("succeeded") == 1


def test_a_sigkilled_worker_s_job_resumes_on_another_and_succeeds_once(cluster):
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    cluster.start_api()
    job_id = cluster.submit(MEDIUM)
    running = cluster.wait_event(job_id, "running")
    trainer = cluster.wait_event(job_id, "started")["data"]["pid"]
    cluster.wait_event(job_id, "epoch", count=2)
    os.kill(worker_pid(running), signal.SIGKILL)
    assert pid_gone(trainer, within=60), "the orphaned trainer kept running"

    assert_resumed_once(cluster, job_id)
    names = [a["name"] for a in cluster.client.get(f"/v1/jobs/{job_id}/artifacts").json()]
    assert sorted(names) == sorted(set(names)) and "student.safetensors" in names


def test_two_workers_run_each_of_many_jobs_exactly_once(cluster):
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    cluster.start_api()
    job_ids = [cluster.submit(TINY) for _ in range(10)]
    for job_id in job_ids:
        job = cluster.wait(job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded" and job["attempt"] == 1, job
        types = [e["type"] for e in cluster.events(job_id)]
        assert types.count("running") == 1 and types.count("succeeded") == 1
        names = [a["name"] for a in cluster.client.get(f"/v1/jobs/{job_id}/artifacts").json()]
        assert len(names) == len(set(names)) >= 4
    workers = {cluster.wait_event(j, "running")["data"]["worker"] for j in job_ids}
    assert len(workers) == 2  # both took jobs


def test_cancel_reaches_a_job_on_a_worker_and_its_trainer_is_gone(cluster):
    """How fast is a figure of bench/queue_load.py, not a bound here (timeouts only catch hangs)."""
    cluster.start_worker("w1")
    cluster.start_api()
    job_id = cluster.submit(LONG)
    trainer = cluster.wait_event(job_id, "started")["data"]["pid"]
    assert cluster.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    assert cluster.wait(job_id, {"cancelled", "failed", "succeeded"})["status"] == "cancelled"
    assert pid_gone(trainer, within=60)


def test_restarting_the_api_changes_nothing_for_a_running_job(cluster):
    cluster.start_worker("w1")
    cluster.start_api()
    job_id = cluster.submit(MEDIUM)
    cluster.wait_event(job_id, "epoch")
    cluster.stop_api()
    cluster.start_api()
    job = cluster.wait(job_id, {"succeeded", "failed"})
    assert job["status"] == "succeeded" and job["attempt"] == 1


def test_restarting_redis_loses_no_queued_or_running_job(tmp_path, postgres_schema_url):
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()

    def start_redis() -> subprocess.Popen:
        command = [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--dir",
            str(data),
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                return process
            except redis.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("redis-server did not start")

    server = start_redis()
    cluster = Cluster(tmp_path, postgres_schema_url, f"redis://127.0.0.1:{port}/0")
    try:
        cluster.start_worker("w1")
        cluster.start_api()
        job_ids = [cluster.submit(MEDIUM)] + [cluster.submit(TINY) for _ in range(3)]
        cluster.wait_event(job_ids[0], "epoch")  # one running, three queued in Redis
        server.terminate()
        server.wait(timeout=30)
        time.sleep(1)
        server = start_redis()
        for job_id in job_ids:
            job = cluster.wait(job_id, {"succeeded", "failed"}, timeout=240)
            assert job["status"] == "succeeded", job
            types = [e["type"] for e in cluster.events(job_id)]
            assert types.count("succeeded") == 1
    finally:
        cluster.close()
        server.terminate()
        server.wait(timeout=30)


def test_readyz_reports_the_broker(cluster):
    cluster.start_api()
    checks = cluster.client.get("/readyz").json()["checks"]
    assert checks == {"database": "ok", "broker": "ok"}


def test_a_worker_stopped_with_sigterm_checkpoints_and_requeues_its_job(cluster):
    worker = cluster.start_worker("w1")
    cluster.start_api()
    job_id = cluster.submit(LONG)
    trainer = cluster.wait_event(job_id, "started")["data"]["pid"]
    cluster.wait_event(job_id, "epoch")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    assert pid_gone(trainer, within=60)
    job = cluster.job(job_id)
    assert job["status"] == "queued" and job["attempt"] == 1, cluster.events(job_id)
    cluster.start_worker("w2")
    resumed = cluster.wait_event(job_id, "started", count=2)["data"]
    assert resumed["resumed"] and resumed["epoch"] >= 1
    assert cluster.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    assert cluster.wait(job_id, {"cancelled"}, timeout=30)["status"] == "cancelled"


def test_owners_take_turns_on_celery_workers(cluster):
    """Owner a queues four jobs before owner b queues one: b's starts within two starts."""
    cluster.env["OTRT_AUTH"] = "on"
    keys = {}
    for name in ("a", "b"):
        created = subprocess.run(
            cluster._otrt("keys", "create", "--name", name),
            env=cluster.env,
            capture_output=True,
            text=True,
            check=True,
        )
        keys[name] = {"Authorization": f"Bearer {created.stdout.strip()}"}
    client = cluster.start_api()
    a_jobs = [client.post("/v1/jobs", json=TINY, headers=keys["a"]).json()["id"] for _ in range(4)]
    b_job = client.post("/v1/jobs", json=TINY, headers=keys["b"]).json()["id"]
    cluster.start_worker("w1")  # every job is queued when the only worker starts

    def finished(job_id: str, owner: str) -> dict:
        deadline = time.monotonic() + 180
        while (job := client.get(f"/v1/jobs/{job_id}", headers=keys[owner]).json())[
            "status"
        ] != "succeeded":
            assert time.monotonic() < deadline, (job, cluster.log("w1.log"))
            time.sleep(0.3)
        return job

    b_started = finished(b_job, "b")["started_at"]
    a_started = [finished(job_id, "a")["started_at"] for job_id in a_jobs[:2]]
    assert a_started[0] < b_started < a_started[1]


def test_jobs_queued_when_redis_loses_its_data_still_run_once(cluster, broker_url):
    """The DB is the truth: messages wiped from Redis are re-sent by the reaper."""
    cluster.start_api()
    job_ids = [cluster.submit(TINY) for _ in range(3)]
    redis.Redis.from_url(broker_url).flushdb()  # every message is gone
    cluster.start_worker("w1")
    for job_id in job_ids:
        job = cluster.wait(job_id, {"succeeded", "failed"}, timeout=240)
        assert job["status"] == "succeeded" and job["attempt"] == 1, job
        types = [e["type"] for e in cluster.events(job_id)]
        assert types.count("running") == 1 and types.count("succeeded") == 1


def test_a_worker_on_another_host_resumes_from_the_checkpoint_in_the_shared_store(
    tmp_path, postgres_schema_url, broker_url, s3_endpoint, s3_bucket
):
    """Two "hosts" (separate data directories) share only the database, the broker and an
    S3 bucket: the second resumes the job of the first, SIGKILLed, from the checkpoint
    pushed to the bucket after each epoch."""
    store = {"OTRT_STORAGE_URL": f"s3://{s3_bucket}/otrt", "OTRT_S3_ENDPOINT_URL": s3_endpoint}
    cluster = Cluster(tmp_path, postgres_schema_url, broker_url, env=store)
    try:
        cluster.start_worker("w1", env={"OTRT_DATA_DIR": str(tmp_path / "host1")})
        cluster.start_api()
        job_id = cluster.submit(MEDIUM)
        running = cluster.wait_event(job_id, "running")
        cluster.wait_event(job_id, "epoch", count=2)
        checkpoint = f"otrt/checkpoints/{job_id}/checkpoint.pt"
        assert checkpoint in keys_in(s3_endpoint, s3_bucket)
        os.kill(worker_pid(running), signal.SIGKILL)
        cluster.start_worker("w2", env={"OTRT_DATA_DIR": str(tmp_path / "host2")})

        assert_resumed_once(cluster, job_id)
        assert (tmp_path / "host1" / "work" / job_id / "checkpoint.pt").exists()  # host 1's own
        assert checkpoint not in keys_in(s3_endpoint, s3_bucket)  # the job's end removed it
        student = cluster.client.get(f"/v1/jobs/{job_id}/artifacts/student.safetensors")
        assert student.status_code == 200 and len(student.content) > 0
    finally:
        cluster.close()


def test_a_sweep_outlives_a_sigkilled_worker_and_runs_each_trial_to_success_once(cluster):
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    client = cluster.start_api()
    body = {"base": MEDIUM, "space": {"training.lr": [0.01, 0.02, 0.03, 0.04]}, "search": "grid"}
    response = client.post("/v1/sweeps", json=body | {"parallel": 2})
    assert response.status_code == 201, response.text
    sweep_id = response.json()["id"]
    first = response.json()["trials"][0]["job_id"]
    running = cluster.wait_event(first, "running")
    cluster.wait_event(first, "epoch", count=2)
    os.kill(worker_pid(running), signal.SIGKILL)  # mid-trial, mid-sweep
    cluster.start_worker("w3")

    deadline = time.monotonic() + 300
    while (sweep := client.get(f"/v1/sweeps/{sweep_id}").json())["status"] == "running":
        assert time.monotonic() < deadline, sweep
        time.sleep(1)
    assert sweep["status"] == "succeeded", sweep
    jobs = client.get(f"/v1/jobs?sweep={sweep_id}").json()["data"]
    assert len(jobs) == 4 and {j["status"] for j in jobs} == {"succeeded"}
    assert sorted(j["spec"]["training"]["lr"] for j in jobs) == [0.01, 0.02, 0.03, 0.04]
    assert_resumed_once(cluster, first)
    for job in jobs:
        assert [e["type"] for e in cluster.events(job["id"])].count("succeeded") == 1
    events = client.get(f"/v1/sweeps/{sweep_id}/events").json()
    assert [e["type"] for e in events].count("job") == 4  # each trial's end noted once


def test_a_worker_killed_mid_epoch_resumes_elsewhere_from_inside_the_epoch(
    tmp_path, postgres_schema_url, broker_url, s3_endpoint, s3_bucket
):
    """Checkpoints inside an epoch (OTRT_CHECKPOINT_SECONDS) reach the shared store as
    they are written: a worker SIGKILLed in the first epoch of a long one leaves the
    next host a checkpoint inside it, not the epoch's start."""
    store = {
        "OTRT_STORAGE_URL": f"s3://{s3_bucket}/otrt",
        "OTRT_S3_ENDPOINT_URL": s3_endpoint,
        "OTRT_CHECKPOINT_SECONDS": "0.5",
    }
    cluster = Cluster(tmp_path, postgres_schema_url, broker_url, env=store)
    one_long_epoch = MEDIUM | {"training": {"epochs": 2, "batch_size": 2}}  # ~800 steps each
    try:
        cluster.start_worker("w1", env={"OTRT_DATA_DIR": str(tmp_path / "host1")})
        cluster.start_api()
        job_id = cluster.submit(one_long_epoch)
        running = cluster.wait_event(job_id, "running")
        checkpoint = f"otrt/checkpoints/{job_id}/checkpoint.pt"
        deadline = time.monotonic() + 120
        while checkpoint not in keys_in(s3_endpoint, s3_bucket):
            assert time.monotonic() < deadline, "no checkpoint reached the store"
            time.sleep(0.2)
        os.kill(worker_pid(running), signal.SIGKILL)
        assert "epoch" not in [e["type"] for e in cluster.events(job_id)]  # still in epoch 1
        cluster.start_worker("w2", env={"OTRT_DATA_DIR": str(tmp_path / "host2")})
        job = cluster.wait(job_id, {"succeeded", "failed"})
        assert job["status"] == "succeeded" and job["attempt"] == 2, job
        second = cluster.wait_event(job_id, "started", count=2)["data"]
        assert second["resumed"] and second["epoch"] == 0 and second["step"] > 0, second
    finally:
        cluster.close()
