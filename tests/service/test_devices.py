"""training.gpus across the service: workers say what they offer, take only jobs that
fit, and a job no worker could run is refused at submission."""

from __future__ import annotations

import time
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from otrt.wiring import build_embedded
from otrt_core.jobs.db import make_sessions
from otrt_core.jobs.tables import Worker, utcnow
from otrt_core.jobs.workers import LIVE_SECONDS, WorkerRegistry
from otrt_core.settings import Settings
from otrt_core.spec import resolve_spec
from tests.service.api_helpers import SUPERVISED, api_client, assert_problem, make_parts

PROGRESS = {"epoch": 0, "epochs": 1, "step": 0, "steps": None, "fraction": 0.0}
TWO_GPUS = SUPERVISED | {"training": {"epochs": 1, "gpus": 2}}


def test_an_executor_takes_only_the_jobs_its_devices_fit(store):
    big = store.create("a", resolve_spec(TWO_GPUS), {}, PROGRESS)[0].id
    small = store.create("a", resolve_spec(SUPERVISED), {}, PROGRESS)[0].id
    assert store.claim_next("one-gpu", 60, devices=1).job_id == small  # skips the older one
    assert store.claim_next("one-gpu", 60, devices=1) is None
    assert store.claim_next("two-gpus", 60, devices=2).job_id == big


def test_a_job_no_live_worker_could_run_is_refused_at_submission(engine, tmp_path):
    registry = WorkerRegistry(make_sessions(engine))
    client = api_client(make_parts(engine, tmp_path, auth=False, workers=registry))
    # No worker seen yet (the API up first): accepted, it waits for one.
    assert client.post("/v1/jobs", json=TWO_GPUS).status_code == 201
    registry.announce("celery-a", devices=1)
    registry.announce("celery-b", devices=1)
    problem = assert_problem(client.post("/v1/jobs", json=TWO_GPUS), 422)
    assert problem["errors"] == [
        {
            "loc": ["body", "training", "gpus"],
            "msg": "no worker offers 2 devices; the largest offers 1",
        }
    ]
    assert client.post("/v1/jobs", json=SUPERVISED).status_code == 201
    registry.announce("celery-c", devices=2)
    assert client.post("/v1/jobs", json=TWO_GPUS).status_code == 201
    # A worker long unseen no longer counts.
    with make_sessions(engine).begin() as session:
        stale = utcnow() - timedelta(seconds=2 * LIVE_SECONDS)
        session.execute(update(Worker).where(Worker.name == "celery-c").values(seen_at=stale))
    assert_problem(client.post("/v1/jobs", json=TWO_GPUS), 422)


def test_a_two_process_job_runs_on_an_executor_that_offers_two(tmp_path):
    """On the CPU, a worker offers what OTRT_WORKER_DEVICES says: 2 gloo ranks here."""
    settings = Settings(data_dir=tmp_path, worker_devices=2, heartbeat_seconds=0.5, torch_threads=1)
    embedded = build_embedded(settings)
    embedded.executor.start()
    try:
        client = TestClient(embedded.app)
        created = client.post("/v1/jobs", json=TWO_GPUS | {"training": {"epochs": 2, "gpus": 2}})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 180
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        assert job["status"] == "succeeded", job
        events = client.get(f"/v1/jobs/{job_id}/events").json()
        (started,) = [e for e in events if e["type"] == "started"]
        assert started["data"]["world_size"] == 2
        assert [e["type"] for e in events].count("epoch") == 2  # rank 0 alone reports
        assert WorkerRegistry(embedded.components.store.sessions).largest() == 2
    finally:
        embedded.executor.shutdown()
