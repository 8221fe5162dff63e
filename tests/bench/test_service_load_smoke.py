"""bench/service_load.py runs end to end against a real `otrt serve` (no timing asserted)."""

import json

import pytest

from tests.bench.helpers import run_bench


@pytest.mark.slow
def test_a_short_run_reports_latencies_and_dispatch(tmp_path):
    out = tmp_path / "service_load.json"
    run_bench(
        "service_load.py", "--rate=50", "--seconds=1", "--jobs=1", f"--out={out}", cwd=tmp_path
    )
    report = json.loads(out.read_text())
    assert report["get_job"]["count"] + report["list_jobs"]["count"] == 50
    assert report["errors"] == []  # every request answered 200 with the key (auth on)
    trained = report["training_meanwhile"]["progress"]  # a job was training meanwhile
    assert trained["epochs"] == 500 and trained["steps"] > 0
    assert report["idle_rss_mb"] < 200  # the API process holds no torch
