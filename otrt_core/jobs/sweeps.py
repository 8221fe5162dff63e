"""Running a sweep: plan points of the space, queue their jobs, stop the weak, sum up.

No daemon runs a sweep. :meth:`SweepRunner.advance` is called by whoever has
news (the API when the sweep is submitted or cancelled, an executor when a
trial's job ends, and every reaper round as a safety net), and each call
moves the sweep as far as it can:

1. note the jobs that ended since (an event each);
2. on cancel, cancel the live jobs, and end the sweep once none is left;
3. queue the planned jobs that have none yet, up to ``parallel`` live at once;
4. ask the search for the next point when every planned job is queued and a
   slot is free;
5. when nothing is live and nothing is left to plan, write the summary (the
   best point, the ``compare`` gains with their paired 95% intervals) and end.

Each change is a compare-and-set on the sweep row (:class:`SweepStore`). The
plan (``state["jobs"]``) names each job by an idempotency key, and a job is
created with that key, so a job is never created twice, even by two
processes at once or after a crash between the plan and the job.

``state`` holds ``points`` (each point Optuna proposed: its encoded values,
Optuna's system attributes, whether ASHA pruned it), ``jobs`` (the planned
jobs in order: key, role ``point`` or a baseline, point index, seed index)
and ``noted`` (keys of the jobs whose end has an event).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from otrt_core.jobs import states
from otrt_core.jobs import sweep_store as sweep_status
from otrt_core.jobs.store import JobStore
from otrt_core.jobs.sweep_spec import SweepSpec, baseline_spec, trial_count, trial_spec
from otrt_core.jobs.sweep_store import Mark, Note, SweepStore
from otrt_core.jobs.tables import Job, Sweep
from otrt_core.spec import JobSpec, SpecError

log = logging.getLogger("otrt.sweeps")
POINT = "point"
MAX_ROUNDS = 1000  # steps of one advance; each lands a change or returns


def initial_state(sweep_id: str, sweep: SweepSpec) -> dict[str, Any]:
    """The plan of a new sweep: its baselines' jobs (they do not depend on the search)."""
    jobs = [
        _planned(sweep_id, kind, None, seed)
        for seed in range(sweep.seeds)
        for kind in sweep.compare
    ]
    return {"points": [], "jobs": jobs, "noted": []}


def _planned(sweep_id: str, role: str, point: int | None, seed: int) -> dict[str, Any]:
    where = f"{role}/{point}" if point is not None else role
    return {"key": f"{sweep_id}/{where}/seed{seed}", "role": role, "point": point, "seed": seed}


def job_metric(job: Job) -> float | None:
    """The metric a finished trial is judged by: the validation accuracy of the epoch its
    student was taken from (the best one, unless ``training.select`` is ``last``)."""
    select = job.training_spec.training.select
    return job.metrics.get("best_val_accuracy" if select == "best" else "val_accuracy")


