"""End to end through real HTTP on `otrt serve` (uvicorn, SQLite, embedded executor).

One server for the module: a supervised teacher on digits, then distill,
transfer and transfer_distill jobs that name it, SSE followed to the end,
downloads with Range and ETag, and a cancelled job whose trainer is gone.
"""

from __future__ import annotations

import json
import os
import time

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load

from otrt_core.data import load_arrays
from otrt_core.models import build_model
from tests.utils.processes import pid_gone, start_server

pytestmark = pytest.mark.slow
TRAINING = {"epochs": 3, "batch_size": 64, "lr": 0.05}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, client = start_server(tmp_path_factory.mktemp("otrt-data"))
    yield client
    process.terminate()
    output, _ = process.communicate(timeout=60)
    client.close()
    print(output)


def submit(client: httpx.Client, body: dict) -> str:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def follow_sse(client: httpx.Client, job_id: str, last_event_id: int | None = None) -> list[dict]:
    """Every event of the job from its SSE stream, which must end when the job ends."""
    events = []
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=300) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    return events


def finished(client: httpx.Client, job_id: str) -> dict:
    events = follow_sse(client, job_id)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["attempt"] == 1, (job, events)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert events[-1]["type"] == "succeeded" and "epoch" in [e["type"] for e in events]
    return job | {"events": events}


