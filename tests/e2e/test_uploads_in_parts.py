"""Uploads in parts (API.md v1.3) through `otrt serve`: the routes' refusals, and
`otrt datasets push` of camera-sized photos killed mid-push and resumed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import otrt
from tests.utils.images import photo_tree
from tests.utils.processes import start_server

pytestmark = pytest.mark.slow

PART = 65536  # the smallest part the service takes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {"OTRT_MAX_PUSH_BYTES": str(200 * 1024**2)}
    process, http = start_server(tmp_path_factory.mktemp("served"), extra_env=env)
    yield http
    process.terminate()
    process.communicate(timeout=60)


def _begin(http: httpx.Client, data: bytes, **extra) -> dict:
    body = {"filename": "set.zip", "size": len(data), "part_size": PART} | extra
    answer = http.post("/v1/uploads", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _put(http: httpx.Client, upload: dict, number: int, data: bytes) -> httpx.Response:
    return http.put(f"/v1/uploads/{upload['id']}/parts/{number}", content=data)


def _zip_bytes(tmp_path: Path) -> bytes:
    """A small real ImageFolder zip of 2 x 4 photos (several parts)."""
    from otrt.push import zipped_tree

    photo_tree(tmp_path / "small", per_class=4, sizes=(800, 1200))
    with zipped_tree(tmp_path / "small") as archive:
        return archive.read_bytes()


def test_parts_sent_in_any_order_twice_and_resumed_make_one_file(server, tmp_path):
    data = _zip_bytes(tmp_path)
    upload = _begin(server, data, sha256=hashlib.sha256(data).hexdigest())
    parts = upload["parts"]
    assert [p["number"] for p in parts] == list(range(1, len(parts) + 1)) and len(parts) > 2
    assert sum(p["bytes"] for p in parts) == len(data) and upload["stored"] == []
    chunks = [data[i : i + PART] for i in range(0, len(data), PART)]
    for number in (3, 1, 3):  # out of order, and part 3 twice (the second replaces it)
        assert _put(server, upload, number, chunks[number - 1]).status_code == 200
    stored = server.get(f"/v1/uploads/{upload['id']}").json()["stored"]
    assert [p["number"] for p in stored] == [1, 3]
    assert stored[1]["etag"] == hashlib.sha256(chunks[2]).hexdigest()
    missing = server.post(f"/v1/uploads/{upload['id']}/complete")
    assert missing.status_code == 422 and "parts missing: 2, 4" in missing.json()["detail"]
    for number in range(1, len(chunks) + 1):  # what a resumed push sends: the rest
        if number not in (1, 3):
            assert _put(server, upload, number, chunks[number - 1]).status_code == 200
    done = server.post(f"/v1/uploads/{upload['id']}/complete")
    assert done.status_code == 201, done.text
    file = done.json()
    assert file["id"].startswith("file_") and file["bytes"] == len(data)
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert server.get(f"/v1/uploads/{upload['id']}").status_code == 404  # parts freed


def test_a_part_of_the_wrong_size_or_number_is_refused_and_nothing_kept(server, tmp_path):
    data = os.urandom(2 * PART + 10)
    upload = _begin(server, data)
    past = _put(server, upload, 3, data[2 * PART :] + b"more")  # past the declared size
    assert past.status_code == 422 and "past the declared size" in past.json()["detail"]
    short = _put(server, upload, 1, data[:100])
    assert short.status_code == 422 and "must have 65536" in short.json()["detail"]
    assert _put(server, upload, 4, b"x").status_code == 422  # no part 4
    assert server.get(f"/v1/uploads/{upload['id']}").json()["stored"] == []
    assert server.delete(f"/v1/uploads/{upload['id']}").status_code == 204
    assert _put(server, upload, 1, data[:PART]).status_code == 404  # aborted


def test_a_whole_that_is_not_what_was_declared_is_refused(server, tmp_path):
    data = os.urandom(PART + 1)
    upload = _begin(server, data, sha256="0" * 64)
    for number, chunk in ((1, data[:PART]), (2, data[PART:])):
        assert _put(server, upload, number, chunk).status_code == 200
    wrong = server.post(f"/v1/uploads/{upload['id']}/complete")
    assert wrong.status_code == 422 and "not the declared" in wrong.json()["detail"]
    too_big = server.post("/v1/uploads", json={"filename": "a.zip", "size": 300 * 1024**2})
    assert too_big.status_code == 413
    assert server.post("/v1/uploads", json={"filename": "a.exe", "size": 10}).status_code == 422
    tiny = {"filename": "a.zip", "size": 10, "part_size": 10}
    assert server.post("/v1/uploads", json=tiny).status_code == 422  # below 64 KiB


def test_a_push_killed_midway_resumes_with_the_parts_it_had_sent(server, tmp_path):
    """`otrt datasets push` of 40 photos of 1500-4000 px in 64 KiB parts, one at a time,
    SIGKILLed once some parts are stored; run again, it sends only the rest."""
    photos = tmp_path / "photos"
    photo_tree(photos, per_class=20)
    env = os.environ | {"XDG_CACHE_HOME": str(tmp_path / "cache"), "OTRT_URL": ""}
    command = [sys.executable, "-m", "otrt", "datasets", "push", str(photos)]
    command += ["--url", str(server.base_url), "--part-size", str(PART), "--parallel", "1"]
    command += ["--no-wait", "--json"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    records = tmp_path / "cache" / "otrt" / "uploads"
    deadline = time.monotonic() + 120
    stored: list = []
    while len(stored) < 20:  # some parts stored, far from all
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
        time.sleep(0.1)
        for record in records.glob("*.json") if records.exists() else []:
            upload_id = json.loads(record.read_text())["upload_id"]
            stored = server.get(f"/v1/uploads/{upload_id}").json()["stored"]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    upload = server.get(f"/v1/uploads/{upload_id}").json()
    kept = {p["number"]: p["etag"] for p in upload["stored"]}
    assert 20 <= len(kept) < len(upload["parts"])
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resuming {upload_id}: {len(kept)}" in second.stderr
    assert not list(records.glob("*.json"))  # done: nothing left to resume
    dataset = json.loads(second.stdout)
    with otrt.Client(str(server.base_url), timeout=60) as client:
        ready = client.wait_dataset(dataset["id"], timeout=240)
    assert ready["status"] == "ready", ready["error"]
    assert ready["counts"]["train"] == {"class_0": 20, "class_1": 20}
    assert min(ready["images"]["min"]) >= 1500 and max(ready["images"]["max"]) < 4000


def test_parts_of_the_default_size_pass_the_json_body_limit(server):
    """A 16 MiB part (the default part size) is an upload's body, not a JSON body: the
    1 MiB JSON limit does not apply to it (it refused every real push)."""
    data = os.urandom(16 * 1024**2 + 5)
    upload = server.post("/v1/uploads", json={"filename": "set.zip", "size": len(data)}).json()
    assert upload["part_size"] == 16 * 1024**2 and len(upload["parts"]) == 2
    stored = _put(server, upload, 1, data[: upload["part_size"]])
    assert stored.status_code == 200, stored.text
    assert server.delete(f"/v1/uploads/{upload['id']}").status_code == 204
