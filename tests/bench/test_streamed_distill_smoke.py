"""bench/streamed_distill.py runs end to end on a tiny snapshot (the benchmark itself
measures; this checks the script and what it reports)."""

from __future__ import annotations

import json

import pytest

from tests.bench.helpers import run_bench


@pytest.mark.slow
def test_the_streamed_distill_benchmark_times_both_paths(tmp_path):
    out = tmp_path / "streamed_distill.json"
    run_bench(
        "streamed_distill.py",
        *("--images", "120", "--epochs", "2", "--rounds", "1"),
        *("--cache", str(tmp_path / "images"), "--out", str(out)),
    )
    report = json.loads(out.read_text())
    names = {"supervised_memory", "supervised_streamed", "distill_memory", "distill_streamed"}
    assert set(report["epoch_seconds"]) == names
    assert all(seconds > 0 for seconds in report["epoch_seconds"].values())
    assert report["distill_streamed_over_memory"] > 0
    assert report["teacher_cache"]["distill_memory"] != "off"
    assert report["teacher_cache"]["distill_streamed"] != "off", report["teacher_cache_off"]
