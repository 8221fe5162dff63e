"""The executor on a real database, for what happens before a trainer starts."""

from __future__ import annotations

from otrt_core.jobs.files import FileRecords
from otrt_core.jobs.storage import LocalStorage
from worker.execution import Executor

PROGRESS = {"epoch": 0, "epochs": 1, "step": 0, "steps": None, "fraction": 0.0}


def test_a_job_whose_input_vanished_fails_clearly_without_a_trainer(store, tmp_path):
    spec = {
        "mode": "distill",
        "teacher": {"architecture": "mlp", "checkpoint": "file_gone"},
        "student": {"architecture": "mlp_small"},
        "dataset": {"name": "digits"},
        "training": {"max_runtime_s": 60},
    }
    job, _ = store.create("alice", spec, {}, PROGRESS, inputs={"teacher_file_id": "file_gone"})
    executor = Executor(
        store=store,
        files=FileRecords(store.sessions),
        storage=LocalStorage(tmp_path / "store"),
        work_root=tmp_path / "work",
        name="w1",
        lease_seconds=60,
        heartbeat_seconds=0.5,
    )
    assert executor.run_next() == "failed"
    failed = store.get(job.id)
    assert failed.error == {
        "code": "input_missing",
        "message": "an input of the job is gone: file_gone",
    }
    assert not (tmp_path / "work" / job.id / "trainer.log").exists()  # no trainer was started
    assert executor.run_next() is None  # nothing else is queued
