"""Sweeps on a real `otrt serve` (auth on), through the SDK and the CLI, with real training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow
BASE = {
    "mode": "supervised",
    "student": {"architecture": "mlp_small"},
    "dataset": {"name": "digits", "train_subset": 300},
    "training": {"epochs": 4, "batch_size": 32},
}
LONG = {
    "mode": "supervised",
    "student": {"architecture": "cnn"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 500, "batch_size": 16},
}


def otrt_cli(served, *args: str) -> subprocess.CompletedProcess:
    url, key = served
    return subprocess.run(
        [sys.executable, "-m", "otrt", *args],
        capture_output=True,
        text=True,
        env=os.environ | {"OTRT_URL": url, "OTRT_API_KEY": key},
        timeout=120,
    )


def test_an_asha_sweep_runs_to_its_best_trial_whose_student_downloads(client, served, tmp_path):
    sweep = client.sweeps.create(
        {
            "base": BASE,
            "space": {
                "training.lr": {"log_uniform": [0.0005, 0.3]},
                "training.optimizer": ["sgd", "adamw"],
            },
            "search": "tpe",
            "trials": 5,
            "parallel": 2,
            "early_stop": "asha",
        }
    )
    events = list(client.sweeps.events(sweep["id"], follow=True))  # ends with the sweep
    sweep = client.sweeps.get(sweep["id"])
    assert sweep["status"] == "succeeded" and events[-1]["type"] == "succeeded"
    jobs = {job["id"]: job for job in client.sweeps.trials(sweep["id"])}
    assert len(jobs) == 5 and {t["job_id"] for t in sweep["trials"]} == set(jobs)

    # A pruned trial stopped early, said why, and is the search's; every other one ran out.
    pruned = [j for j in jobs.values() if j["status"] == "cancelled"]
    assert all(j["error"]["code"] == "pruned" for j in pruned)
    assert all(len(client.metrics(j["id"])) < 4 for j in pruned)
    assert [e["type"] for e in events].count("pruned") == len(pruned)
    finished = [j for j in jobs.values() if j["status"] == "succeeded"]
    assert len(finished) + len(pruned) == 5
    assert all(len(client.metrics(j["id"])) == 4 for j in finished)

    best = client.sweeps.best(sweep["id"])
    assert best["metric"] == max(j["metrics"]["best_val_accuracy"] for j in finished)
    assert best["spec"]["training"]["lr"] == best["params"]["training.lr"]
    names = [a["name"] for a in client.sweeps.artifacts(sweep["id"])]
    assert names[0] == "sweep.json" and "student.onnx" in names
    student = client.sweeps.download(sweep["id"], "student.onnx", tmp_path)
    assert (
        student.read_bytes()
        == client.download(best["job_id"], "student.onnx", tmp_path / "b.onnx").read_bytes()
    )
    document = json.loads(client.sweeps.download(sweep["id"], "sweep.json", tmp_path).read_text())
    assert document["best"]["job_id"] == best["job_id"] and document["request"]["trials"] == 5

    shown = otrt_cli(served, "sweep", "best", sweep["id"])
    assert shown.returncode == 0 and best["job_id"] in shown.stdout, shown.stderr
    status = otrt_cli(served, "sweep", "status", sweep["id"])
    assert status.returncode == 0 and "succeeded" in status.stdout
    assert all(job_id[:12] in status.stdout for job_id in jobs)


def test_cancelling_a_sweep_from_the_cli_stops_its_running_and_queued_trials(client, served):
    sweep = client.sweeps.create(
        {
            "base": LONG,
            "space": {"training.lr": [0.01, 0.02, 0.03]},
            "search": "grid",
            "parallel": 2,
        }
    )
    deadline = time.monotonic() + 120
    while not any(t["status"] == "running" for t in client.sweeps.get(sweep["id"])["trials"]):
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(0.5)
    cancelled = otrt_cli(served, "sweep", "cancel", sweep["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.split()[1] in ("cancelling", "cancelled")
    sweep = client.sweeps.wait(sweep["id"], timeout=60)  # a hang guard, not a timing goal
    assert sweep["status"] == "cancelled"
    jobs = list(client.sweeps.trials(sweep["id"]))
    assert len(jobs) == 2 and {j["status"] for j in jobs} == {"cancelled"}
    again = otrt_cli(served, "sweep", "cancel", sweep["id"])
    assert again.returncode == 1 and "409" in again.stderr  # it has ended
