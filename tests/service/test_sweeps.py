"""Sweeps through the in-process API on both real databases, with jobs ended by hand.

The dispatcher here only records ids, so each test plays the executors: it
claims a sweep's job and ends it with the metrics it chooses, then lets the
sweep advance as an executor would. Real training runs in
tests/e2e/test_sweeps_over_http.py and, on Celery, in tests/service/test_sweep_on_celery.py.
"""

from __future__ import annotations

import threading

import pytest

from otrt_core.jobs import states
from otrt_core.jobs.sweeps import SweepRunner
from tests.service.api_helpers import assert_problem, teacher_bytes, upload

pytestmark = pytest.mark.services

BASE = {
    "mode": "supervised",
    "student": {"architecture": "mlp_small"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 2},
}


def end_job(client, job_id: str, status: str = states.SUCCEEDED, **metrics) -> None:
    """Plays an executor: claims the job and ends it with ``metrics``."""
    lease = client.store.claim(job_id, "test-executor", 60)
    client.store.transition(
        job_id, status, f"ended by the test: {status}", lease=lease, metrics=metrics
    )


def sweep_jobs(client, headers, sweep_id: str) -> list[dict]:
    response = client.get(f"/v1/jobs?sweep={sweep_id}&limit=100", headers=headers)
    assert response.status_code == 200
    return response.json()["data"]


def advance(client, sweep_id: str) -> dict:
    return client.app.state.service.sweeps.view(client.app.state.service.sweeps.advance(sweep_id))


def test_a_sweep_queues_at_most_parallel_jobs_and_plans_the_next_as_each_ends(client, alice):
    body = {
        "base": BASE,
        "space": {"training.lr": {"log_uniform": [0.001, 0.1]}},
        "search": "random",
    }
    response = client.post("/v1/sweeps", json=body | {"trials": 3, "parallel": 2}, headers=alice)
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert sweep["status"] == "running" and sweep["points"] == {"planned": 2, "total": 3}
    jobs = sweep_jobs(client, alice, sweep["id"])
    assert len(jobs) == 2 and sorted(client.dispatched) == sorted(j["id"] for j in jobs)
    assert all(j["sweep_id"] == sweep["id"] and j["status"] == "queued" for j in jobs)
    lrs = {j["spec"]["training"]["lr"] for j in jobs}
    assert lrs == {t["params"]["training.lr"] for t in sweep["trials"]} and len(lrs) == 2

    end_job(client, jobs[0]["id"], best_val_accuracy=0.6, test_accuracy=0.55)
    sweep = advance(client, sweep["id"])
    assert sweep["points"]["planned"] == 3 and len(sweep_jobs(client, alice, sweep["id"])) == 3
    assert sweep["best"]["job_id"] == jobs[0]["id"] and sweep["best"]["metric"] == 0.6

    rest = [j for j in sweep_jobs(client, alice, sweep["id"]) if j["status"] == "queued"]
    end_job(client, rest[0]["id"], best_val_accuracy=0.9, test_accuracy=0.85)
    end_job(client, rest[1]["id"], states.FAILED)
    sweep = advance(client, sweep["id"])
    assert sweep["status"] == "succeeded"
    assert sweep["best"]["job_id"] == rest[0]["id"] and sweep["best"]["metric"] == 0.9
    assert sweep["best"]["spec"]["training"]["lr"] == sweep["best"]["params"]["training.lr"]
    statuses = sorted(t["status"] for t in sweep["trials"])
    assert statuses == ["failed", "succeeded", "succeeded"]
    events = client.get(f"/v1/sweeps/{sweep['id']}/events", headers=alice).json()
    types = [e["type"] for e in events]
    assert types.count("point") == 3 and types.count("job") == 3 and types[-1] == "succeeded"

    artifacts = client.get(f"/v1/sweeps/{sweep['id']}/artifacts", headers=alice).json()
    assert [a["name"] for a in artifacts] == ["sweep.json"]  # the hand-ended job wrote none
    document = client.get(f"/v1/sweeps/{sweep['id']}/artifacts/sweep.json", headers=alice)
    assert document.json()["best"]["job_id"] == rest[0]["id"]
    assert document.json()["request"]["space"] == body["space"]


