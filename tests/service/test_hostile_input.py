"""What a hostile client sends, in process on PostgreSQL and SQLite: every answer a
problem document, never a 500, and nothing left behind."""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import numpy as np

from api.app import create_app
from otrt_core.jobs.inspection import InspectionLimits
from otrt_core.jobs.tables import Artifact
from tests.service.api_helpers import SUPERVISED, api_client, assert_problem, make_parts, upload
from tests.utils.bombs import image_bomb, npz_bomb


def service_app(engine, tmp_path, **service_options):
    """A client of an app with auth off and these service options."""
    return api_client(make_parts(engine, tmp_path, auth=False, **service_options))


def stored_uploads(tmp_path) -> list[str]:
    root = tmp_path / "store" / "uploads"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_decompression_bombs_are_413_naming_the_member_and_leave_nothing(engine, tmp_path):
    limits = InspectionLimits(max_decoded_bytes=64 << 20)
    with service_app(engine, tmp_path, inspection=limits) as http:
        bomb = npz_bomb(tmp_path / "bomb.npz")
        response = upload(http, {}, "dataset", bomb.name, bomb.read_bytes())
        body = assert_problem(response, 413)
        assert "x_train.npy" in body["detail"] and str(64 << 20) in body["detail"]
        assert stored_uploads(tmp_path) == []
        # Images past the in-memory limit are no error at upload: such a zip is kept to be
        # registered, where the converter decodes (and refuses) one image at a time.
        images = image_bomb(tmp_path / "bomb.zip")
        response = upload(http, {}, "dataset", images.name, images.read_bytes())
        assert response.status_code == 201, response.text
        registration = response.json()["details"]["registration"]
        assert "train/a/0.png" in registration and "register it" in registration


def test_a_chunked_multipart_body_is_refused_once_it_passes_the_limit(engine, tmp_path):
    """500 MB sent without Content-Length against a 100 KB limit: the server stops reading."""
    limit, sent = 100_000, [0]
    app = create_app(make_parts(engine, tmp_path, auth=False, max_upload_bytes=limit))

    async def body():
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n\r\n'
        for chunk in [head] + [bytes(64 * 1024)] * (500 * 16):
            sent[0] += len(chunk)
            yield chunk
        yield b"\r\n--b--\r\n"

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            headers = {"Content-Type": "multipart/form-data; boundary=b"}
            return await http.post("/v1/files?purpose=dataset", content=body(), headers=headers)

    response = asyncio.run(post())
    assert_problem(response, 413)
    assert sent[0] <= limit + (1 << 20)
    assert stored_uploads(tmp_path) == []


def test_a_multipart_upload_still_works_when_streamed(client, alice):
    arrays = io.BytesIO()
    np.savez(arrays, x_train=np.zeros((20, 4), np.float32), y_train=np.arange(20) % 2)
    files = {"file": ("mine.npz", arrays.getvalue(), "application/octet-stream")}
    url = "/v1/files?purpose=dataset"
    response = client.post(url, files=files, data={"note": "x"}, headers=alice)
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "mine.npz"
    assert response.json()["bytes"] == len(arrays.getvalue())
    no_file = client.post(url, files={"other": ("a.npz", b"x")}, headers=alice)
    assert_problem(no_file, 422)


def test_json_bodies_and_metadata_are_bounded(engine, tmp_path):
    with service_app(engine, tmp_path) as http:
        huge = SUPERVISED | {"metadata": {"note": "x" * (2 << 20)}}
        assert_problem(http.post("/v1/jobs", json=huge), 413)

        def chunked():  # no Content-Length: counted as it is read
            text = json.dumps(huge).encode()
            for start in range(0, len(text), 65536):
                yield text[start : start + 65536]

        assert_problem(http.post("/v1/jobs", content=chunked()), 413)
        many_keys = SUPERVISED | {"metadata": {f"k{i}": "v" for i in range(33)}}
        assert_problem(http.post("/v1/jobs", json=many_keys), 422)
        long_value = SUPERVISED | {"metadata": {"note": "x" * 1025}}
        body = assert_problem(http.post("/v1/jobs", json=long_value), 422)
        assert body["errors"][0]["loc"] == ["body", "metadata"]
        assert len(http.get("/v1/jobs").json()["data"]) == 0


