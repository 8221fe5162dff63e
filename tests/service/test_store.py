"""The job store on PostgreSQL and SQLite: state machine, claims, leases, recovery."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from otrt_core.jobs import states
from otrt_core.jobs.recovery import WORKER_LOST, reap, release_leases_of
from otrt_core.jobs.store import IdempotencyConflict, JobStore, Lease
from otrt_core.jobs.tables import Job, utcnow
from otrt_core.spec import resolve_spec

PROGRESS = {"epoch": 0, "epochs": 1, "step": 0, "steps": None, "fraction": 0.0}
SPEC = resolve_spec(
    {"mode": "supervised", "student": {"architecture": "mlp"}, "dataset": {"name": "digits"}}
)


def new_job(store: JobStore, owner: str = "alice", **kwargs) -> Job:
    job, created = store.create(owner, SPEC, {}, PROGRESS, **kwargs)
    assert created
    return job


def expire(store: JobStore, job_id: str) -> None:
    with store.sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_a_new_job_is_queued_with_its_event(store):
    job = new_job(store)
    assert store.get(job.id).status == states.QUEUED
    assert [e.type for e in store.events(job.id)] == ["queued"]


def test_every_transition_outside_the_state_machine_is_refused(store):
    for source in states.STATUSES:
        for target in states.STATUSES:
            job = new_job(store)
            path = {
                states.QUEUED: [],
                states.RUNNING: [states.RUNNING],
                states.CANCELLING: [states.RUNNING, states.CANCELLING],
                states.SUCCEEDED: [states.RUNNING, states.SUCCEEDED],
                states.FAILED: [states.FAILED],
                states.CANCELLED: [states.CANCELLED],
            }[source]
            for step in path:
                store.transition(job.id, step, "setup")
            if states.allowed(source, target):
                assert store.transition(job.id, target, "test").status == target
            else:
                with pytest.raises(states.IllegalTransition):
                    store.transition(job.id, target, "test")
                assert store.get(job.id).status == source


def test_each_transition_writes_its_event_in_order(store):
    job = new_job(store)
    lease = store.claim(job.id, "w1", 60)
    store.transition(job.id, states.SUCCEEDED, "done", lease=lease)
    assert [e.type for e in store.events(job.id)] == ["queued", "running", "succeeded"]
    assert store.get(job.id).finished_at is not None


def test_concurrent_claims_have_exactly_one_winner(store):
    job = new_job(store)
    barrier = threading.Barrier(16)
    leases: list[Lease | None] = []

    def claim(index: int) -> None:
        barrier.wait()
        leases.append(store.claim(job.id, f"worker-{index}", 60))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [lease for lease in leases if lease is not None]
    assert len(leases) == 16 and len(winners) == 1
    assert store.get(job.id).attempt == 1
    assert store.get(job.id).lease_owner == winners[0].owner


def test_a_fenced_off_executor_cannot_write_the_new_attempt(store):
    job = new_job(store)
    old = store.claim(job.id, "w1", 60)
    expire(store, job.id)
    assert reap(store, max_attempts=3, requeue_after_seconds=3600).requeued == [job.id]
    new = store.claim(job.id, "w2", 60)
    assert new.attempt == 2
    assert store.renew(old, 60) is None
    assert not store.report(old, progress={}, metrics={}, eta_seconds=1.0)
    events_before = len(store.events(job.id))
    assert not store.add_event(old, "epoch", "stale")
    assert len(store.events(job.id)) == events_before  # the stale event was not written
    assert store.add_event(new, "epoch", "current")
    with pytest.raises(states.IllegalTransition):
        store.transition(job.id, states.SUCCEEDED, "stale", lease=old)
    assert store.transition(job.id, states.SUCCEEDED, "done", lease=new).status == "succeeded"


def test_the_reaper_fails_a_job_after_its_last_attempt(store):
    job = new_job(store)
    for attempt in (1, 2):
        store.claim(job.id, f"w{attempt}", 60)
        expire(store, job.id)
        reaped = reap(store, max_attempts=2, requeue_after_seconds=3600)
    assert reaped.failed == [job.id]
    failed = store.get(job.id)
    assert failed.status == states.FAILED and failed.error["code"] == WORKER_LOST


def test_a_renewed_lease_is_not_reaped_and_reports_a_cancel(store):
    job = new_job(store)
    lease = store.claim(job.id, "w1", 60)
    assert store.renew(lease, 60) is False
    assert reap(store, max_attempts=3, requeue_after_seconds=3600).requeued == []
    store.request_cancel(job.id, "alice")
    assert store.get(job.id).status == states.CANCELLING
    assert store.renew(lease, 60) is True


def test_cancelling_a_queued_job_cancels_it_and_a_finished_one_is_refused(store):
    job = new_job(store)
    assert store.request_cancel(job.id, "alice").status == states.CANCELLED
    with pytest.raises(states.IllegalTransition):
        store.request_cancel(job.id, "alice")
    assert store.claim(job.id, "w1", 60) is None


def test_a_restarted_executor_requeues_what_it_held(store):
    running, cancelling = new_job(store), new_job(store)
    store.claim(running.id, "embedded-x", 60)
    store.claim(cancelling.id, "embedded-x", 60)
    store.request_cancel(cancelling.id, "alice")
    assert release_leases_of(store, "embedded-x") == [running.id]
    assert store.get(running.id).status == states.QUEUED
    assert store.get(cancelling.id).status == states.CANCELLED


def test_idempotency_keys_return_the_first_job_or_conflict(store):
    job = new_job(store, idempotency_key="k1", request_hash="h1")
    again, created = store.create(
        "alice", SPEC, {}, PROGRESS, idempotency_key="k1", request_hash="h1"
    )
    assert (again.id, created) == (job.id, False)
    with pytest.raises(IdempotencyConflict):
        store.create("alice", SPEC, {}, PROGRESS, idempotency_key="k1", request_hash="h2")
    other, created = store.create(
        "bob", SPEC, {}, PROGRESS, idempotency_key="k1", request_hash="h2"
    )
    assert created and other.id != job.id  # keys are per owner


def test_pages_are_newest_first_and_owner_scoped(store):
    ids = [new_job(store).id for _ in range(5)]
    new_job(store, owner="bob")
    first = store.list("alice", limit=2)
    second = store.list("alice", limit=2, after=first.next_after)
    third = store.list("alice", limit=2, after=second.next_after)
    seen = [j.id for page in (first, second, third) for j in page.items]
    assert seen == ids[::-1]
    assert first.has_more and second.has_more and not third.has_more
    assert third.next_after is None


def test_a_stale_queued_job_is_redispatched_by_one_reaper_only(store):
    job = new_job(store)
    # Both rounds at one instant, whatever time passes between them on a busy machine:
    # the first re-sends the job and marks it re-sent; the second finds it fresh.
    now = utcnow()
    first = reap(store, max_attempts=3, requeue_after_seconds=0, now=now)
    second = reap(store, max_attempts=3, requeue_after_seconds=0.5, now=now)
    assert first.redispatch == [job.id] and second.redispatch == []


def test_a_sweep_on_a_registered_dataset_holds_it_until_it_ends(store):
    """DELETE /v1/datasets/{id} is 409 while a sweep that has not ended trains on it, as
    its base job's data or its pool (the check reads the sweep's request)."""
    from otrt_core.jobs.sweep_store import Note, SweepStore

    sweeps = SweepStore(store.sessions)
    for sweep_id, dataset in (
        ("swp_data", {"name": "ds_a"}),
        ("swp_pool", {"name": "digits", "unlabeled": "ds_b"}),
    ):
        request = {"base": {"dataset": dataset}}
        sweeps.create(sweep_id, "alice", None, request, {}, {}, Note("created", "created", {}))
    assert [sweeps.unfinished_on_dataset(d) for d in ("ds_a", "ds_b", "ds_c")] == [1, 1, 0]
    sweep = sweeps.get("swp_data")
    assert sweeps.update(sweep, status="succeeded")
    assert sweeps.unfinished_on_dataset("ds_a") == 0
