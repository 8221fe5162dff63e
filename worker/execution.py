"""Running one job: claim, prepare its inputs, run the trainer, report, finish.

Shared by the embedded executor and the Celery task. Every write goes through
the claimed :class:`~otrt_core.jobs.store.Lease`; a lost lease stops the
trainer at the next heartbeat (fencing) and leaves the job to its new owner.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otrt_core.jobs import states
from otrt_core.jobs.files import FileRecords
from otrt_core.jobs.storage import LocalStorage
from otrt_core.jobs.store import JobStore, Lease
from otrt_core.jobs.tables import Artifact, Job
from worker.runner import END_OF_OUTPUT, TrainerProcess

log = logging.getLogger("otrt.worker")

# Exit codes of `otrt train` (otrt_core.train): kept literal so that the worker
# does not import torch.
EXIT_OK, EXIT_INVALID, EXIT_STOPPED, EXIT_MAX_RUNTIME = 0, 2, 75, 124
ARTIFACTS = ("student.safetensors", "metrics.json", "spec.json", "student.onnx", "plan.npy")


@dataclass
class Executor:
    """What running a job needs; one per process."""

    store: JobStore
    files: FileRecords
    storage: LocalStorage
    work_root: Path
    name: str
    lease_seconds: float
    heartbeat_seconds: float
    device: str = "auto"
    trainer_env: dict[str, str] | None = None
    # Wall-clock backstop per attempt beyond the spec's max_runtime_s (which the
    # trainer enforces itself, with a checkpoint): a hung trainer is killed.
    time_limit_grace_seconds: float = 600.0

    def run(self, job_id: str, shutting_down: Callable[[], bool] = lambda: False) -> str | None:
        """Runs ``job_id`` to an end if this executor wins its claim; returns how it ended.

        ``None``: not claimed (someone else has it, or it is not queued). Else
        the job's status afterwards, or ``"lease_lost"`` when it was fenced off.
        """
        lease = self.store.claim(job_id, self.name, self.lease_seconds)
        if lease is None:
            return None
        job = self.store.get(job_id)
        out_dir = self.work_root / job_id
        try:
            spec_path = self._write_input_spec(job, out_dir)
        except (LookupError, ValueError, OSError) as error:  # an input vanished since submission
            return self._fail(lease, "input_missing", f"cannot prepare the job's inputs: {error}")
        resume = (out_dir / "checkpoint.pt").exists()
        trainer = TrainerProcess(
            spec_path, out_dir, resume=resume, device=self.device, env=self.trainer_env or {}
        )
        log.info("job %s attempt %d: trainer pid %d", job_id, lease.attempt, trainer.pid)
        follower = Follower(
            self.store,
            lease,
            job.progress,
            trainer.pid,
            publish_plan=lambda: self._publish(lease, out_dir, ("plan.npy",), replace=False),
        )
        deadline = (
            time.monotonic() + job.spec["training"]["max_runtime_s"] + self.time_limit_grace_seconds
        )
        try:
            reason = self._follow(trainer, lease, follower, shutting_down, deadline)
        except BaseException:  # a time limit or a worker shutting down mid-job
            trainer.stop()
            self._end(lease, states.QUEUED, "the executor was interrupted; requeued to resume")
            raise
        code = trainer.process.wait()
        return self._finish(lease, code, reason, follower, trainer, out_dir)

    def _write_input_spec(self, job: Job, out_dir: Path) -> Path:
        """The job's spec with its uploaded inputs replaced by their local paths."""
        spec = json.loads(json.dumps(job.spec))
        if job.teacher_file_id:
            record = self.files.get(job.teacher_file_id, job.owner)
            spec["teacher"]["checkpoint"] = str(self.storage.path(record.path))
        elif job.teacher_job_id:
            weights = self.store.artifact(job.teacher_job_id, ARTIFACTS[0])
            if weights is None:
                raise LookupError(f"teacher job {job.teacher_job_id} has no student weights")
            spec["teacher"]["checkpoint"] = str(self.storage.path(weights.path))
        if job.dataset_file_id:
            record = self.files.get(job.dataset_file_id, job.owner)
            spec["dataset"]["name"] = str(self.storage.path(record.path))
        out_dir.mkdir(parents=True, exist_ok=True)
        spec_path = out_dir / "input-spec.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        return spec_path

    def _follow(
        self,
        trainer: TrainerProcess,
        lease: Lease,
        follower: Follower,
        shutting_down: Callable[[], bool],
        deadline: float,
    ) -> str | None:
        """Relays events until the trainer's output ends; returns why it was stopped, if it was."""
        next_beat = time.monotonic() + self.heartbeat_seconds
        while True:
            event = trainer.next_event(timeout=max(0.0, next_beat - time.monotonic()))
            if event is END_OF_OUTPUT:
                return None
            if event is not None:
                follower.handle(event)
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.heartbeat_seconds
            reason = self._heartbeat(lease, shutting_down, deadline)
            if reason is not None:
                log.info("job %s: stopping the trainer (%s)", lease.job_id, reason)
                trainer.stop()
                return reason

    def _heartbeat(
        self, lease: Lease, shutting_down: Callable[[], bool], deadline: float
    ) -> str | None:
        """Renews the lease; returns why the trainer must stop now, if it must."""
        cancel = self.store.renew(lease, self.lease_seconds)
        if cancel is None:
            return "lease_lost"
        if cancel:
            return "cancel"
        if time.monotonic() > deadline:
            return "time_limit"
        return "shutdown" if shutting_down() else None

    def _finish(
        self,
        lease: Lease,
        code: int,
        reason: str | None,
        follower: Follower,
        trainer: TrainerProcess,
        out_dir: Path,
    ) -> str:
        if reason == "lease_lost":
            return reason
        job_id = lease.job_id
        if reason == "cancel":
            return self._end(lease, states.CANCELLED, "cancelled; the trainer stopped")
        if reason == "time_limit":
            message = "the attempt outlived max_runtime_s and its grace; the trainer was stopped"
            return self._fail(lease, "time_limit", message)
        if code == EXIT_OK:
            self._publish(lease, out_dir, ARTIFACTS)
            shutil.rmtree(out_dir, ignore_errors=True)
            accuracy = follower.done.get("test_accuracy")
            return self._end(
                lease,
                states.SUCCEEDED,
                f"succeeded; test accuracy {accuracy:.4f}" if accuracy is not None else "succeeded",
                metrics=follower.metrics | {"test_accuracy": accuracy},
                progress=follower.progress | {"fraction": 1.0},
                eta_seconds=0.0,
            )
        if code == EXIT_STOPPED or reason == "shutdown":
            return self._end(lease, states.QUEUED, "stopped with a checkpoint; requeued to resume")
        if code == EXIT_INVALID:
            message = follower.error or trainer.stderr_tail() or "invalid input"
            return self._fail(lease, "invalid_input", message)
        if code == EXIT_MAX_RUNTIME:
            return self._fail(lease, "max_runtime", "training.max_runtime_s ran out")
        tail = trainer.stderr_tail()
        log.warning("job %s: trainer exited %d: %s", job_id, code, tail[-500:])
        return self._fail(lease, "trainer_error", f"the trainer exited with {code}: {tail[-1500:]}")

    def _fail(self, lease: Lease, code: str, message: str) -> str:
        return self._end(lease, states.FAILED, message, error={"code": code, "message": message})

    def _end(self, lease: Lease, status: str, message: str, **fields: Any) -> str:
        try:
            self.store.transition(lease.job_id, status, message, lease=lease, **fields)
        except states.IllegalTransition as error:
            log.warning("job %s: %s", lease.job_id, error)
            return error.current
        return status

    def _publish(
        self, lease: Lease, out_dir: Path, names: tuple[str, ...], *, replace: bool = True
    ) -> None:
        """Copies trainer outputs into the artifact store and records them.

        ``replace``: the final set replaces every artifact recorded before;
        otherwise only the named ones are (re)recorded (the live plan).
        """
        records = []
        for name in names:
            if (out_dir / name).exists():
                stored = self.storage.put(f"artifacts/{lease.job_id}/{name}", out_dir / name)
                records.append(
                    Artifact(
                        job_id=lease.job_id,
                        name=name,
                        bytes=stored.bytes,
                        sha256=stored.sha256,
                        path=stored.key,
                    )
                )
        self.store.add_artifacts(lease, records, replace=replace)


