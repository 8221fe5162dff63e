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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from otrt_core import protocol
from otrt_core.jobs import states
from otrt_core.jobs.dataset_store import CONVERSION, DatasetNotFound, DatasetStore
from otrt_core.jobs.files import FileNotFound, FileRecords
from otrt_core.jobs.states import TERMINAL as SWEEP_ENDED
from otrt_core.jobs.storage import Storage, StorageUnavailable
from otrt_core.jobs.store import JobStore, Lease
from otrt_core.jobs.sweeps import SweepRunner
from otrt_core.jobs.tables import Artifact, Job
from otrt_core.jobs.workers import WorkerRegistry
from worker.conversion import ConversionLimits, run_conversion
from worker.runner import END_OF_OUTPUT, TrainerInputs, TrainerProcess
from worker.stops import StopReason
from worker.tracking import NoTracking, Tracker

log = logging.getLogger("otrt.worker")
MESSAGE_CHARS = 500  # a failed job's error.message: one line, no server detail


@dataclass
class Executor:
    """What running a job needs; one per process."""

    store: JobStore
    files: FileRecords
    storage: Storage
    work_root: Path
    name: str
    lease_seconds: float
    heartbeat_seconds: float
    device: str = "auto"
    default_max_running: int | None = None  # per key, for keys without their own quota
    trainer_env: dict[str, str] | None = None
    trainer_nice: int = 0  # added to the training processes' niceness (OTRT_TRAINER_NICE)
    # Wall-clock backstop per attempt beyond the spec's max_runtime_s (which the
    # trainer enforces itself, with a checkpoint): a hung trainer is killed.
    time_limit_grace_seconds: float = 600.0
    tracker: Tracker = field(default_factory=NoTracking)  # MLflow, when configured
    devices: int = 1  # what it offers a job: training.gpus up to this
    registry: WorkerRegistry | None = None  # where it says so (otrt_core.jobs.workers)
    # Advances the sweeps its trials belong to; set by the wiring, which has the dispatcher.
    sweeps: SweepRunner | None = None
    # Registered datasets, whose conversion jobs this executor runs too.
    datasets: DatasetStore | None = None
    conversion_limits: ConversionLimits = field(default_factory=ConversionLimits)

    def __post_init__(self) -> None:
        if self.datasets is None:  # over the job store's own database
            self.datasets = DatasetStore(self.store.sessions, self.store)

    def announce(self) -> None:
        """Tells the registry this executor is up and what it offers."""
        if self.registry is not None:
            self.registry.announce(self.name, self.devices)

    def advance_sweeps(self) -> None:
        """Advances every unfinished sweep (each reaper round: nothing waits on a lost call)."""
        if self.sweeps is not None:
            self.sweeps.advance_unfinished()

    def run_next(self, shutting_down: Callable[[], bool] = lambda: False) -> str | None:
        """Claims the job fair order starts next and runs it to an end; returns how it ended.

        ``None``: no job may start now. Else the job's status afterwards, or
        ``StopReason.LEASE_LOST`` when it was fenced off.
        """
        lease = self.store.claim_next(
            self.name, self.lease_seconds, self.default_max_running, self.devices
        )
        if lease is None:
            return None
        job_id = lease.job_id
        job = self.store.get(job_id)
        if job.kind == CONVERSION:
            return run_conversion(
                self, self.datasets, self.conversion_limits, lease, job, shutting_down
            )
        out_dir = self.work_root / job_id
        try:
            inputs = self._trainer_inputs(job, out_dir)
        except LookupError as error:  # an input vanished since submission
            message = f"an input of the job is gone: {error.args[0]}"
            return self.fail(lease, protocol.INPUT_MISSING, message)
        resume = self._checkpoint_here(job_id, out_dir)
        trainer = TrainerProcess(
            inputs,
            out_dir,
            resume=resume,
            device=self.device,
            env=self.trainer_env or {},
            processes=job.training_spec.training.gpus,
            nice=self.trainer_nice,
        )
        log.info("job %s attempt %d: trainer pid %d", job_id, lease.attempt, trainer.pid)
        self.tracker.start(job_id, job.spec)
        follower = Follower(
            self.store,
            lease,
            job.progress,
            trainer.pid,
            publish_plan=lambda: self._publish(lease, out_dir, (protocol.PLAN,), replace=False),
            clean=self.one_line,
            on_epoch=lambda record: self._on_epoch(job, out_dir, record),
            on_checkpoint=lambda: self._push_checkpoint(job_id, out_dir),
        )
        deadline = (
            time.monotonic() + job.spec["training"]["max_runtime_s"] + self.time_limit_grace_seconds
        )
        try:
            reason = self.follow(trainer, lease, follower, shutting_down, deadline)
        except BaseException:  # a time limit or a worker shutting down mid-job
            trainer.stop()
            self._push_checkpoint(job_id, out_dir)
            self.end(lease, states.QUEUED, "the executor was interrupted; requeued to resume")
            raise
        code = trainer.wait()
        status = self._finish(lease, code, reason, follower, trainer, out_dir)
        if status in states.TERMINAL:
            self.tracker.finish(job_id, status, out_dir)
            if self.storage.shared:
                self.storage.delete(checkpoint_key(job_id))
        elif status == states.QUEUED:
            self._push_checkpoint(job_id, out_dir)  # stopped mid-epoch: resume it anywhere
        if status == states.SUCCEEDED:
            shutil.rmtree(out_dir, ignore_errors=True)
        if job.sweep_id is not None and self.sweeps is not None and status in states.TERMINAL:
            self._advance(job.sweep_id)
        return status

    def _advance(self, sweep_id: str) -> None:
        """Moves the trial's sweep on (its next trials); a failure waits for the reaper."""
        try:
            sweep = self.sweeps.advance(sweep_id)
        except Exception:
            log.warning("sweep %s: could not advance it now", sweep_id, exc_info=True)
            return
        if sweep.status in SWEEP_ENDED:  # no trial reads its teacher cache any more
            shutil.rmtree(self._sweep_cache_dir(sweep_id).parent, ignore_errors=True)

    def _checkpoint_here(self, job_id: str, out_dir: Path) -> bool:
        """Whether the job resumes: from the checkpoint this host kept, or, with a shared
        store, from the one another host pushed there (copied into ``out_dir``)."""
        local = out_dir / protocol.CHECKPOINT
        if local.exists():
            return True
        return self.storage.shared and self.storage.download(checkpoint_key(job_id), local)

    def _on_epoch(self, job: Job, out_dir: Path, record: dict[str, Any]) -> str | None:
        """After each epoch: its metrics to the tracker, and with a shared store the
        checkpoint the trainer has just written, so that any host can resume from it.
        Returns ``StopReason.PRUNED`` when the job is a sweep's trial that early stopping
        ends."""
        self.tracker.epoch(job.id, record)
        self._push_checkpoint(job.id, out_dir)
        last_epoch = record["step"] >= record["steps"]  # stopping it now would save nothing
        if job.sweep_id is None or self.sweeps is None or last_epoch:
            return None
        try:
            return StopReason.PRUNED if self.sweeps.should_stop(job) else None
        except Exception:  # the trial goes on; the decision comes at its next epoch
            log.warning("job %s: early stopping could not decide", job.id, exc_info=True)
            return None

    def _push_checkpoint(self, job_id: str, out_dir: Path) -> None:
        """Copies the trainer's latest checkpoint to the shared store, when there is one.
        Without one, or when it fails, the job goes on: this host resumes from its copy."""
        checkpoint = out_dir / protocol.CHECKPOINT
        if not self.storage.shared or not checkpoint.exists():
            return
        started = time.monotonic()
        try:
            self.storage.put(checkpoint_key(job_id), checkpoint)
        except StorageUnavailable as error:
            log.warning("job %s: checkpoint not pushed: %s", job_id, error)
            return
        log.info("job %s: checkpoint pushed in %.2f s", job_id, time.monotonic() - started)

    def _trainer_inputs(self, job: Job, out_dir: Path) -> TrainerInputs:
        """The job's spec as submitted (ids, never paths) and the local files of its ids."""
        teacher = dataset = None
        if job.teacher_file_id:
            teacher = self._local(job.teacher_file_id, job.owner)
        elif job.teacher_job_id:
            weights = self.store.artifact(job.teacher_job_id, protocol.STUDENT_WEIGHTS)
            if weights is None:
                raise LookupError(job.teacher_job_id)
            teacher = self._fetch(weights.path, weights.sha256, job.teacher_job_id)
        if job.dataset_file_id:
            dataset = self._local(job.dataset_file_id, job.owner)
        shards = self._snapshot(job.dataset_id) if job.dataset_id else None
        pool = job.training_spec.dataset.unlabeled
        init = self._local(job.init_file_id, job.owner) if job.init_file_id else None
        out_dir.mkdir(parents=True, exist_ok=True)
        spec_path = out_dir / "job-spec.json"
        spec_path.write_text(json.dumps(job.spec, indent=2))
        shared = self._sweep_cache_dir(job.sweep_id) if job.sweep_id else None
        return TrainerInputs(
            spec=spec_path,
            teacher=teacher,
            dataset=dataset,
            student_init=init,
            teacher_cache_dir=shared,
            dataset_shards=shards,
            pool_shards=self._snapshot(pool) if pool else None,
        )

    def _snapshot(self, dataset_id: str) -> str:
        """Where the trainer reads a registered dataset's shards: the store's own
        directory on this host, or its s3:// location; ``LookupError`` if it is gone."""
        try:
            dataset = self.datasets.get(dataset_id)
        except DatasetNotFound:
            raise LookupError(dataset_id) from None
        if dataset.shards is None:
            raise LookupError(dataset_id)
        return self.storage.location(dataset.shards)

    def _sweep_cache_dir(self, sweep_id: str) -> Path:
        """Where the trials of a sweep on this host share their teacher's cached outputs."""
        return self.work_root / "sweeps" / sweep_id / "teacher-cache"

    def _local(self, file_id: str, owner: str) -> Path:
        """The local copy of an uploaded file; ``LookupError(file_id)`` if it is gone."""
        try:
            record = self.files.get(file_id, owner)
        except FileNotFound:
            raise LookupError(file_id) from None
        return self._fetch(record.path, record.sha256, file_id)

    def _fetch(self, key: str, sha256: str, ref: str) -> Path:
        """A local copy of a stored input (from this host's cache when it has one);
        ``LookupError(ref)`` when the object is gone."""
        try:
            return self.storage.fetch(key, sha256)
        except LookupError:
            raise LookupError(ref) from None

    def follow(
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
            if follower.stop_reason is not None:
                log.info("job %s: stopping the trainer (%s)", lease.job_id, follower.stop_reason)
                trainer.stop()
                return follower.stop_reason
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
            return StopReason.LEASE_LOST
        if cancel:
            return StopReason.CANCEL
        if time.monotonic() > deadline:
            return StopReason.TIME_LIMIT
        return StopReason.SHUTDOWN if shutting_down() else None

    def _finish(
        self,
        lease: Lease,
        code: int,
        reason: str | None,
        follower: Follower,
        trainer: TrainerProcess,
        out_dir: Path,
    ) -> str:
        if reason == StopReason.LEASE_LOST:
            return reason
        job_id = lease.job_id
        if reason == StopReason.CANCEL:
            return self.end(lease, states.CANCELLED, "cancelled; the trainer stopped")
        if reason == StopReason.PRUNED:
            epoch = follower.progress.get("epoch")
            message = f"stopped by its sweep's early stopping (ASHA) after epoch {epoch}"
            return self.end(
                lease,
                states.CANCELLED,
                message,
                metrics=follower.metrics,
                progress=follower.progress,
                error={"code": protocol.PRUNED, "message": message},
            )
        if reason == StopReason.TIME_LIMIT:
            message = "the attempt outlived max_runtime_s and its grace; the trainer was stopped"
            return self.fail(lease, protocol.TIME_LIMIT, message)
        if code == protocol.EXIT_OK:
            self._publish(lease, out_dir, protocol.ARTIFACTS)
            done = follower.done
            accuracy = done.test_accuracy if done else None
            return self.end(
                lease,
                states.SUCCEEDED,
                f"succeeded; test accuracy {accuracy:.1%}" if accuracy is not None else "succeeded",
                metrics=follower.metrics
                | {"test_accuracy": accuracy, "collapsed": bool(done and done.collapsed)},
                progress=follower.progress | {"fraction": 1.0},
                eta_seconds=0.0,
            )
        if code == protocol.EXIT_STOPPED or reason == StopReason.SHUTDOWN:
            return self.end(lease, states.QUEUED, "stopped with a checkpoint; requeued to resume")
        if code in (protocol.EXIT_INVALID, protocol.EXIT_DIVERGED) and follower.error:
            diverged = code == protocol.EXIT_DIVERGED
            error_code = protocol.DIVERGED if diverged else protocol.INVALID_INPUT
            return self.fail(lease, error_code, follower.error)
        if code == protocol.EXIT_MAX_RUNTIME:
            return self.fail(lease, protocol.MAX_RUNTIME, "training.max_runtime_s ran out")
        # Anything else is otrt's fault, not the user's: the details stay in the server log.
        log.error("job %s: trainer exited %d:\n%s", job_id, code, trainer.stderr_tail())
        message = f"the trainer failed (exit {code}); the server log has the details"
        return self.fail(lease, protocol.INTERNAL_ERROR, message)

    def fail(self, lease: Lease, code: str, message: str) -> str:
        message = self.one_line(message)
        return self.end(lease, states.FAILED, message, error={"code": code, "message": message})

    def one_line(self, message: str) -> str:
        """A message fit for the client: its first line, no server path, bounded."""
        for root in (self.work_root.resolve(), self.storage.root):
            message = message.replace(f"{root}/", "").replace(str(root), "")
        lines = message.strip().splitlines() or [""]
        return lines[0][:MESSAGE_CHARS]

    def end(self, lease: Lease, status: str, message: str, **fields: Any) -> str:
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


def checkpoint_key(job_id: str) -> str:
    """Where a job's latest checkpoint lives in a shared store."""
    return f"checkpoints/{job_id}/{protocol.CHECKPOINT}"


def run_in_fair_order(executor: Executor, shutting_down: Callable[[], bool]) -> int:
    """Runs jobs one after another, each the next in fair order, until none may start
    or the process is shutting down; returns how many ran.

    A failure (the database down, say) is logged and ends this round instead of
    being retried at once in a tight loop: the next dispatch, or the reaper's
    re-dispatch of what stayed queued, starts another round.
    """
    ran = 0
    while not shutting_down():
        try:
            outcome = executor.run_next(shutting_down)
        except Exception:
            log.exception("the executor failed to run a job; waiting for the next dispatch")
            break
        if outcome is None:
            break
        ran += 1
    return ran


class Follower:
    """Turns the trainer's events into the job's progress, metrics and events.

    Every write goes through the attempt's lease: once it is lost, nothing more lands.
    """

    def __init__(
        self,
        store: JobStore,
        lease: Lease,
        progress: dict[str, Any],
        pid: int,
        publish_plan: Callable[[], None] | None = None,
        clean: Callable[[str], str] = str,
        on_epoch: Callable[[dict[str, Any]], str | None] = lambda record: None,
        on_checkpoint: Callable[[], None] = lambda: None,
    ) -> None:
        self.store, self.lease, self.pid = store, lease, pid
        self.publish_plan, self.clean, self.on_epoch = publish_plan, clean, on_epoch
        self.on_checkpoint = on_checkpoint
        self.progress = dict(progress)
        self.metrics: dict[str, Any] = {}
        self.error: str | None = None
        self.done: protocol.Done | None = None
        self.stop_reason: str | None = None  # set by ``on_epoch``: why the trainer must stop

    def handle(self, line: dict[str, Any]) -> None:
        event = protocol.parse_event(line)
        if event is None:
            log.warning("job %s: unknown trainer line %.200s", self.lease.job_id, line)
            return
        if isinstance(event, protocol.Start | protocol.Step | protocol.Epoch):
            self._progress(event)
        match event:
            case protocol.Start():
                for record in event.history:  # epochs a dead executor never recorded
                    self._record_epoch(protocol.Epoch(**record))
                where = f"on {event.device}, teacher cache {event.teacher_cache}"
                verb = "resumed" if event.resumed else "started"
                data = protocol.event_line(event) | {"pid": self.pid}
                del data["history"]
                self._event("started", f"training {verb} at epoch {event.epoch} {where}", data)
            case protocol.Epoch():
                record = self._record_epoch(event)
                self.stop_reason = self.on_epoch(record)
                message = f"epoch {event.epoch}/{self.progress.get('epochs')}"
                accuracy = f"val accuracy {event.val_accuracy:.1%}"
                self._event(
                    "epoch", f"{message}: {accuracy}, train loss {event.train_loss:.4g}", record
                )
            case protocol.Error() | protocol.Warned():
                message = self.clean(event.message)
                if isinstance(event, protocol.Error):
                    self.error = message
                data = {"code": getattr(event, "code", None), "message": message}
                self._event(event.kind, message, data)
            case protocol.Checkpointed():
                self.on_checkpoint()  # a checkpoint inside the epoch, to the shared store
            case protocol.Plan() if self.publish_plan is not None:
                self.publish_plan()  # the latest plan, for the dashboard's heatmap
            case protocol.Stopped():
                message = f"trainer stopped ({event.reason})"
                self._event("stopped", message, protocol.event_line(event))
            case protocol.Done():
                self.done = event
                self._event("done", "outputs written", protocol.event_line(event))

    def _record_epoch(self, event: protocol.Epoch) -> dict[str, Any]:
        """Stores one epoch's record (replacing a redone one) and updates the job's metrics."""
        record = asdict(event)
        self.store.add_metric(self.lease, event.epoch, record)
        best = self.metrics.get("best_val_accuracy")
        if best is None or event.val_accuracy > best:
            self.metrics["best_val_accuracy"] = event.val_accuracy
        self.metrics["val_accuracy"] = event.val_accuracy
        return record

    def _progress(self, event: protocol.Start | protocol.Step | protocol.Epoch) -> None:
        self.progress |= {"epoch": event.epoch, "step": event.step, "steps": event.steps}
        if isinstance(event, protocol.Start):
            self.progress["epochs"] = event.epochs
        step, steps = event.step, event.steps
        self.progress["fraction"] = step / steps if steps else 0.0
        if not isinstance(event, protocol.Start):
            self.metrics |= {"train_loss": event.train_loss, "ot_distance": event.ot_distance}
        seconds = getattr(event, "seconds", None)
        eta = seconds / step * (steps - step) if seconds and step and steps else None
        self.store.report(self.lease, progress=self.progress, metrics=self.metrics, eta_seconds=eta)

    def _event(self, type_: str, message: str, data: dict[str, Any]) -> None:
        self.store.add_event(self.lease, type_, message, data)
