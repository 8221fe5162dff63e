"""Owners never reach each other's objects, and racing requests settle one way, on
PostgreSQL and SQLite."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from otrt_core.jobs import states
from otrt_core.jobs.tables import Artifact
from tests.service.api_helpers import SUPERVISED, assert_problem, teacher_bytes, upload


def finished_job_with_artifact(client, parts, headers, tmp_path) -> str:
    """A succeeded job of ``headers``' owner with one artifact, as an executor leaves it."""
    job_id = client.post("/v1/jobs", json=SUPERVISED, headers=headers).json()["id"]
    store, storage = parts.service.store, parts.service.storage
    source = tmp_path / "weights"
    source.write_bytes(teacher_bytes())
    stored = storage.put(f"artifacts/{job_id}/student.safetensors", source)
    lease = store.claim_next("w", 60)
    artifact = Artifact(
        job_id=job_id,
        name="student.safetensors",
        bytes=stored.bytes,
        sha256=stored.sha256,
        path=stored.key,
    )
    store.add_artifacts(lease, [artifact])
    store.transition(job_id, states.SUCCEEDED, "done", lease=lease)
    return job_id


def test_artifacts_streams_and_ids_of_another_owner_are_404(client, parts, alice, bob, tmp_path):
    job = finished_job_with_artifact(client, parts, alice, tmp_path)
    url = f"/v1/jobs/{job}/artifacts/student.safetensors"
    assert client.get(url, headers=alice).status_code == 200
    assert_problem(client.get(url, headers=bob), 404)
    sse = bob | {"Accept": "text/event-stream"}
    assert_problem(client.get(f"/v1/jobs/{job}/events", headers=sse), 404)
    # Alice's ids as Bob's inputs: a teacher job, a teacher file, a dataset, a cursor.
    teacher_file = upload(client, alice, "teacher", "t.safetensors", teacher_bytes()).json()["id"]
    for teacher in (job, teacher_file):
        body = {
            "mode": "distill",
            "teacher": {"architecture": "mlp", "checkpoint": teacher},
            "student": {"architecture": "mlp_small"},
            "dataset": {"name": "digits"},
        }
        problem = assert_problem(client.post("/v1/jobs", json=body, headers=bob), 422)
        assert problem["errors"][0]["loc"] == ["body", "teacher", "checkpoint"]
        assert f"no {teacher.split('_')[0]} {teacher}" in problem["errors"][0]["msg"]
    dataset = SUPERVISED | {"dataset": {"name": teacher_file}}
    assert_problem(client.post("/v1/jobs", json=dataset, headers=bob), 422)
    assert_problem(client.get(f"/v1/jobs?after={job}", headers=bob), 422)
    assert_problem(client.get(f"/v1/files?after={teacher_file}", headers=bob), 422)
    assert client.get("/v1/jobs", headers=bob).json()["data"] == []


def test_cancel_racing_a_claim_ends_cancelled_or_cancelling_never_lost(parts, alice, client):
    """Whichever wins, the job ends up asked to stop: cancelled at once, or cancelling
    (with cancel_requested, which the executor's next heartbeat reads)."""
    store = parts.service.store
    for _ in range(10):
        job = client.post("/v1/jobs", json=SUPERVISED, headers=alice).json()["id"]
        start = threading.Barrier(2)
        with ThreadPoolExecutor(1) as pool:
            claim = pool.submit(
                lambda job_id=job, barrier=start: (barrier.wait(), store.claim(job_id, "w", 60))[1]
            )
            start.wait()
            cancelled = client.post(f"/v1/jobs/{job}/cancel", headers=alice)
            lease = claim.result()
        final = store.get(job)
        assert cancelled.status_code == 202 and final.cancel_requested
        if lease is None:  # the cancel came first: nothing runs
            assert final.status == states.CANCELLED and final.attempt == 0, (
                final.status,
                final.attempt,
            )
        else:  # the claim came first: the executor is asked to stop
            assert final.status == states.CANCELLING and store.renew(lease, 60) is True


def test_racing_requests_with_one_idempotency_key_make_one_job(parts, alice, client):
    start, answers = threading.Barrier(8), []
    headers = alice | {"Idempotency-Key": "race"}

    def submit() -> None:
        start.wait()
        answers.append(client.post("/v1/jobs", json=SUPERVISED, headers=headers))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(client.get("/v1/jobs", headers=alice).json()["data"]) == 1
    assert len(client.dispatched) == 1
