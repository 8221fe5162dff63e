"""The executor on a real database, for what happens before a trainer starts."""

from __future__ import annotations

from otrt_core.spec import resolve_spec
from tests.service.api_helpers import local_executor

PROGRESS = {"epoch": 0, "epochs": 1, "step": 0, "steps": None, "fraction": 0.0}


def test_a_job_whose_input_vanished_fails_clearly_without_a_trainer(store, tmp_path):
    spec = {
        "mode": "distill",
        "teacher": {"architecture": "mlp", "checkpoint": "file_gone"},
        "student": {"architecture": "mlp_small"},
        "dataset": {"name": "digits"},
        "training": {"max_runtime_s": 60},
    }
    job, _ = store.create(
        "alice", resolve_spec(spec), {}, PROGRESS, inputs={"teacher_file_id": "file_gone"}
    )
    executor = local_executor(store, tmp_path)
    assert executor.run_next() == "failed"
    failed = store.get(job.id)
    assert failed.error == {
        "code": "input_missing",
        "message": "an input of the job is gone: file_gone",
    }
    assert not (tmp_path / "work" / job.id / "trainer.log").exists()  # no trainer was started
    assert executor.run_next() is None  # nothing else is queued


def test_a_failing_executor_ends_its_round_instead_of_spinning():
    """The database down, say: one logged failure, then the round waits for a new dispatch."""
    from worker.execution import run_in_fair_order

    class Failing:
        calls = 0

        def run_next(self, shutting_down):
            Failing.calls += 1
            raise RuntimeError("database unreachable")

    assert run_in_fair_order(Failing(), lambda: False) == 0
    assert Failing.calls == 1
