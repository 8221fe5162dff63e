"""The in-process API that service tests drive: parts over a real database, keys, helpers.

Jobs here are only queued: the dispatcher records ids instead of running them.
"""

from __future__ import annotations

import io

import torch
from fastapi.testclient import TestClient

from api.app import AppParts, create_app
from otrt_core.jobs.db import make_sessions
from otrt_core.jobs.files import FileRecords
from otrt_core.jobs.keys import KeyStore
from otrt_core.jobs.service import Service
from otrt_core.jobs.storage import LocalStorage
from otrt_core.jobs.store import JobStore
from otrt_core.models import build_model
from worker.execution import Executor

SUPERVISED = {
    "mode": "supervised",
    "student": {"architecture": "mlp"},
    "dataset": {"name": "digits"},
}


class RecordingDispatcher:
    def __init__(self) -> None:
        self.dispatched: list[str] = []

    def dispatch(self, job_id: str) -> None:
        self.dispatched.append(job_id)


def make_parts(engine, tmp_path, *, auth: bool = True, **service_options) -> AppParts:
    """The app's parts over ``engine``, with a dispatcher that only records ids."""
    sessions = make_sessions(engine)
    service = Service(
        JobStore(sessions),
        FileRecords(sessions),
        LocalStorage(tmp_path / "store"),
        RecordingDispatcher(),
        **({"max_upload_bytes": 2_000_000} | service_options),
    )
    return AppParts(engine=engine, service=service, keys=KeyStore(sessions), auth=auth)


def key_header(parts: AppParts, name: str, **options) -> dict[str, str]:
    """The Authorization header of a new key called ``name``."""
    return {"Authorization": f"Bearer {parts.keys.create(name, **options)[1]}"}


def api_client(parts: AppParts) -> TestClient:
    """A client of the app over ``parts``; it also exposes the recorded dispatches and store."""
    client = TestClient(create_app(parts))
    client.dispatched = parts.service.dispatcher.dispatched
    client.store = parts.service.store
    return client


def teacher_bytes(fmt: str = "safetensors", architecture: str = "mlp") -> bytes:
    state = build_model(architecture, num_classes=10, input_shape=(1, 8, 8)).state_dict()
    buffer = io.BytesIO()
    if fmt == "safetensors":
        from safetensors.torch import save

        return save({k: v.contiguous() for k, v in state.items()})
    torch.save(state, buffer)
    return buffer.getvalue()


def upload(client, headers, purpose: str, name: str, data: bytes):
    return client.post(
        f"/v1/files?purpose={purpose}", content=data, headers=headers | {"X-Filename": name}
    )


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def local_executor(store: JobStore, tmp_path, **options) -> Executor:
    """An executor over ``store`` that keeps its files under ``tmp_path`` (lease owner w1)."""
    return Executor(
        store=store,
        files=FileRecords(store.sessions),
        storage=LocalStorage(tmp_path / "store"),
        work_root=tmp_path / "work",
        name="w1",
        lease_seconds=60,
        heartbeat_seconds=0.5,
        **options,
    )