class Follower:
    """Turns the trainer's JSON-lines events into the job's progress, metrics and events."""

    def __init__(
        self,
        store: JobStore,
        lease: Lease,
        progress: dict[str, Any],
        pid: int,
        publish_plan: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.lease, self.pid = store, lease, pid
        self.publish_plan = publish_plan
        self.progress = dict(progress)
        self.metrics: dict[str, Any] = {}
        self.error: str | None = None
        self.done: dict[str, Any] = {}

    def handle(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind in ("start", "step", "epoch"):
            self._progress(event)
        if kind == "start":
            for record in event.get("history") or []:  # epochs a dead executor never recorded
                self._record_epoch(record)
            where = f"on {event.get('device')}, teacher cache {event.get('teacher_cache')}"
            verb = "resumed" if event.get("resumed") else "started"
            message = f"training {verb} at epoch {event.get('epoch')} {where}"
            data = {k: v for k, v in event.items() if k != "history"} | {"pid": self.pid}
            self._event("started", message, data)
        elif kind == "epoch":
            record = self._record_epoch(event)
            message = f"epoch {event['epoch']}/{self.progress.get('epochs')}"
            self._event("epoch", f"{message}: val accuracy {event.get('val_accuracy')}", record)
        elif kind == "error":
            self.error = str(event.get("message", ""))
            self._event("error", self.error, event)
        elif kind == "plan" and self.publish_plan is not None:
            self.publish_plan()  # the latest plan, for the dashboard's heatmap
        elif kind == "stopped":
            self._event("stopped", f"trainer stopped ({event.get('reason')})", event)
        elif kind == "done":
            self.done = event
            self._event("done", "outputs written", event)

    def _record_epoch(self, event: dict[str, Any]) -> dict[str, Any]:
        """Stores one epoch's record (replacing a redone one) and updates the job's metrics."""
        record = {k: v for k, v in event.items() if k != "event"}
        self.store.add_metric(self.lease, int(record["epoch"]), record)
        accuracy = record.get("val_accuracy")
        best = self.metrics.get("best_val_accuracy")
        if accuracy is not None and (best is None or accuracy > best):
            self.metrics["best_val_accuracy"] = accuracy
        self.metrics["val_accuracy"] = accuracy
        return record

    def _progress(self, event: dict[str, Any]) -> None:
        for key in ("epoch", "epochs", "step", "steps"):
            if event.get(key) is not None:
                self.progress[key] = event[key]
        step, steps = self.progress.get("step") or 0, self.progress.get("steps")
        self.progress["fraction"] = step / steps if steps else 0.0
        for key in ("train_loss", "ot_distance"):
            if key in event:
                self.metrics[key] = event[key]
        seconds = event.get("seconds")
        eta = seconds / step * (steps - step) if seconds and step and steps else None
        self.store.report(self.lease, progress=self.progress, metrics=self.metrics, eta_seconds=eta)

    def _event(self, type_: str, message: str, data: dict[str, Any]) -> None:
        self.store.add_event(self.lease.job_id, type_, message, data)