class SweepRunner:
    """Advances sweeps; one per process that has news of them."""

    def __init__(self, store: JobStore, sweeps: SweepStore, dispatch: Callable[[str], None]):
        self.store, self.sweeps, self.dispatch = store, sweeps, dispatch
        self._idle: dict[str, Mark] = {}  # sweeps the last round left with nothing to do

    # --- advancing ---------------------------------------------------------------------

    def advance(self, sweep_id: str) -> Sweep:
        """Moves the sweep as far as it can now; returns it as it then is."""
        for _ in range(MAX_ROUNDS):
            sweep = self.sweeps.get(sweep_id)
            if sweep.status in sweep_status.TERMINAL or not self._step(sweep):
                return sweep
        return self.sweeps.get(sweep_id)

    def advance_unfinished(self) -> None:
        """Advances every sweep that has not ended (the reaper's safety net), but for
        those this runner last found with nothing to do whose mark has not moved since
        (no new version, no job in another status): a round with nothing new costs
        two queries, not a read and a search of every sweep."""
        marks = self.sweeps.unfinished()
        self._idle = {key: mark for key, mark in self._idle.items() if key in marks}
        for sweep_id, mark in marks.items():
            if self._idle.get(sweep_id) == mark:
                continue
            try:
                sweep = self.advance(sweep_id)
            except Exception:
                log.warning("sweep %s: could not advance it", sweep_id, exc_info=True)
                continue
            if sweep.version == mark[0]:  # nothing to do; else look again next round
                self._idle[sweep_id] = mark

    def _step(self, sweep: Sweep) -> bool:
        """One change; true if it landed (or lost a race) and the sweep should be read again."""
        request = SweepSpec.model_validate(sweep.request)
        jobs = self._jobs(sweep)
        planned = sweep.state["jobs"]
        ended = [
            entry
            for entry in planned
            if entry["key"] in jobs
            and jobs[entry["key"]].status in states.TERMINAL
            and entry["key"] not in sweep.state["noted"]
        ]
        if ended:
            noted = sweep.state["noted"] + [entry["key"] for entry in ended]
            notes = [self._ended_note(entry, jobs[entry["key"]]) for entry in ended]
            self.sweeps.update(sweep, notes, state=sweep.state | {"noted": noted})
            return True
        live = [job for job in jobs.values() if job.status in states.LIVE]
        if sweep.cancel_requested:
            for job in live:
                self._cancel(job)
            if any(job.status in states.LIVE for job in self._jobs(sweep).values()):
                return False
            note = Note(sweep_status.CANCELLED, "sweep cancelled", {})
            self.sweeps.update(sweep, [note], status=sweep_status.CANCELLED)
            return True
        waiting = [e for e in planned if e["key"] not in jobs and not self._skipped(sweep, e)]
        if waiting and len(live) < request.parallel:
            self._queue(sweep, request, waiting[0])
            return True
        if not waiting and len(live) < request.parallel and self._more_points(sweep, request):
            return self._plan_point(sweep, request, jobs)
        if not waiting and not live:
            return self._finish(sweep, request, jobs)
        return False

    def _jobs(self, sweep: Sweep) -> dict[str, Job]:
        """The sweep's jobs by their idempotency key (the plan's ``key``)."""
        return {job.idempotency_key: job for job in self.store.sweep_jobs(sweep.id)}

    @staticmethod
    def _skipped(sweep: Sweep, entry: dict[str, Any]) -> bool:
        """A planned job of a point ASHA pruned is never queued."""
        point = entry["point"]
        return point is not None and sweep.state["points"][point].get("pruned", False)

    def _more_points(self, sweep: Sweep, request: SweepSpec) -> bool:
        return len(sweep.state["points"]) < trial_count(request)

    def _queue(self, sweep: Sweep, request: SweepSpec, entry: dict[str, Any]) -> None:
        """Creates the planned job (once: its key is its idempotency key) and dispatches it."""
        try:
            spec = self._spec_of(sweep, request, entry)
        except SpecError as error:
            # Each value and both ends of each range were checked at submission; a point
            # between them that still fails is skipped, seen by the search as stopped.
            point = entry["point"]
            if point is None:  # a baseline was checked whole: this is a bug
                raise
            log.warning("sweep %s: point %s is not a valid job: %s", sweep.id, point, error)
            points = [dict(p) for p in sweep.state["points"]]
            points[point]["pruned"] = True
            note = Note("invalid", f"point {point} is not a valid job ({error}); skipped", {})
            self.sweeps.update(sweep, [note], state=sweep.state | {"points": points})
            return
        body = spec.model_dump(mode="json")
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        metadata = spec.metadata | {"sweep": sweep.id, "sweep_role": entry["role"]}
        progress = {"epoch": 0, "epochs": spec.training.epochs, "step": 0, "steps": None}
        job, created = self.store.create(
            sweep.owner,
            spec,
            metadata,
            progress | {"fraction": 0.0},
            inputs=sweep.inputs,
            idempotency_key=entry["key"],
            request_hash=digest,
            key_id=sweep.key_id,
            priority=spec.priority,
            sweep_id=sweep.id,
        )
        if created:
            self.dispatch(job.id)

    def _spec_of(self, sweep: Sweep, request: SweepSpec, entry: dict[str, Any]) -> JobSpec:
        if entry["role"] != POINT:
            return baseline_spec(request, entry["role"], entry["seed"])
        from otrt_core.jobs.search import decode  # Optuna (and numpy) load with a sweep

        point = sweep.state["points"][entry["point"]]
        return trial_spec(request, decode(request.space, point["encoded"]), entry["seed"])

    def _plan_point(self, sweep: Sweep, request: SweepSpec, jobs: dict[str, Job]) -> bool:
        """Asks the search for the next point and plans its jobs, one per seed."""
        from otrt_core.jobs.search import ask, decode

        index = len(sweep.state["points"])
        seed = int(hashlib.sha256(sweep.id.encode()).hexdigest()[:8], 16)
        point = ask(request, self._points(sweep, request, jobs), seed)
        params = decode(request.space, point.encoded)
        stored = {"encoded": point.encoded, "system_attrs": point.system_attrs, "pruned": False}
        planned = [_planned(sweep.id, POINT, index, s) for s in range(request.seeds)]
        state = sweep.state | {
            "points": [*sweep.state["points"], stored],
            "jobs": sweep.state["jobs"] + planned,
        }
        described = ", ".join(f"{path}={_short(value)}" for path, value in params.items())
        note = Note("point", f"point {index}: {described}", {"point": index, "params": params})
        self.sweeps.update(sweep, [note], state=state)
        return True

    def _points(self, sweep: Sweep, request: SweepSpec, jobs: dict[str, Job], epochs=False):
        """Every planned point as the search sees it (:class:`~otrt_core.jobs.search.Point`),
        with its per-epoch metric (the mean over its seeds) when ``epochs``."""
        from otrt_core.jobs.search import Point

        by_point: dict[int, list[Job | None]] = {}
        for entry in sweep.state["jobs"]:
            if entry["role"] == POINT:
                by_point.setdefault(entry["point"], []).append(jobs.get(entry["key"]))
        history = {}
        if epochs:
            history = self.store.metrics_of([j.id for js in by_point.values() for j in js if j])
        points = []
        for index, stored in enumerate(sweep.state["points"]):
            point_jobs = by_point.get(index, [])
            point = Point(stored["encoded"], dict(stored["system_attrs"]))
            values = [job_metric(j) for j in point_jobs if j and j.status == states.SUCCEEDED]
            values = [v for v in values if v is not None]
            ended = all(j is not None and j.status in states.TERMINAL for j in point_jobs)
            if stored.get("pruned"):
                point.state = "pruned"
            elif ended and values:
                point.state, point.value = "complete", sum(values) / len(values)
            elif ended:
                point.state = "failed"
            if epochs:
                point.epochs = _mean_by_epoch(
                    [history[j.id] for j in point_jobs if j is not None], request.metric
                )
            points.append(point)
        return points

    def _finish(self, sweep: Sweep, request: SweepSpec, jobs: dict[str, Job]) -> bool:
        """Writes the summary and ends the sweep: succeeded if a point completed."""
        summary = self.summary(sweep, request, jobs)
        best = summary.get("best")
        if best is None:
            note = Note(sweep_status.FAILED, "sweep failed: no point completed", summary)
            self.sweeps.update(sweep, [note], status=sweep_status.FAILED, summary=summary)
            return True
        message = f"sweep succeeded: best point {best['point']} at {best['metric']:.1%}"
        for kind, gain in summary["compare"].items():
            if gain.get("gain") is not None:
                message += f"; {gain['gain'] * 100:+.1f} points over {kind}"
        note = Note(sweep_status.SUCCEEDED, message, summary)
        self.sweeps.update(sweep, [note], status=sweep_status.SUCCEEDED, summary=summary)
        return True

    # --- what the sweep is worth -------------------------------------------------------

    def view(self, sweep: Sweep) -> dict[str, Any]:
        """The sweep as API.md shows it: every planned job with its point's values and
        its result, the best point (so far, while it runs) and the comparisons."""
        from otrt_core.jobs.search import decode

        request = SweepSpec.model_validate(sweep.request)
        jobs = self._jobs(sweep)
        trials = []
        for entry in sweep.state["jobs"]:
            job = jobs.get(entry["key"])
            point = entry["point"]
            params = {}
            if point is not None:
                params = decode(request.space, sweep.state["points"][point]["encoded"])
            ended = sweep.status in sweep_status.TERMINAL
            job_status = job.status if job is not None else ("skipped" if ended else "planned")
            if self._skipped(sweep, entry) and job_status in ("planned", "skipped", "cancelled"):
                job_status = "pruned"
            trials.append(
                {
                    "job_id": job.id if job is not None else None,
                    "role": entry["role"],
                    "point": point,
                    "seed": entry["seed"],
                    "params": params,
                    "status": job_status,
                    "metric": job_metric(job) if job is not None else None,
                    "test_accuracy": _test_accuracy(job),
                    # A collapsed student counts at its accuracy; this says why it is low.
                    "collapsed": bool(job is not None and (job.metrics or {}).get("collapsed")),
                }
            )
        finished = sweep.status in sweep_status.TERMINAL
        summary = sweep.summary if finished else self.summary(sweep, request, jobs, compare=False)
        return {
            "id": sweep.id,
            "status": sweep.status,
            "created_at": sweep.created_at,
            "finished_at": sweep.finished_at,
            "search": request.search,
            "metric": request.metric,
            "points": {"planned": len(sweep.state["points"]), "total": trial_count(request)},
            "parallel": request.parallel,
            "trials": trials,
            "best": summary.get("best"),
            "compare": summary.get("compare", {}),
        }

    def summary(
        self, sweep: Sweep, request: SweepSpec, jobs: dict[str, Job], *, compare: bool = True
    ) -> dict[str, Any]:
        """The best point (the highest mean metric over its seeds; its best seed's job) and,
        with ``compare``, each baseline's comparison with it."""
        from otrt_core.jobs.search import decode

        points = self._points(sweep, request, jobs)
        complete = [i for i, p in enumerate(points) if p.state == "complete"]
        if not complete:
            return {"best": None, "compare": {}}
        best = max(complete, key=lambda i: points[i].value)
        seeds = {e["seed"]: jobs.get(e["key"]) for e in sweep.state["jobs"] if e["point"] == best}
        finished = [j for j in seeds.values() if j is not None and job_metric(j) is not None]
        best_job = max(finished, key=job_metric)
        ours = [_test_accuracy(seeds.get(s)) for s in range(request.seeds)]
        compare = {
            kind: paired_gain(
                ours,
                [_test_accuracy(self._baseline(sweep, jobs, kind, s)) for s in range(len(ours))],
            )
            for kind in (request.compare if compare else [])
        }
        return {
            "best": {
                "point": best,
                "job_id": best_job.id,
                "metric": points[best].value,
                "params": decode(request.space, points[best].encoded),
                "spec": best_job.spec,
            },
            "compare": compare,
        }

    @staticmethod
    def _baseline(sweep: Sweep, jobs: dict[str, Job], kind: str, seed: int) -> Job | None:
        key = _planned(sweep.id, kind, None, seed)["key"]
        return jobs.get(key)

    # --- early stopping and cancelling -------------------------------------------------

    def should_stop(self, job: Job) -> bool:
        """Whether ASHA stops this running trial at the epoch it has just reported.

        The decision, and the rungs the point has completed, land on the sweep by
        compare-and-set; a pruned point's other live jobs are cancelled, and the
        caller stops this one.
        """
        from otrt_core.jobs.search import should_prune

        for _ in range(MAX_ROUNDS):
            sweep = self.sweeps.get(job.sweep_id)
            request = SweepSpec.model_validate(sweep.request)
            entry = next((e for e in sweep.state["jobs"] if e["key"] == job.idempotency_key), None)
            if request.early_stop != "asha" or entry is None or entry["role"] != POINT:
                return False
            if sweep.status in sweep_status.TERMINAL or self._skipped(sweep, entry):
                return self._skipped(sweep, entry)
            index = entry["point"]
            jobs = self._jobs(sweep)
            pruned, attrs = should_prune(request, self._points(sweep, request, jobs, True), index)
            points = [dict(p) for p in sweep.state["points"]]
            points[index] = points[index] | {"system_attrs": attrs, "pruned": pruned}
            notes = []
            if pruned:
                epochs = len(self.store.metrics(job.id))
                message = f"point {index} stopped early by ASHA after {epochs} epoch(s)"
                notes.append(Note("pruned", message, {"point": index, "job_id": job.id}))
            if self.sweeps.update(sweep, notes, state=sweep.state | {"points": points}):
                break
        if pruned:
            for entry in sweep.state["jobs"]:
                other = jobs.get(entry["key"])
                if entry["point"] == index and other is not None and other.id != job.id:
                    self._cancel(other)
        return pruned

    def cancel(self, sweep: Sweep) -> Sweep:
        """Asks the sweep to stop: its queued jobs are cancelled at once, its running ones
        stop at their executor's next heartbeat, and it ends once none is live."""
        for _ in range(MAX_ROUNDS):
            if sweep.status in sweep_status.TERMINAL or sweep.cancel_requested:
                break
            note = Note(sweep_status.CANCELLING, "cancel requested", {})
            asked = {"status": sweep_status.CANCELLING, "cancel_requested": True}
            if self.sweeps.update(sweep, [note], **asked):
                break
            sweep = self.sweeps.get(sweep.id)
        return self.advance(sweep.id)

    def _cancel(self, job: Job) -> None:
        if job.status not in states.LIVE:
            return
        with contextlib.suppress(states.IllegalTransition):  # it ended meanwhile
            self.store.request_cancel(job.id, job.owner)

    @staticmethod
    def _ended_note(entry: dict[str, Any], job: Job) -> Note:
        who = f"point {entry['point']}" if entry["role"] == POINT else f"baseline {entry['role']}"
        what = f"job {job.id} ({who}, seed {entry['seed']}) {job.status}"
        metric = job_metric(job)
        if job.status == states.SUCCEEDED and metric is not None:
            what += f": val accuracy {metric:.1%}"
        elif job.error:
            what += f": {job.error.get('message', '')}"
        data = {"job_id": job.id, "status": job.status, "metric": metric} | {
            k: entry[k] for k in ("role", "point", "seed")
        }
        return Note("job", what, data)