def distill_base(client, headers) -> tuple[str, dict]:
    """An uploaded teacher's id and a distillation job from it on digits."""
    teacher = upload(client, headers, "teacher", "t.safetensors", teacher_bytes()).json()["id"]
    return teacher, {
        "mode": "distill",
        "teacher": {"architecture": "mlp", "checkpoint": teacher},
        "student": {"architecture": "mlp_small"},
        "dataset": {"name": "digits"},
    }


def test_the_comparison_is_the_best_point_s_paired_gain_over_each_baseline(client, alice):
    _, base = distill_base(client, alice)
    body = {
        "base": base,
        "space": {"regularizer.weight": [0.1, 1.0]},
        "search": "grid",
        "seeds": 3,
        "parallel": 12,
        "compare": ["scratch", "kd"],
    }
    sweep = client.post("/v1/sweeps", json=body, headers=alice).json()
    jobs = sweep_jobs(client, alice, sweep["id"])
    assert len(jobs) == 12  # 2 points and 2 baselines, 3 seeds each
    roles = sorted(j["metadata"]["sweep_role"] for j in jobs)
    assert roles == ["kd"] * 3 + ["point"] * 6 + ["scratch"] * 3
    # Test accuracy by seed: the better point 0.90/0.92/0.94; scratch 0.88/0.88/0.91.
    tests = {
        "scratch": [0.88, 0.88, 0.91],
        "kd": [0.90, 0.91, 0.93],
        0.1: [0.85, 0.86, 0.87],
        1.0: [0.90, 0.92, 0.94],
    }
    for trial in sweep["trials"]:
        key = trial["role"] if trial["role"] != "point" else trial["params"]["regularizer.weight"]
        accuracy = tests[key][trial["seed"]]
        end_job(client, trial["job_id"], best_val_accuracy=accuracy, test_accuracy=accuracy)
    sweep = advance(client, sweep["id"])
    assert sweep["status"] == "succeeded" and sweep["best"]["params"] == {"regularizer.weight": 1.0}
    scratch, kd = sweep["compare"]["scratch"], sweep["compare"]["kd"]
    assert scratch["gain"] == pytest.approx(0.03) and scratch["seeds"] == 3
    half = 4.302653 * 0.01 / 3**0.5  # differences 0.02, 0.04, 0.03: sd 0.01, t(0.975, 2)
    assert scratch["ci95"] == pytest.approx([0.03 - half, 0.03 + half], rel=1e-5)
    assert kd["gain"] == pytest.approx(0.02 / 3)  # differences 0, 0.01, 0.01
    kd_jobs = [j for j in jobs if j["metadata"]["sweep_role"] == "kd"]
    assert {j["spec"]["regularizer"]["kind"] for j in kd_jobs} == {"kd"}
    assert sorted(j["spec"]["training"]["seed"] for j in kd_jobs) == [0, 1, 2]


