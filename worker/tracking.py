"""Optional experiment tracking: every job as an MLflow run, logged by the executor.

With ``OTRT_MLFLOW_TRACKING_URI`` set (and ``pip install otrt[mlflow]``), a job
becomes a run named by its id in the experiment ``OTRT_MLFLOW_EXPERIMENT``: its
resolved spec as parameters (dotted keys, ``training.lr``), each epoch's
metrics at ``step = epoch``, and its artifacts when it succeeds. The trainer
knows nothing of it.

Tracking never fails a job: a call that fails is logged and kept, the job's
later calls are kept without being tried (a server that is down would
otherwise cost a timeout per epoch), and everything kept is tried once more
when the job ends. A job resumed by another executor finds its run again by
the tag ``otrt.job``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from otrt_core import protocol

log = logging.getLogger("otrt.tracking")
JOB_TAG = "otrt.job"
# Run statuses by how a job ended.
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


class Tracker(Protocol):
    def start(self, job_id: str, spec: dict[str, Any]) -> None: ...
    def epoch(self, job_id: str, record: dict[str, Any]) -> None: ...
    def finish(self, job_id: str, status: str, out_dir: Path | None) -> None: ...


class NoTracking:
    """The default: nothing is tracked."""

    def start(self, job_id: str, spec: dict[str, Any]) -> None:
        pass

    def epoch(self, job_id: str, record: dict[str, Any]) -> None:
        pass

    def finish(self, job_id: str, status: str, out_dir: Path | None) -> None:
        pass


class MlflowTracker:
    """Jobs as MLflow runs (see the module's docstring)."""

    def __init__(
        self, tracking_uri: str, experiment: str, artifact_location: str | None = None
    ) -> None:
        # A server that is down must cost a job seconds, not MLflow's default minutes of
        # retries with backoff.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment, self.artifact_location = experiment, artifact_location
        self.runs: dict[str, str] = {}  # job id -> run id
        self.logged: dict[str, set[str]] = {}  # job id -> parameter keys logged
        self.kept: dict[str, list[Callable[[], None]]] = {}  # job id -> calls to try again

    def start(self, job_id: str, spec: dict[str, Any]) -> None:
        self._call(job_id, lambda: self._log_params(job_id, spec))

    def epoch(self, job_id: str, record: dict[str, Any]) -> None:
        metrics = {
            key: float(value)
            for key, value in record.items()
            if key not in ("epoch", "step", "steps") and isinstance(value, int | float)
        }
        self._call(job_id, lambda: self._log_metrics(job_id, metrics, record["epoch"]))

    def finish(self, job_id: str, status: str, out_dir: Path | None) -> None:
        """Logs the resolved spec's remaining parameters and the artifacts (when the job
        succeeded), ends the run, and tries what was kept once more."""
        if out_dir is not None and (out_dir / protocol.RESOLVED_SPEC).exists():
            resolved = json.loads((out_dir / protocol.RESOLVED_SPEC).read_text())
            self._call(job_id, lambda: self._log_params(job_id, resolved))
            files = [out_dir / name for name in protocol.ARTIFACTS if (out_dir / name).exists()]
            self._call(job_id, lambda: self._log_artifacts(job_id, files))
        run_status = RUN_STATUS.get(status, "FAILED")
        self._call(job_id, lambda: self.client.set_terminated(self._run(job_id), run_status))
        for call in self.kept.pop(job_id, []):
            try:
                call()
            except Exception as error:
                log.warning("job %s: tracking gave up: %s", job_id, _one_line(error))
        self.runs.pop(job_id, None)
        self.logged.pop(job_id, None)

    def _call(self, job_id: str, call: Callable[[], None]) -> None:
        """Runs ``call`` unless the job's tracking already failed; keeps it if it fails."""
        if job_id in self.kept:
            self.kept[job_id].append(call)
            return
        try:
            call()
        except Exception as error:
            log.warning("job %s: tracking failed, kept for the end: %s", job_id, _one_line(error))
            self.kept[job_id] = [call]

    def _run(self, job_id: str) -> str:
        """The job's run: known, found by its tag (a resumed job), or created."""
        if job_id not in self.runs:
            experiment = self.client.get_experiment_by_name(self.experiment)
            experiment_id = (
                experiment.experiment_id
                if experiment
                else self.client.create_experiment(self.experiment, self.artifact_location)
            )
            found = self.client.search_runs(
                [experiment_id], f"tags.`{JOB_TAG}` = '{job_id}'", max_results=1
            )
            run = found[0] if found else None
            if run is None:
                run = self.client.create_run(experiment_id, run_name=job_id, tags={JOB_TAG: job_id})
                self.logged[job_id] = set()
            else:
                self.logged[job_id] = set(run.data.params)
            self.runs[job_id] = run.info.run_id
        return self.runs[job_id]

    def _log_params(self, job_id: str, spec: dict[str, Any]) -> None:
        run_id = self._run(job_id)
        fresh = {
            key: value
            for key, value in flatten(spec).items()
            if value is not None and key not in self.logged[job_id]
        }
        for key, value in fresh.items():  # MLflow's parameters are written once
            self.client.log_param(run_id, key, value)
            self.logged[job_id].add(key)

    def _log_metrics(self, job_id: str, metrics: dict[str, float], epoch: int) -> None:
        run_id = self._run(job_id)
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, value, step=epoch)

    def _log_artifacts(self, job_id: str, files: list[Path]) -> None:
        run_id = self._run(job_id)
        for path in files:
            self.client.log_artifact(run_id, str(path))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"lr": 0.1}}`` -> ``{"training.lr": 0.1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"
