"""MLflow tracking from the executor, against the real MLflow library: a job becomes a run
with its resolved spec, its epochs and its artifacts; a tracking server that is down never
fails a job."""

from __future__ import annotations

import logging

import pytest
from mlflow import MlflowClient

from otrt_core.spec import resolve_spec
from tests.service.api_helpers import local_executor
from worker.tracking import MlflowTracker

SPEC = {
    "mode": "supervised",
    "student": {"architecture": "mlp_small"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 2, "batch_size": 64, "max_runtime_s": 300},
}
PROGRESS = {"epoch": 0, "epochs": 2, "step": 0, "steps": None, "fraction": 0.0}


def run_one(store, tmp_path, tracker) -> str:
    job, _ = store.create("alice", resolve_spec(SPEC), {}, PROGRESS)
    assert local_executor(store, tmp_path, tracker=tracker).run_next() == "succeeded"
    return job.id


@pytest.fixture
def sqlite_store(tmp_path):
    from otrt_core.jobs.db import make_engine, make_sessions, migrate
    from otrt_core.jobs.store import JobStore

    engine = make_engine(f"sqlite:///{tmp_path / 'otrt.db'}")
    migrate(engine)
    yield JobStore(make_sessions(engine))
    engine.dispose()


def test_a_job_is_an_mlflow_run_with_its_resolved_spec_epochs_and_artifacts(sqlite_store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "otrt-test", f"file://{tmp_path / 'mlartifacts'}")
    job_id = run_one(sqlite_store, tmp_path, tracker)

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("otrt-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == job_id and run.data.tags["otrt.job"] == job_id
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["training.epochs"] == "2" and params["student.architecture"] == "mlp_small"
    # Left out by the job, sized by the trainer: from spec.json, 0.05 * 64 / 128.
    assert float(params["training.lr"]) == pytest.approx(0.025)
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [point.step for point in history] == [1, 2]
    assert history[-1].value == sqlite_store.get(job_id).metrics["val_accuracy"]
    names = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    assert {"student.safetensors", "metrics.json", "report.json", "spec.json"} <= names


def test_a_tracking_server_that_is_down_never_fails_a_job(sqlite_store, tmp_path, caplog):
    tracker = MlflowTracker("http://127.0.0.1:9", "otrt")  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="otrt.tracking"):
        job_id = run_one(sqlite_store, tmp_path, tracker)
    assert sqlite_store.get(job_id).status == "succeeded"
    messages = [record.getMessage() for record in caplog.records]
    assert any("kept for the end" in message for message in messages), messages
    assert any("gave up" in message for message in messages), messages
    # Tried once live, then once more at the end: the job's calls did not each wait.
    assert sum("kept for the end" in message for message in messages) == 1
