"""A hostile client against a real `otrt serve`: bombs cost the server nothing, failures
name no server path, a spec.json can be sent again, and owners take turns."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.utils.bombs import image_bomb, npz_bomb
from tests.utils.processes import start_server

pytestmark = pytest.mark.slow

QUICK = {
    "mode": "supervised",
    "student": {"architecture": "mlp_small"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 1, "batch_size": 256},
}
CAP = 64 << 20  # OTRT_MAX_DECODED_BYTES of the server under test


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def wait(client: httpx.Client, job_id: str, statuses=("succeeded", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + 180
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in statuses:
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    return job


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A server with a small decoded-size cap, started over a data dir with orphans in it."""
    data_dir = tmp_path_factory.mktemp("hostile-data")
    uploads = data_dir / "store" / "uploads"
    uploads.mkdir(parents=True)
    orphans = [uploads / "file_gone.npz", uploads / "tmpabc.part", uploads / "file_x.upload"]
    for orphan in orphans:
        orphan.write_bytes(b"left by a crash")
    env = {"OTRT_MAX_DECODED_BYTES": str(CAP), "OTRT_ORPHAN_GRACE_SECONDS": "0"}
    process, client = start_server(data_dir, extra_env=env)
    yield process, client, data_dir, orphans
    process.terminate()
    process.communicate(timeout=60)


def test_orphaned_uploads_are_removed_on_start(hostile):
    _, _, _, orphans = hostile
    assert [path.exists() for path in orphans] == [False] * len(orphans)


def test_bombs_are_refused_and_the_server_s_memory_stays_within_the_cap(hostile, tmp_path):
    """The arrays bomb is 413; the images bomb is kept for registration (the converter
    decodes one image at a time), as no-one decoded it: the server's memory says so."""
    process, client, _, _ = hostile
    before = peak_rss(process.pid)
    codes = {}
    for bomb in (image_bomb(tmp_path / "b.zip"), npz_bomb(tmp_path / "b.npz")):
        response = client.post(
            "/v1/files?purpose=dataset",
            content=bomb.read_bytes(),
            headers={"X-Filename": bomb.name},
        )
        codes[bomb.suffix] = response.status_code
        if response.status_code == 413:
            assert response.headers["content-type"] == "application/problem+json"
    assert codes == {".zip": 201, ".npz": 413}
    assert peak_rss(process.pid) - before < CAP
    (kept,) = client.get("/v1/files").json()["data"]
    assert (
        kept["details"]["input_shape"] is None and "register it" in kept["details"]["registration"]
    )


def test_a_diverged_job_fails_with_one_line_and_no_server_path(hostile):
    _, client, data_dir, _ = hostile
    training = {"lr": 10.0, "momentum": 0.99, "weight_decay": 1.0, "schedule": "constant"}
    job_id = client.post("/v1/jobs", json=QUICK | {"training": training}).json()["id"]
    job = wait(client, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "diverged", job
    message = job["error"]["message"]
    assert "\n" not in message and "Traceback" not in message
    assert str(data_dir) not in message and "non-finite" in message
    assert client.get(f"/v1/jobs/{job_id}/artifacts").json() == []


def test_spec_json_names_ids_and_can_be_submitted_again(hostile, tmp_path):
    _, client, data_dir, _ = hostile
    import numpy as np

    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((60, 8), np.float32), y_train=np.arange(60) % 3)
    upload = client.post(
        "/v1/files?purpose=dataset", content=path.read_bytes(), headers={"X-Filename": path.name}
    )
    file_id = upload.json()["id"]
    body = QUICK | {"dataset": {"name": file_id}, "student": {"architecture": "mlp_small"}}
    job = wait(client, client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", job
    spec = client.get(f"/v1/jobs/{job['id']}/artifacts/spec.json").json()
    assert spec["dataset"]["name"] == file_id and str(data_dir) not in str(spec)
    again = client.post("/v1/jobs", json=spec)
    assert again.status_code == 201, again.text
    # The same job, with the value the trainer sized from the data now written out.
    assert again.json()["spec"] == spec
    assert job["spec"]["training"]["lr"] is None and spec["training"]["lr"] > 0
    assert job["spec"] | {"training": None} == spec | {"training": None}


def test_owners_take_turns_in_the_embedded_executor(tmp_path):
    data_dir = tmp_path / "data"
    env = os.environ | {"OTRT_DATA_DIR": str(data_dir)}

    def key(name: str) -> dict[str, str]:
        created = subprocess.run(
            [sys.executable, "-m", "otrt", "keys", "create", "--name", name],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return {"Authorization": f"Bearer {created.stdout.strip()}"}

    a, b = key("a"), key("b")
    process, client = start_server(data_dir, extra_env={"OTRT_AUTH": "on"})
    try:
        a_jobs = [client.post("/v1/jobs", json=QUICK, headers=a).json()["id"] for _ in range(4)]
        b_job = client.post("/v1/jobs", json=QUICK, headers=b).json()["id"]

        def wait_job(job_id: str, headers: dict[str, str]) -> dict:
            with httpx.Client(base_url=client.base_url, headers=headers) as owner:
                return wait(owner, job_id)

        b_done = wait_job(b_job, b)
        started = {job_id: wait_job(job_id, a)["started_at"] for job_id in a_jobs[:2]}
        # a's first job was running when b submitted; b's started next, before a's second.
        assert started[a_jobs[0]] < b_done["started_at"] < started[a_jobs[1]]
    finally:
        process.terminate()
        process.communicate(timeout=60)
