"""bench/streamed_memory.py runs end to end at two tiny sizes (the benchmark itself
measures)."""

import json

import pytest

from tests.bench.helpers import run_bench


@pytest.mark.slow
def test_the_streamed_memory_benchmark_measures_every_size(tmp_path):
    out = tmp_path / "streamed_memory.json"
    cache = tmp_path / "images"
    run_bench(
        "streamed_memory.py",
        *("--images", "200", "300", "--interval", "0.1"),
        *("--cache", str(cache), "--out", str(out)),
    )
    report = json.loads(out.read_text())
    assert report["images"] == [200, 300]
    for size in ("200", "300"):
        assert report["prepared"][size]["generation_seconds"] > 0
        assert report["prepared"][size]["snapshot_bytes"] > 0
        median = report["median"][size]
        assert 0 < median["seconds_to_start_event"] <= median["seconds_to_first_step_line"]
        assert 0 < median["peak_trainer_pss_mib"] <= median["peak_tree_pss_mib"] < 64 * 1024
        (run,) = report["every_run"][size]
        assert run["data_path"] == "streamed"
        assert run["first_step"] >= 1 and run["peak_processes"] >= 1
        assert run["last_step_seen"] >= run["first_step"]
        assert run["seconds_per_step"] is None or run["seconds_per_step"] > 0
    assert set(report["ratio_300_to_200"]) == set(report["median"]["200"])
    assert all(ratio is None or ratio > 0 for ratio in report["ratio_300_to_200"].values())
