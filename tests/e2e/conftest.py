"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import otrt
from tests.utils.processes import start_server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, key): an auth-on `otrt serve` per test module, and a key from `otrt keys create`."""
    data_dir = tmp_path_factory.mktemp("auth-on-data")
    created = subprocess.run(
        [sys.executable, "-m", "otrt", "keys", "create", "--name", "e2e"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"OTRT_DATA_DIR": str(data_dir)},
    )
    process, http = start_server(data_dir, extra_env={"OTRT_AUTH": "on"})
    yield str(http.base_url), created.stdout.strip()
    process.terminate()
    process.communicate(timeout=60)


@pytest.fixture
def client(served):
    """The SDK's client of the module's auth-on server, with its key."""
    url, key = served
    with otrt.Client(url, key) as client:
        yield client