def test_event_cursors_are_bounded_integers(client, alice):
    job = client.post("/v1/jobs", json=SUPERVISED, headers=alice).json()
    events = f"/v1/jobs/{job['id']}/events"
    assert_problem(client.get(f"{events}?after=9223372036854775808", headers=alice), 422)
    assert client.get(f"{events}?after=9223372036854775807", headers=alice).json() == []
    # Header values travel as bytes; non-ASCII digits arrive as latin-1 or UTF-8 bytes.
    for last_event_id in [b"1" + b"0" * 30, "²".encode(), "٣".encode(), b"-1", b"x"]:
        headers = alice | {"Last-Event-ID": last_event_id}
        assert_problem(client.get(events, headers=headers), 422)
    assert len(client.get(events, headers=alice | {"Last-Event-ID": "0"}).json()) == 1
    parameters = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/events"]["get"]
    ranges = {p["name"]: p["schema"] for p in parameters["parameters"] if p["in"] != "path"}
    assert ranges["after"]["maximum"] == 2**63 - 1 and ranges["after"]["minimum"] == 0
    last = ranges["last-event-id"]["anyOf"][0]
    assert last["maximum"] == 2**63 - 1 and last["minimum"] == 0


def test_empty_and_corrupt_uploads_are_422_and_leave_no_file(client, alice, tmp_path):
    for content in [b"", b"PK\x03\x04 broken", b"\x93NUMPY garbage"]:
        body = assert_problem(upload(client, alice, "dataset", "d.npz", content), 422)
        assert "/" not in body["detail"].replace("train/", "")  # no server path
    labels = io.BytesIO()
    np.savez(labels, x_train=np.zeros((3, 4)), y_train=np.array([0, 1, 2**40]))
    body = assert_problem(upload(client, alice, "dataset", "d.npz", labels.getvalue()), 422)
    assert "1099511627776" in body["detail"]
    assert client.get("/v1/files", headers=alice).json()["data"] == []


def test_values_that_would_fail_at_run_time_are_refused_at_submission(client, alice):
    def submit(training: dict, raw: str | None = None):
        body = raw or json.dumps(SUPERVISED | {"training": training})
        headers = alice | {"Content-Type": "application/json"}
        return client.post("/v1/jobs", content=body, headers=headers)

    infinity = json.dumps(SUPERVISED | {"training": {"lr": 1.0}}).replace("1.0", "Infinity")
    for response in [
        submit({}, raw=infinity),
        submit({}, raw=infinity.replace("Infinity", "NaN")),
        submit({"lr": 1e308}),
        submit({"seed": 2**64}),
        submit({"epochs": 10**9}),
    ]:
        body = assert_problem(response, 422)
        assert body["errors"][0]["loc"][:2] == ["body", "training"], body
    assert_problem(client.post("/v1/jobs", json=SUPERVISED | {"priority": 11}, headers=alice), 422)
    assert client.get("/v1/jobs", headers=alice).json()["data"] == []


def test_range_errors_are_problem_documents(client, alice, parts, tmp_path):
    job = client.post("/v1/jobs", json=SUPERVISED, headers=alice).json()
    store, storage = parts.service.store, parts.service.storage
    stored = storage.put(f"artifacts/{job['id']}/metrics.json", _write(tmp_path, b"{}" * 10))
    lease = store.claim_next("w", 60)

    store.add_artifacts(
        lease,
        [
            Artifact(
                job_id=job["id"],
                name="metrics.json",
                bytes=20,
                sha256=stored.sha256,
                path=stored.key,
            )
        ],
    )
    url = f"/v1/jobs/{job['id']}/artifacts/metrics.json"
    assert client.get(url, headers=alice | {"Range": "bytes=2-5"}).status_code == 206
    assert_problem(client.get(url, headers=alice | {"Range": "pages=1-2"}), 400)
    unsatisfiable = client.get(url, headers=alice | {"Range": "bytes=999-"})
    assert_problem(unsatisfiable, 416)
    assert unsatisfiable.headers["content-range"] == "bytes */20"


def _write(tmp_path, data: bytes):
    path = tmp_path / "artifact"
    path.write_bytes(data)
    return path


def test_a_malformed_multipart_body_is_422_and_leaves_nothing(engine, tmp_path):
    """schemathesis found it: a part header the parser rejects was a 500."""
    client = service_app(engine, tmp_path)
    boundary = "a222103b9b30b1f9e8be6882ecedb1d2"
    body = f"--{boundary}\\r\\n[]--{boundary}--\\r\\n".encode()
    response = client.post(
        "/v1/files?purpose=teacher",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    problem = assert_problem(response, 422)
    assert "malformed" in problem["errors"][0]["msg"]
    assert stored_uploads(tmp_path) == []
