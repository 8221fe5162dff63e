"""bench/push.py runs end to end on a few small photos (the benchmark itself measures)."""

import json

import pytest

from tests.bench.helpers import run_bench

METHODS = {"otrt_push", "otrt_push_through_service", "boto3_files", "boto3_zip"}


@pytest.mark.slow
def test_the_push_benchmark_times_push_and_boto3(tmp_path):
    out = tmp_path / "push.json"
    run_bench(
        "push.py",
        *("--photos", "6", "--sizes", "200", "400", "--rounds", "1", "--out", str(out)),
    )
    report = json.loads(out.read_text())
    assert report["photos"] == 6
    assert 0 < report["files_bytes"] < report["zip_bytes"]  # stored, with the zip's headers
    assert set(report["mb_per_second"]) == set(report["seconds"]) == METHODS
    assert all(rate > 0 for rate in report["mb_per_second"].values())
    assert report["push_over_boto3_files"] > 0 and report["push_over_boto3_zip"] > 0
    assert all(len(values) == 1 for values in report["every_round_seconds"].values())
    assert report["conversions_ended"][0].startswith("failed")  # OTRT_MAX_IMAGE_PIXELS=1
