"""bench/loader.py runs end to end on a few images (the benchmark itself measures)."""

import json

from tests.bench.helpers import run_bench


def test_the_loader_benchmark_compares_every_reader(tmp_path):
    out = tmp_path / "loader.json"
    run_bench("loader.py", "--images", "24", "--size", "32", "--rounds", "1", "--out", str(out))
    report = json.loads(out.read_text())
    expected = {"torchvision_imagefolder", "otrt_streamed_local", "wids_same_shards"}
    assert expected <= set(report["images_per_second"])
    assert all(rate > 0 for rate in report["images_per_second"].values())
