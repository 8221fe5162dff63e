"""`otrt migrate`, `otrt keys create` and `otrt serve`'s auth rules, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.utils.processes import start_server


def otrt(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otrt", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | env,
    )


def test_migrate_then_a_created_key_opens_an_auth_on_server(tmp_path):
    env = {"OTRT_DATA_DIR": str(tmp_path)}
    migrated = otrt("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "otrt.db").exists()
    created = otrt("keys", "create", "--name", "ci", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("otrt_") and "shown once" in created.stderr
    assert key not in (tmp_path / "otrt.db").read_bytes().decode(errors="replace")  # hashed

    process, client = start_server(tmp_path, extra_env={"OTRT_AUTH": "on"})
    try:
        assert client.get("/v1/jobs").status_code == 401
        response = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200 and response.json()["data"] == []
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=60)
    assert "auth:      on" in output


def test_auth_off_is_refused_off_loopback(tmp_path):
    refused = otrt(
        "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path), env={"OTRT_AUTH": "off"}
    )
    assert refused.returncode == 2
    assert "auth cannot be off on 0.0.0.0" in refused.stderr