def test_advancing_from_many_threads_at_once_creates_each_planned_job_once(client, alice):
    body = {"base": BASE, "space": {"training.lr": [0.01, 0.02, 0.03, 0.04]}, "search": "grid"}
    sweep = client.post("/v1/sweeps", json=body | {"parallel": 4, "seeds": 2}, headers=alice).json()
    runner = client.app.state.service.sweeps

    def race() -> None:  # four threads advancing the sweep five times each, at once
        failures: list[BaseException] = []

        def advance_five_times() -> None:
            try:
                for _ in range(5):
                    runner.advance(sweep["id"])
            except BaseException as error:
                failures.append(error)

        threads = [threading.Thread(target=advance_five_times) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures

    race()
    for job in sweep_jobs(client, alice, sweep["id"]):
        end_job(client, job["id"], best_val_accuracy=0.5, test_accuracy=0.5)
    race()
    jobs = sweep_jobs(client, alice, sweep["id"])
    for job in jobs:
        if job["status"] == "queued":
            end_job(client, job["id"], best_val_accuracy=0.5, test_accuracy=0.5)
    sweep = advance(client, sweep["id"])
    jobs = sweep_jobs(client, alice, sweep["id"])
    assert sweep["status"] == "succeeded" and len(jobs) == 8  # 4 points x 2 seeds
    assert len({(j["spec"]["training"]["lr"], j["spec"]["training"]["seed"]) for j in jobs}) == 8
    events = client.get(f"/v1/sweeps/{sweep['id']}/events", headers=alice).json()
    assert [e["type"] for e in events].count("job") == 8  # each end noted once


def test_the_reaper_leaves_a_sweep_alone_until_it_has_something_new(client, alice):
    service = client.app.state.service
    advanced: list[str] = []

    class CountingRunner(SweepRunner):
        def advance(self, sweep_id: str):
            advanced.append(sweep_id)
            return super().advance(sweep_id)

    reaper = CountingRunner(service.store, service.sweeps.sweeps, client.dispatched.append)
    body = {"base": BASE, "space": {"training.lr": [0.01, 0.02]}, "search": "grid"}
    sweep = client.post("/v1/sweeps", json=body | {"parallel": 1}, headers=alice).json()
    [job] = sweep_jobs(client, alice, sweep["id"])

    reaper.advance_unfinished()  # one job queued, the sweep's only slot: nothing to do
    reaper.advance_unfinished()
    assert advanced.count(sweep["id"]) == 1

    end_job(client, job["id"], best_val_accuracy=0.5, test_accuracy=0.5)
    reaper.advance_unfinished()  # a job ended: noted, and the next point queued
    assert advanced.count(sweep["id"]) == 2
    assert len(sweep_jobs(client, alice, sweep["id"])) == 2
    reaper.advance_unfinished()  # its own change moved the version: looked at once more
    reaper.advance_unfinished()
    assert advanced.count(sweep["id"]) == 3

    client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice)
    reaper.advance_unfinished()  # ended: no longer among the unfinished
    assert advanced.count(sweep["id"]) == 3


def test_cancelling_a_sweep_cancels_its_queued_jobs_and_ends_it(client, alice):
    body = {"base": BASE, "space": {"training.lr": [0.01, 0.02, 0.03]}, "search": "grid"}
    sweep = client.post("/v1/sweeps", json=body, headers=alice).json()
    response = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice)
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    jobs = sweep_jobs(client, alice, sweep["id"])
    assert len(jobs) == 2 and {j["status"] for j in jobs} == {"cancelled"}
    assert_problem(client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice), 409)


def test_a_sweep_with_bad_input_is_refused_with_every_problem_and_nothing_stored(client, alice):
    body = {
        "base": BASE | {"student": {"architecture": "nope"}},
        "space": {"regularizer.wieght": [1.0], "training.lr": {"uniform": [0.5, 0.1]}},
        "compare": ["kd"],
    }
    problem = assert_problem(client.post("/v1/sweeps", json=body, headers=alice), 422)
    assert [".".join(map(str, e["loc"])) for e in problem["errors"]] == [
        "body.base.student.architecture"
    ]  # an invalid base is reported first, alone
    body["base"] = BASE
    problem = assert_problem(client.post("/v1/sweeps", json=body, headers=alice), 422)
    places = sorted(".".join(map(str, e["loc"])) for e in problem["errors"])
    assert places == [
        "body.compare",
        "body.seeds",
        "body.space.regularizer.wieght",
        "body.space.training.lr.uniform",
    ]
    assert client.get("/v1/sweeps", headers=alice).json()["data"] == []
    assert client.get("/v1/jobs", headers=alice).json()["data"] == []


