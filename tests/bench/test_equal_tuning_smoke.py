"""bench/equal_tuning.py runs a tiny sweep per method on the embedded service (no accuracy
asserted)."""

import json

import pytest

from tests.bench.helpers import needs_dataset, run_bench


@pytest.mark.slow
def test_a_quick_run_reports_the_best_point_and_both_comparisons(tmp_path):
    needs_dataset("fashion_mnist")
    run_bench(
        "equal_tuning.py",
        "sweeps",
        "--quick",
        "--trials=1",
        "--methods",
        "fitnet",
        f"--out={tmp_path}",
    )
    report = json.loads((tmp_path / "equal_tuning.json").read_text())
    (row,) = report["rows"]
    assert row["method"] == "fitnet" and row["status"] == "succeeded" and row["points"] == 1
    assert len(row["best_test_accuracy_by_seed"]) == report["seeds"] == 3
    for kind in ("scratch", "kd"):
        assert len(row["baselines_test_accuracy"][kind]) == 3
        assert row["compare"][kind]["seeds"] == 3 and len(row["compare"][kind]["ci95"]) == 2
    table = (tmp_path / "equal_tuning.md").read_text()
    assert "| fitnet | weight=" in table


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_the_table_resumes_from_its_file_and_builds_its_markdown(tmp_path):
    """Each row is appended as it ends; a second piece runs only what the file lacks;
    validation's point on the first seed runs on the other seed."""
    needs_dataset("mnist")
    results, teachers = tmp_path / "table.jsonl", tmp_path / "teachers"
    table = ["table", "--quick", "--seeds=2", "--settings", "mnist-td-10"]
    paths = [f"--results={results}", f"--teachers={teachers}"]
    run_bench("equal_tuning.py", *table, "--methods", "scratch", *paths)
    assert sorted(r["seed"] for r in _rows(results)) == [0, 1]  # the student alone, 2 seeds
    assert (teachers / "mnist_source.safetensors").exists()
    run_bench("equal_tuning.py", *table, "--methods", "scratch", "ot", *paths)
    rows = _rows(results)
    ot = {(r["point"], r["seed"]) for r in rows if r["method"] == "ot"}
    assert {("defaults", 0), ("defaults", 1), ("x0.5", 0), ("x2", 0)} <= ot
    first = {r["point"]: r["val_accuracy"] for r in rows if r["method"] == "ot" and r["seed"] == 0}
    chosen = max(first, key=first.get)
    assert (chosen, 1) in ot and len(ot) == 4 + (chosen != "defaults")
    assert sum(r["method"] == "scratch" for r in rows) == 2  # not run again
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "reproduce.md").write_text(
        "before\n<!-- equal-budget table: begin -->\nold\n<!-- equal-budget table: end -->\nafter\n"
    )
    run_bench("equal_tuning.py", "markdown", f"--results={results}", cwd=tmp_path)
    doc = (tmp_path / "docs" / "reproduce.md").read_text()
    assert "old" not in doc and doc.startswith("before") and doc.endswith("after\n")
    assert "| ot | " in doc and f"| {chosen} |" in doc
    assert "default terms: **ot**" in doc  # the only term family in this transfer_distill run
