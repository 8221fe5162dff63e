"""Helpers for tests that start real server and worker processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def run_pytest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """pytest in a child process from the project's root, quiet, with ``env`` added."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_gone(pid: int, within: float) -> bool:
    """Whether process ``pid`` is gone within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def wait_until_healthy(
    client: httpx.Client, process: subprocess.Popen, output: Callable[[], str], timeout: float = 60
) -> None:
    """Polls ``/healthz`` until it answers 200; fails with the process's output if it died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, output()
        assert time.monotonic() < deadline, f"no answer on {client.base_url}/healthz"
        time.sleep(0.2)


def start_server(
    data_dir: Path, extra_env: dict[str, str] | None = None, command: str = "serve"
) -> tuple[subprocess.Popen, httpx.Client]:
    """`otrt serve` (or `otrt api`) on a free port with a short heartbeat, once it answers
    /healthz; its data directory is ``data_dir``."""
    port = free_port()
    env = os.environ | {
        "OTRT_TORCH_THREADS": "1",
        "OTRT_HEARTBEAT_SECONDS": "0.5",
        "OTRT_DATA_DIR": str(data_dir),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "otrt", command, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env | (extra_env or {}),
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    wait_until_healthy(client, process, lambda: process.stdout.read())
    return process, client
