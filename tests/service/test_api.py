"""Every route's success and error paths, in process, on PostgreSQL and SQLite.

Jobs here are only queued: the dispatcher records ids instead of running them
(tests/e2e runs them for real through `otrt serve`).
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
import torch

from tests.service.api_helpers import (
    SUPERVISED,
    assert_problem,
    teacher_bytes,
    upload,
)


def test_every_v1_route_needs_a_valid_key(client, alice):
    for method, path in [
        ("get", "/v1/jobs"),
        ("get", "/v1/files"),
        ("get", "/v1/architectures"),
        ("post", "/v1/jobs"),
    ]:
        response = getattr(client, method)(path)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    assert_problem(client.get("/v1/jobs", headers={"Authorization": "Bearer nope"}), 401)
    assert client.get("/v1/jobs", headers=alice).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_a_job_is_queued_with_every_default_and_dispatched_after_commit(client, alice):
    response = client.post("/v1/jobs", json=SUPERVISED | {"metadata": {"run": "a"}}, headers=alice)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["attempt"] == 0
    assert job["spec"]["training"]["epochs"] is None  # sized from the data by the trainer
    assert job["spec"]["regularizer"]["kind"] == "none"
    assert job["metadata"] == {"run": "a"}
    assert job["progress"]["epochs"] is None and job["progress"]["fraction"] == 0.0
    assert client.dispatched == [job["id"]]
    assert client.store.get(job["id"]).status == "queued"  # committed before dispatch
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["id"] == job["id"]


def test_an_invalid_job_lists_every_problem(client, alice):
    body = {
        "mode": "distill",
        "student": {"architecture": "resnet999"},
        "dataset": {"name": "nope"},
        "teacher": {"architecture": "mlp", "checkpoint": "file_missing"},
    }
    problem = assert_problem(client.post("/v1/jobs", json=body, headers=alice), 422)
    locs = {tuple(e["loc"]) for e in problem["errors"]}
    assert ("body", "student", "architecture") in locs and ("body", "dataset", "name") in locs
    problem = assert_problem(client.post("/v1/jobs", json={"mode": 3}, headers=alice), 422)
    assert len(problem["errors"]) >= 3  # mode, student, dataset
    assert client.dispatched == []


def test_a_teacher_must_exist_belong_to_the_owner_and_fit(client, alice, bob):
    mlp = upload(client, alice, "teacher", "t.safetensors", teacher_bytes()).json()["id"]
    cnn = upload(client, alice, "teacher", "t.pt", teacher_bytes("pt", "cnn")).json()["id"]
    distill = {
        "mode": "distill",
        "student": {"architecture": "mlp_small"},
        "dataset": {"name": "digits"},
        "training": {"epochs": 1},
    }
    ok = client.post(
        "/v1/jobs",
        headers=alice,
        json=distill | {"teacher": {"architecture": "mlp", "checkpoint": mlp}},
    )
    assert ok.status_code == 201, ok.text
    misfit = client.post(
        "/v1/jobs",
        headers=alice,
        json=distill | {"teacher": {"architecture": "mlp", "checkpoint": cnn}},
    )
    assert "do not fit" in assert_problem(misfit, 422)["errors"][0]["msg"]
    foreign = client.post(
        "/v1/jobs",
        headers=bob,
        json=distill | {"teacher": {"architecture": "mlp", "checkpoint": mlp}},
    )
    assert assert_problem(foreign, 422)["errors"][0]["msg"] == f"no file {mlp}"
    queued_teacher = client.post(
        "/v1/jobs",
        headers=alice,
        json=distill | {"teacher": {"architecture": "mlp", "checkpoint": ok.json()["id"]}},
    )
    assert "must have succeeded" in assert_problem(queued_teacher, 422)["errors"][0]["msg"]


def test_idempotency_key_returns_the_same_job_or_409(client, alice):
    headers = alice | {"Idempotency-Key": "abc"}
    first = client.post("/v1/jobs", json=SUPERVISED, headers=headers)
    again = client.post("/v1/jobs", json=SUPERVISED, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert client.dispatched == [first.json()["id"]]
    other = SUPERVISED | {"training": {"epochs": 2}}
    assert_problem(client.post("/v1/jobs", json=other, headers=headers), 409)


def test_owners_never_see_each_others_objects(client, alice, bob):
    job = client.post("/v1/jobs", json=SUPERVISED, headers=alice).json()["id"]
    file = upload(client, alice, "teacher", "t.safetensors", teacher_bytes()).json()["id"]
    for path in [
        f"/v1/jobs/{job}",
        f"/v1/jobs/{job}/events",
        f"/v1/jobs/{job}/metrics",
        f"/v1/jobs/{job}/artifacts",
        f"/v1/files/{file}",
    ]:
        assert_problem(client.get(path, headers=bob), 404)
        assert client.get(path, headers=alice).status_code == 200
    assert_problem(client.post(f"/v1/jobs/{job}/cancel", headers=bob), 404)
    assert_problem(client.delete(f"/v1/files/{file}", headers=bob), 404)
    assert client.get("/v1/jobs", headers=bob).json()["data"] == []


def test_job_pages_follow_the_cursor_and_filter_by_status(client, alice):
    ids = [client.post("/v1/jobs", json=SUPERVISED, headers=alice).json()["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=alice)
    seen, after = [], None
    while True:
        page = client.get(
            "/v1/jobs", params={"limit": 2} | ({"after": after} if after else {}), headers=alice
        ).json()
        seen += [job["id"] for job in page["data"]]
        if not page["has_more"]:
            assert page["next_after"] is None
            break
        after = page["next_after"]
    assert seen == ids[::-1]
    cancelled = client.get("/v1/jobs?status=cancelled", headers=alice).json()["data"]
    assert [job["id"] for job in cancelled] == [ids[0]]
    assert_problem(client.get("/v1/jobs?status=sleeping", headers=alice), 422)
    assert_problem(client.get("/v1/jobs?after=job_nope", headers=alice), 422)


def test_cancel_a_queued_job_then_refuse_a_second_cancel(client, alice):
    job = client.post("/v1/jobs", json=SUPERVISED, headers=alice).json()["id"]
    response = client.post(f"/v1/jobs/{job}/cancel", headers=alice)
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert_problem(client.post(f"/v1/jobs/{job}/cancel", headers=alice), 409)
    events = client.get(f"/v1/jobs/{job}/events", headers=alice).json()
    assert [e["type"] for e in events] == ["queued", "cancelled"]
    assert client.get(f"/v1/jobs/{job}/events?after={events[0]['id']}", headers=alice).json() == [
        events[1]
    ]


def test_uploads_raw_and_multipart_are_hashed_and_described(client, alice):
    data = teacher_bytes()
    raw = upload(client, alice, "teacher", "teacher.safetensors", data)
    assert raw.status_code == 201, raw.text
    body = raw.json()
    import hashlib

    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["bytes"] == len(data)
    assert body["format"] == "safetensors" and body["id"].startswith("file_")
    multipart = client.post(
        "/v1/files?purpose=teacher",
        headers=alice,
        files={"file": ("teacher.pt", teacher_bytes("pt"))},
    )
    assert multipart.status_code == 201 and multipart.json()["format"] == "pytorch"
    arrays = io.BytesIO()
    np.savez(
        arrays, x_train=np.random.rand(40, 1, 8, 8).astype(np.float32), y_train=np.arange(40) % 4
    )
    dataset = upload(client, alice, "dataset", "d.npz", arrays.getvalue())
    assert dataset.status_code == 201, dataset.text
    assert dataset.json()["details"]["num_classes"] == 4
    listed = client.get("/v1/files", headers=alice).json()["data"]
    assert [f["id"] for f in listed] == [dataset.json()["id"], multipart.json()["id"], body["id"]]


def test_a_malicious_pickle_is_refused_and_runs_nothing(client, alice, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    torch.save({"weight": Exploit()}, buffer)
    problem = assert_problem(upload(client, alice, "teacher", "evil.pt", buffer.getvalue()), 422)
    assert "weights" in problem["detail"].lower() or "unpickl" in problem["detail"].lower()
    assert not marker.exists()
    assert client.get("/v1/files", headers=alice).json()["data"] == []


def test_bad_uploads_answer_422_or_413(client, alice):
    assert_problem(upload(client, alice, "teacher", "t.pt", b"not a checkpoint"), 422)
    assert_problem(upload(client, alice, "dataset", "d.csv", b"1,2,3"), 422)
    assert_problem(upload(client, alice, "dataset", "d.npz", b"PK broken"), 422)
    assert_problem(upload(client, alice, "weights", "t.pt", b"x"), 422)
    evil_zip = io.BytesIO()
    with zipfile.ZipFile(evil_zip, "w") as archive:
        archive.writestr("../../escape.png", b"x")
    assert_problem(upload(client, alice, "dataset", "d.zip", evil_zip.getvalue()), 422)
    assert_problem(upload(client, alice, "teacher", "big.pt", b"0" * 2_100_000), 413)
    assert_problem(client.post("/v1/files?purpose=teacher", content=b"x", headers=alice), 422)
    assert client.get("/v1/files", headers=alice).json()["data"] == []


def test_a_file_used_by_a_live_job_cannot_be_deleted(client, alice):
    file = upload(client, alice, "teacher", "t.safetensors", teacher_bytes()).json()["id"]
    job = client.post(
        "/v1/jobs",
        headers=alice,
        json={
            "mode": "distill",
            "student": {"architecture": "mlp_small"},
            "dataset": {"name": "digits"},
            "teacher": {"architecture": "mlp", "checkpoint": file},
        },
    ).json()["id"]
    assert_problem(client.delete(f"/v1/files/{file}", headers=alice), 409)
    client.post(f"/v1/jobs/{job}/cancel", headers=alice)
    assert client.delete(f"/v1/files/{file}", headers=alice).status_code == 204
    assert_problem(client.get(f"/v1/files/{file}", headers=alice), 404)


def test_catalog_lists_the_zoo_and_the_datasets(client, alice):
    architectures = {a["name"]: a for a in client.get("/v1/architectures", headers=alice).json()}
    assert architectures["resnet20"]["parameters"] == pytest.approx(0.27e6, rel=0.05)
    assert "penultimate" in architectures["resnet20"]["stages"]
    datasets = {d["name"]: d for d in client.get("/v1/datasets", headers=alice).json()}
    assert datasets["digits"]["num_classes"] == 10 and datasets["digits"]["input_shape"] == [
        1,
        8,
        8,
    ]


def test_operations_routes(client, parts, alice):
    assert client.get("/readyz").json()["checks"]["database"] == "ok"
    client.post("/v1/jobs", json=SUPERVISED, headers=alice)
    # /metrics counts every owner's jobs: it needs a key with the admin scope.
    assert_problem(client.get("/metrics"), 401)
    assert_problem(client.get("/metrics", headers=alice), 403)
    admin = {"Authorization": f"Bearer {parts.keys.create('ops', admin=True)[1]}"}
    text = client.get("/metrics", headers=admin).text
    assert 'otrt_jobs{status="queued"} 1.0' in text and "otrt_queue_depth 1.0" in text
    assert 'otrt_http_request_duration_seconds_count{method="POST",route="/v1/jobs"' in text
    assert client.get("/openapi.json").json()["info"]["title"] == "otrt"
    assert_problem(client.get("/v1/nothing-here", headers=alice), 404)


def test_a_report_is_404_until_the_job_has_one(client, alice, bob):
    job = client.post("/v1/jobs", json=SUPERVISED, headers=alice).json()["id"]
    problem = assert_problem(client.get(f"/v1/jobs/{job}/report", headers=alice), 404)
    assert "it is queued" in problem["detail"]
    assert_problem(client.get(f"/v1/jobs/{job}/report", headers=bob), 404)  # not bob's


def test_a_dead_processes_partial_uploads_go_at_the_next_start_a_live_ones_stay(parts):
    """Partial files name their writer (host and process): at start, those of a process
    of this host that is gone are removed at once; a live writer's stay for the grace."""
    import os
    import socket
    import subprocess
    import sys

    from otrt_core.atomic import written_by_dead_process

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = socket.gethostname()
    dead, live = f"~{host}~{int(gone.stdout)}~", f"~{host}~{os.getpid()}~"
    root = parts.service.storage.root
    (root / "uploads").mkdir(parents=True, exist_ok=True)
    (root / "artifacts" / "job_x").mkdir(parents=True, exist_ok=True)
    left = {
        "uploads/file_a" + dead + ".upload": True,
        "artifacts/job_x/.student.onnx." + dead + "abc.part": True,
        "uploads/file_b" + live + ".upload": False,  # an upload in flight
        "uploads/file_c~elsewhere~1~.upload": False,  # another host's: the grace decides
    }
    for key in left:
        (root / key).write_bytes(b"partial")
    assert written_by_dead_process(dead) and not written_by_dead_process(live)
    removed = parts.service.remove_orphans(grace_seconds=3600)
    assert sorted(removed) == sorted(key for key, goes in left.items() if goes)
    assert all((root / key).exists() != goes for key, goes in left.items())