def test_a_sweep_beyond_the_job_limit_or_the_key_s_queue_is_refused(engine, tmp_path):
    from tests.service.api_helpers import api_client, make_parts

    parts = make_parts(engine, tmp_path, max_sweep_jobs=5)
    record, plain = parts.keys.create("carol")
    parts.keys.set_quota(record.id, max_queued=3)
    headers = {"Authorization": f"Bearer {plain}"}
    with api_client(parts) as client:
        body = {"base": BASE, "space": {"training.lr": [0.01, 0.02, 0.03]}, "search": "grid"}
        problem = assert_problem(
            client.post("/v1/sweeps", json=body | {"seeds": 2, "parallel": 4}, headers=headers), 422
        )
        messages = {e["loc"][-1]: e["msg"] for e in problem["errors"]}
        assert "6 jobs" in messages["space"] and "at most 5" in messages["space"]
        assert "max_queued" in messages["parallel"]


def test_sweeps_and_their_jobs_are_their_owner_s_alone(client, alice, bob):
    body = {"base": BASE, "space": {"training.lr": [0.01]}, "search": "grid"}
    sweep = client.post("/v1/sweeps", json=body, headers=alice).json()
    for path in ("", "/events", "/artifacts", "/artifacts/sweep.json"):
        assert_problem(client.get(f"/v1/sweeps/{sweep['id']}{path}", headers=bob), 404)
    assert_problem(client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=bob), 404)
    assert client.get(f"/v1/jobs?sweep={sweep['id']}", headers=bob).json()["data"] == []
    assert client.get("/v1/sweeps", headers=bob).json()["data"] == []
    listed = client.get("/v1/sweeps", headers=alice).json()["data"]
    assert [s["id"] for s in listed] == [sweep["id"]]
    assert_problem(client.get(f"/v1/sweeps/{sweep['id']}/artifacts", headers=alice), 404)


def test_a_trial_of_a_point_early_stopping_ended_stops_at_its_next_epoch(client, alice, tmp_path):
    """The other seed of a point ASHA stopped: the executor stops its trainer after one
    epoch, and the job ends cancelled with the reason, its epoch kept."""
    from tests.service.api_helpers import local_executor

    body = {
        "base": BASE | {"training": {"epochs": 20, "batch_size": 64}},
        "space": {"training.lr": [0.05]},
        "search": "grid",
        "seeds": 2,
        "early_stop": "asha",
    }
    sweep = client.post("/v1/sweeps", json=body, headers=alice).json()
    runner = client.app.state.service.sweeps
    stored = runner.sweeps.get(sweep["id"])
    points = [stored.state["points"][0] | {"pruned": True}]  # by its other seed's job, say
    assert runner.sweeps.update(stored, state=stored.state | {"points": points})
    executor = local_executor(client.store, tmp_path, sweeps=runner)
    assert executor.run_next() == "cancelled"
    job_id = sweep["trials"][0]["job_id"]  # the older of the two, which fair order runs first
    job = client.store.get(job_id)
    assert job.error == {"code": "pruned", "message": job.error["message"]}
    assert "early stopping (ASHA) after epoch 1" in job.error["message"]
    assert len(client.store.metrics(job_id)) == 1


def test_a_file_an_unfinished_sweep_reads_cannot_be_deleted_between_its_trials(client, alice):
    teacher, base = distill_base(client, alice)
    body = {"base": base, "space": {"regularizer.weight": [0.1, 1.0]}, "search": "grid"}
    sweep = client.post("/v1/sweeps", json=body | {"parallel": 1}, headers=alice).json()
    end_job(client, sweep["trials"][0]["job_id"], best_val_accuracy=0.5, test_accuracy=0.5)
    # No job of the sweep is live now, but its next trial will read the teacher.
    problem = assert_problem(client.delete(f"/v1/files/{teacher}", headers=alice), 409)
    assert "sweep" in problem["detail"]
    client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=alice)
    assert client.delete(f"/v1/files/{teacher}", headers=alice).status_code == 204
