"""Running a dataset's conversion job: the converter child, its progress, the snapshot stored.

The executor claims a conversion job like any job (same lease, reaper and fair
order); this module runs ``python -m otrt_core.data.convert`` in a child with
its memory bounded, relays its progress to the dataset and the job's events,
and, once it has written the snapshot, puts every shard and ``index.json`` in
the object store under ``datasets/<id>/`` before the dataset becomes ``ready``.

The child's output directory lives on in the work root until the dataset is
ready: a conversion requeued after its worker died resumes there from its last
completed shard (``otrt_core.data.convert``).
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from otrt_core import protocol
from otrt_core.data.shard_writer import INDEX, SHARD_BYTES, ShardIndex
from otrt_core.jobs import states
from otrt_core.jobs.dataset_store import (
    CONVERTING,
    FAILED,
    INSPECTING,
    READY,
    DatasetStore,
    snapshot_prefix,
)
from otrt_core.jobs.files import FileNotFound
from otrt_core.jobs.store import Lease
from otrt_core.jobs.tables import Job
from worker.runner import ChildProcess
from worker.stops import StopReason

log = logging.getLogger("otrt.worker")
CONVERTER_DATA_BYTES = 3 << 30  # the converter's data segment: one large photo at a time
EVENT_EVERY_FRACTION = 0.1  # a progress event each tenth of the records
EVENT_EVERY_RECORDS = 10_000  # or, when the total is unknown, this often


@dataclass(frozen=True)
class ConversionLimits:
    """What the service allows a registered dataset (Settings)."""

    allowed: tuple[str, ...] = ()
    s3_endpoint_url: str | None = None
    max_image_pixels: int = 64_000_000
    max_unreadable_fraction: float = 0.1
    shard_bytes: int = SHARD_BYTES
    max_seconds: float = 7 * 86_400  # a wall-clock backstop per attempt


class ConversionFollower:
    """Turns the converter's events into the dataset's status and the job's events."""

    def __init__(self, datasets: DatasetStore, executor, lease: Lease) -> None:
        self.datasets, self.executor, self.lease = datasets, executor, lease
        self.details: dict[str, Any] | None = None
        self.error: str | None = None
        self.stop_reason: str | None = None
        self._phase: str | None = None
        self._next_event_at = 0

    def handle(self, line: dict[str, Any]) -> None:
        event = protocol.parse_event(line)
        store = self.executor.store
        match event:
            case protocol.Converting():
                self._progress(event)
            case protocol.Converted():
                self.details = event.details
            case protocol.Error() | protocol.Warned():
                message = self.executor.one_line(event.message)
                if isinstance(event, protocol.Error):
                    self.error = message
                store.add_event(self.lease, event.kind, message, {"message": message})

    def _progress(self, event: protocol.Converting) -> None:
        fraction = event.done / event.total if event.total else None
        progress = asdict(event) | {"fraction": fraction}
        status = CONVERTING if event.phase == "converting" else INSPECTING
        self.datasets.update(self.lease, status=status, progress=progress)
        store = self.executor.store
        if event.phase != self._phase:
            self._phase = event.phase
            store.add_event(self.lease, event.phase, f"{event.phase} the source", progress)
        if event.done >= self._next_event_at and event.done > 0:
            step = (
                max(1, round(event.total * EVENT_EVERY_FRACTION))
                if event.total
                else EVENT_EVERY_RECORDS
            )
            self._next_event_at = event.done + step
            of = f" of {event.total}" if event.total else ""
            message = f"{event.done}{of} files read, {event.unreadable} unreadable"
            store.add_event(self.lease, "progress", message, progress)
        store.report(self.lease, progress=progress, metrics={}, eta_seconds=None)