def paired_gain(ours: list[float | None], theirs: list[float | None]) -> dict[str, Any]:
    """The mean of ``ours[s] - theirs[s]`` over the seeds where both exist, with its 95%
    interval (Student's t with n - 1 degrees of freedom; none for fewer than 2 seeds)."""
    gains = [a - b for a, b in zip(ours, theirs, strict=True) if a is not None and b is not None]
    if not gains:
        return {"gain": None, "ci95": None, "seeds": 0}
    mean = sum(gains) / len(gains)
    if len(gains) < 2:
        return {"gain": mean, "ci95": None, "seeds": 1}
    from scipy.stats import t  # only when a sweep ends

    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / (len(gains) - 1))
    half = float(t.ppf(0.975, len(gains) - 1)) * sd / math.sqrt(len(gains))
    return {"gain": mean, "ci95": [mean - half, mean + half], "seeds": len(gains)}


def _test_accuracy(job: Job | None) -> float | None:
    if job is None or job.status != states.SUCCEEDED:
        return None
    return job.metrics.get("test_accuracy")


def _mean_by_epoch(histories: list[list[dict[str, Any]]], metric: str) -> dict[int, float]:
    """Each epoch's mean of ``metric`` over the histories that reached it."""
    sums: dict[int, list[float]] = {}
    for history in histories:
        for record in history:
            sums.setdefault(record["epoch"], []).append(record[metric])
    return {epoch: sum(values) / len(values) for epoch, values in sums.items()}


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, float):
        text = f"{value:.4g}"
    return text if len(text) <= 80 else text[:77] + "..."