def test_teacher_then_distill_download_and_check_the_accuracy(server):
    teacher = submit(
        server,
        {
            "mode": "supervised",
            "student": {"architecture": "mlp"},
            "dataset": {"name": "digits"},
            "training": TRAINING,
        },
    )
    everything = finished(server, teacher)["events"]
    resumed = follow_sse(server, teacher, last_event_id=everything[2]["id"])
    assert resumed == everything[3:]  # a reconnecting client gets only what it missed
    distill = submit(
        server,
        {
            "mode": "distill",
            "teacher": {"architecture": "mlp", "checkpoint": teacher},
            "student": {"architecture": "mlp_small"},
            "dataset": {"name": "digits"},
            "regularizer": {"kind": "ot"},
            "kd": {"weight": 1.0},
            "training": TRAINING,
        },
    )
    job = finished(server, distill)
    history = server.get(f"/v1/jobs/{distill}/metrics").json()
    assert len(history) == TRAINING["epochs"] and job["progress"]["fraction"] == 1.0
    # The job's OT distance is its last epoch's, as the trainer reported it.
    assert job["metrics"]["ot_distance"] == history[-1]["ot_distance"] > 0

    artifacts = {a["name"]: a for a in server.get(f"/v1/jobs/{distill}/artifacts").json()}
    assert {"student.safetensors", "metrics.json", "spec.json"} <= set(artifacts)
    url = f"/v1/jobs/{distill}/artifacts/student.safetensors"
    whole = server.get(url)
    assert (
        whole.status_code == 200 and len(whole.content) == artifacts["student.safetensors"]["bytes"]
    )
    assert whole.headers["etag"] == f'"{artifacts["student.safetensors"]["sha256"]}"'
    assert "student.safetensors" in whole.headers["content-disposition"]
    part = server.get(url, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == whole.content[10:100]
    assert server.get(url, headers={"If-None-Match": whole.headers["etag"]}).status_code == 304

    # The downloaded weights give the test accuracy the job reported.
    metrics = json.loads(server.get(f"/v1/jobs/{distill}/artifacts/metrics.json").content)
    model = build_model("mlp_small", num_classes=10, input_shape=(1, 8, 8))
    model.load_state_dict(load(whole.content))
    raw = load_arrays("digits")  # a user's view: raw test inputs and metrics.json's statistics
    mean = torch.tensor(metrics["normalization"]["mean"]).view(-1, 1, 1)
    std = torch.tensor(metrics["normalization"]["std"]).view(-1, 1, 1)
    x = (torch.from_numpy(np.array(raw.x_test)) - mean) / std
    with torch.no_grad():
        predictions = model.eval()(x).argmax(1).numpy()
    accuracy = float((predictions == raw.y_test).mean())
    assert accuracy == pytest.approx(job["metrics"]["test_accuracy"], abs=1e-6)
    assert accuracy > 0.5

    # The report says the same, and more.
    report = server.get(f"/v1/jobs/{distill}/report").json()
    assert report["test_accuracy"] == job["metrics"]["test_accuracy"]
    assert report["teacher"]["params"] > report["student"]["params"]
    assert {a["name"] for a in server.get(f"/v1/jobs/{distill}/artifacts").json()} >= {
        "report.json",
        "report.html",
        "student.int8.onnx",
    }
    assert server.get(f"/v1/jobs/{teacher}/report").json()["teacher"] is None


def test_transfer_and_transfer_distill_from_a_teacher_job(server):
    source = {"name": "digits", "classes": [0, 1, 2, 3, 4]}
    target = {"name": "digits", "classes": [5, 6, 7, 8, 9], "train_subset": 20}
    teacher = submit(
        server,
        {
            "mode": "supervised",
            "student": {"architecture": "cnn"},
            "dataset": source,
            "training": TRAINING,
        },
    )
    finished(server, teacher)
    for mode, student in [("transfer", "cnn"), ("transfer_distill", "cnn_small")]:
        job = finished(
            server,
            submit(
                server,
                {
                    "mode": mode,
                    "teacher": {"architecture": "cnn", "checkpoint": teacher},
                    "student": {"architecture": student},
                    "dataset": target,
                    # 100 labels: small batches give the student 7 steps an epoch.
                    "training": TRAINING | {"batch_size": 16},
                },
            ),
        )
        assert job["spec"]["regularizer"]["kind"] == "ot"
        # Measured 0.92 (transfer) and 0.78 (transfer_distill), deterministic; chance is 0.2.
        assert job["metrics"]["test_accuracy"] > 0.6, (mode, job["metrics"])


LONG_JOB = {
    "mode": "supervised",
    "student": {"architecture": "cnn"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 500, "batch_size": 16},
}


def wait_for_event(client: httpx.Client, job_id: str, type_: str, count: int = 1) -> dict:
    """The ``count``-th event of that type, once it exists."""
    deadline = time.monotonic() + 120
    while True:
        events = client.get(f"/v1/jobs/{job_id}/events").json()
        matching = [e for e in events if e["type"] == type_]
        if len(matching) >= count:
            return matching[count - 1]
        assert time.monotonic() < deadline, events
        time.sleep(0.3)


def test_cancel_a_running_job_stops_its_trainer(server):
    job_id = submit(server, LONG_JOB)
    pid = wait_for_event(server, job_id, "started")["data"]["pid"]
    os.kill(pid, 0)  # running
    response = server.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelling"
    events = follow_sse(server, job_id)
    assert events[-1]["type"] == "cancelled"
    assert server.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert server.post(f"/v1/jobs/{job_id}/cancel").status_code == 409


def test_a_job_running_when_the_server_is_killed_resumes_on_restart_and_finishes(tmp_path):
    epochs = 6
    first, client = start_server(tmp_path)
    job_id = submit(client, LONG_JOB | {"training": {"epochs": epochs, "batch_size": 16}})
    pid = wait_for_event(client, job_id, "started")["data"]["pid"]
    wait_for_event(client, job_id, "epoch")  # a checkpoint exists
    first.kill()  # SIGKILL: no chance to stop the trainer
    first.wait()
    assert pid_gone(pid, within=60), "the orphaned trainer kept running"
    second, client = start_server(tmp_path)
    try:
        resumed = wait_for_event(client, job_id, "started", count=2)["data"]
        assert resumed["resumed"] and resumed["epoch"] >= 1
        assert follow_sse(client, job_id)[-1]["type"] == "succeeded"
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and job["attempt"] == 2, job
        history = client.get(f"/v1/jobs/{job_id}/metrics").json()
        assert [record["epoch"] for record in history] == list(range(1, epochs + 1))
        types = [event["type"] for event in client.get(f"/v1/jobs/{job_id}/events").json()]
        assert types.count("succeeded") == 1
    finally:
        second.terminate()
        second.wait(timeout=60)