def run_conversion(
    executor,
    datasets: DatasetStore,
    limits: ConversionLimits,
    lease: Lease,
    job: Job,
    shutting_down: Callable[[], bool],
) -> str:
    """Converts the job's dataset; returns the job's status afterwards."""
    out_dir = executor.work_root / job.id
    request = _request(executor, job, limits)
    if isinstance(request, str):
        return _failed(executor, datasets, lease, protocol.INPUT_MISSING, request)
    out_dir.mkdir(parents=True, exist_ok=True)
    request_path = out_dir / "request.json"
    request_path.write_text(json.dumps(request))
    snapshot = out_dir / "snapshot"
    command = [sys.executable, "-m", "otrt_core.data.convert", str(request_path)]
    child = ChildProcess(
        [*command, "--out", str(snapshot), "--stop-on-stdin-eof"],
        out_dir / "converter.log",
        executor.trainer_env or {},
        preexec_fn=_bounded,
    )
    log.info("job %s: converter pid %d", job.id, child.pid)
    follower = ConversionFollower(datasets, executor, lease)
    deadline = time.monotonic() + limits.max_seconds
    try:
        reason = executor.follow(child, lease, follower, shutting_down, deadline)
    except BaseException:
        child.stop()
        executor.end(lease, states.QUEUED, "the executor was interrupted; requeued to resume")
        raise
    code = child.wait()
    if reason == StopReason.LEASE_LOST:
        return reason
    if reason == StopReason.CANCEL:
        datasets.update(lease, status=FAILED, error={"code": "cancelled", "message": "cancelled"})
        return executor.end(lease, states.CANCELLED, "cancelled; the converter stopped")
    if reason == StopReason.SHUTDOWN:
        return executor.end(lease, states.QUEUED, "stopped; requeued to resume")
    if code == protocol.EXIT_OK and follower.details is not None:
        _store_snapshot(executor, job.dataset_id, snapshot)
        datasets.update(
            lease,
            status=READY,
            details=follower.details,
            shards=snapshot_prefix(job.dataset_id),
            progress={"phase": "ready", "fraction": 1.0},
        )
        shutil.rmtree(out_dir, ignore_errors=True)
        message = f"ready: {_summary(follower.details)}"
        return executor.end(lease, states.SUCCEEDED, message, progress={"fraction": 1.0})
    if code == protocol.EXIT_INVALID and follower.error:
        return _failed(executor, datasets, lease, protocol.INVALID_INPUT, follower.error)
    if reason == StopReason.TIME_LIMIT:
        return _failed(
            executor, datasets, lease, protocol.TIME_LIMIT, "the conversion ran too long"
        )
    log.error("job %s: converter exited %d:\n%s", job.id, code, child.stderr_tail())
    message = f"the conversion failed (exit {code}); the server log has the details"
    return _failed(executor, datasets, lease, protocol.INTERNAL_ERROR, message)


def _request(executor, job: Job, limits: ConversionLimits) -> dict[str, Any] | str:
    """The converter's request; a message when an uploaded source is gone."""
    source = job.spec["source"]
    upload = None
    if source.startswith("file_"):
        try:
            record = executor.files.get(source, job.owner)
            upload = str(executor.storage.fetch(record.path, record.sha256))
        except (FileNotFound, LookupError):
            return f"the uploaded file {source} is gone"
    return {
        "source": source,
        "format": job.spec["format"],
        "upload": upload,
        "allowed": list(limits.allowed),
        "s3_endpoint_url": limits.s3_endpoint_url,
        "max_image_pixels": limits.max_image_pixels,
        "max_unreadable_fraction": limits.max_unreadable_fraction,
        "shard_bytes": limits.shard_bytes,
    }


def _bounded() -> None:
    """In the child before it runs: its data segment bounded (a bomb kills it, not us)."""
    resource.setrlimit(resource.RLIMIT_DATA, (CONVERTER_DATA_BYTES, CONVERTER_DATA_BYTES))


def _store_snapshot(executor, dataset_id: str, snapshot: Path) -> None:
    """Every shard, then ``index.json`` (last: a snapshot with an index is whole)."""
    index = ShardIndex.read(snapshot / INDEX)
    prefix = snapshot_prefix(dataset_id)
    for shard in index.shards:
        executor.storage.put(f"{prefix}/{shard.name}", snapshot / shard.name)
    executor.storage.put(f"{prefix}/{INDEX}", snapshot / INDEX)


def _summary(details: dict[str, Any]) -> str:
    images = sum(sum(per_class.values()) for per_class in details["counts"].values())
    classes = len(details["classes"])
    return f"{images} images, {classes} classes, {details['unreadable']['count']} unreadable"


def _failed(executor, datasets: DatasetStore, lease: Lease, code: str, message: str) -> str:
    message = executor.one_line(message)
    datasets.update(lease, status=FAILED, error={"code": code, "message": message})
    return executor.fail(lease, code, message)
