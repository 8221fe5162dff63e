"""bench/sweep.py runs end to end on the real services (no timing asserted)."""

import json

import pytest

from tests.bench.helpers import needs_dataset, run_bench
from tests.service.conftest import redis_database


@pytest.mark.slow
@pytest.mark.services
def test_a_small_run_reports_each_part(tmp_path, database_url, redis_url):
    needs_dataset("fashion_mnist")
    out = tmp_path / "sweep.json"
    run_bench(
        "sweep.py",
        "--trials=2",
        "--rounds=1",
        "--epochs=1",
        "--asha-epochs=3",  # rungs at epochs 1 and 3
        "--cache-trials=2",
        "--cache-inputs=1000",
        f"--database-url={database_url}",
        f"--redis-url={redis_database(redis_url, 'sweeps')}",
        f"--out={out}",
    )
    report = json.loads(out.read_text())
    walls = report["parallel"]["wall_seconds"]
    assert len(walls["one_at_a_time"]) == len(walls["two_at_a_time"]) == 1
    assert (
        report["parallel"]["ratio_two_over_one"]
        == walls["two_at_a_time"][0] / walls["one_at_a_time"][0]
    )
    without, with_asha = report["asha"]["none"], report["asha"]["asha"]
    assert without["epochs_trained"] == without["epochs_without_stopping"] == 6
    assert with_asha["epochs_trained"] <= 6 and without["pruned_trials"] == 0
    sources = report["teacher_cache"]["claim_to_start_seconds"]
    assert len(sources["memory"]) == 1 and len(sources["shared"]) == 1  # built once, read once
    cancelled = report["cancel"]
    assert cancelled["trials"] == ["cancelled", "cancelled"]  # the next points never planned
    assert cancelled["seconds_to_cancelled"] > 0
