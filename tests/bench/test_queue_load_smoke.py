"""bench/queue_load.py runs end to end on the real services (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import redis_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.services
def test_a_small_run_reports_throughput_dispatch_and_recovery(tmp_path, database_url, redis_url):
    out = tmp_path / "queue_load.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "queue_load.py"),
        "--jobs=2",
        f"--database-url={database_url}",
        f"--redis-url={redis_database(redis_url, 'queue_load')}",
        f"--out={out}",
    ]
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, timeout=600)
    report = json.loads(out.read_text())
    assert report["workers_1"]["succeeded"] == report["workers_2"]["succeeded"] == 2
    assert report["recovery_after_sigkill_seconds"] > 0
    # Five samples are reported as median and max, never as a "p99".
    assert report["idle_dispatch_seconds"]["samples"] == 5
    assert "p99" not in report["idle_dispatch_seconds"]
