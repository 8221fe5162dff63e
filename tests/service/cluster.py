"""A real distributed otrt for tests: PostgreSQL schema, Redis, `otrt api`, `otrt worker`s.

Every process is a real one started the way an operator would start it; the
test owns them and can SIGKILL or restart any.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.utils.processes import free_port, wait_until_healthy


class Cluster:
    def __init__(
        self, root: Path, database_url: str, broker_url: str, env: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.env = (
            os.environ
            | (env or {})
            | {
                "OTRT_DATABASE_URL": database_url,
                "OTRT_BROKER_URL": broker_url,
                "OTRT_DATA_DIR": str(root / "data"),
                "OTRT_AUTH": "off",
                "OTRT_TORCH_THREADS": "1",
                "OTRT_HEARTBEAT_SECONDS": "0.5",
                "OTRT_LEASE_SECONDS": "3",
                "OTRT_REQUEUE_AFTER_SECONDS": "5",
            }
        )
        self.processes: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.api_process: subprocess.Popen | None = None
        self.client: httpx.Client | None = None
        subprocess.run(self._otrt("migrate"), env=self.env, check=True, capture_output=True)

    def _otrt(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "otrt", *args]

    def _start(
        self, command: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = open(self.root / log_name, "ab")  # noqa: SIM115  closed with the process
        process = subprocess.Popen(
            command, env=self.env | (env or {}), stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """A worker; ``env`` adds to the cluster's (its own data directory: another host)."""
        self.workers[name] = self._start(
            self._otrt("worker", "--hostname", f"{name}@test"), f"{name}.log", env
        )
        return self.workers[name]

    def start_api(self) -> httpx.Client:
        port = free_port()
        self.api_process = self._start(self._otrt("api", "--port", str(port)), "api.log")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        wait_until_healthy(self.client, self.api_process, lambda: self.log("api.log"))
        return self.client

    def stop_api(self) -> None:
        self.api_process.terminate()
        self.api_process.wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.root / name).read_text(errors="replace")[-4000:]

    def submit(self, body: dict) -> str:
        response = self.client.post("/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/v1/jobs/{job_id}").json()

    def events(self, job_id: str) -> list[dict]:
        return self.client.get(f"/v1/jobs/{job_id}/events").json()

    def wait(self, job_id: str, statuses: set[str], timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] not in statuses:
            assert time.monotonic() < deadline, (job, self.events(job_id))
            time.sleep(0.3)
        return job

    def wait_event(self, job_id: str, type_: str, count: int = 1, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while len(matching := [e for e in self.events(job_id) if e["type"] == type_]) < count:
            assert time.monotonic() < deadline, self.events(job_id)
            time.sleep(0.3)
        return matching[count - 1]

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.client is not None:
            self.client.close()
