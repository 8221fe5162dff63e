"""Sharing one service fairly: fair order, quotas, rate limits and key management,
on PostgreSQL and SQLite."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from api.limits import RateLimiter
from otrt.cli import app as cli
from otrt_core.jobs.db import make_sessions
from otrt_core.jobs.keys import KeyStore, Quota
from otrt_core.spec import resolve_spec
from tests.service.api_helpers import SUPERVISED, api_client, assert_problem, key_header

PROGRESS = {"epoch": 0, "epochs": 1, "step": 0, "steps": None, "fraction": 0.0}


def queue(store, owner: str, count: int, *, key_id=None, priority: int = 0) -> list[str]:
    """``count`` new queued jobs of ``owner``, oldest first."""
    return [
        store.create(
            owner, resolve_spec(SUPERVISED), {}, PROGRESS, key_id=key_id, priority=priority
        )[0].id
        for _ in range(count)
    ]


def test_an_owner_with_one_job_starts_within_two_starts_of_one_with_fifty(store):
    queue(store, "a", 50)
    (b_job,) = queue(store, "b", 1)
    started = [store.claim_next(f"w{i}", 60).job_id for i in range(2)]
    assert b_job in started
    # Then owners keep taking turns while both wait: the one whose last start is oldest.
    queue(store, "b", 1)
    following = [store.get(store.claim_next("w", 60).job_id).owner for _ in range(3)]
    assert following == ["a", "b", "a"]


def test_within_an_owner_priority_then_age_decides(store):
    low = queue(store, "a", 1)[0]
    high = queue(store, "a", 1, priority=5)[0]
    older, younger = queue(store, "a", 2, priority=5)
    claimed = [store.claim_next("w", 60).job_id for _ in range(4)]
    assert claimed == [high, older, younger, low]


def test_a_key_at_its_max_running_waits_while_others_start(store, engine):
    keys = KeyStore(make_sessions(engine))
    capped, _ = keys.create("a")
    keys.set_quota(capped.id, max_running=1)
    first, second = queue(store, "a", 2, key_id=capped.id)
    assert store.claim_next("w", 60).job_id == first
    assert store.claim_next("w", 60) is None  # a's second job waits for the first
    (b_job,) = queue(store, "b", 1)
    assert store.claim_next("w", 60).job_id == b_job
    store.transition(first, "cancelling", "stop")
    store.transition(first, "cancelled", "stopped")
    assert store.claim_next("w", 60).job_id == second
    # The server-wide default applies to keys without their own limit.
    uncapped, _ = keys.create("c")
    queue(store, "c", 2, key_id=uncapped.id)
    assert store.claim_next("w", 60, default_max_running=1) is not None
    assert store.claim_next("w", 60, default_max_running=1) is None


def test_a_full_queue_is_429_with_retry_after_and_replays_still_answer(parts):
    capped, plain = parts.keys.create("a")
    parts.keys.set_quota(capped.id, max_queued=2)
    headers = {"Authorization": f"Bearer {plain}"}
    once = headers | {"Idempotency-Key": "1"}
    with api_client(parts) as client:
        first = client.post("/v1/jobs", json=SUPERVISED, headers=once)
        assert first.status_code == 201
        assert client.post("/v1/jobs", json=SUPERVISED, headers=headers).status_code == 201
        full = client.post("/v1/jobs", json=SUPERVISED, headers=headers)
        assert "max_queued" in assert_problem(full, 429)["detail"]
        assert int(full.headers["retry-after"]) >= 1
        replay = client.post(
            "/v1/jobs", json=SUPERVISED, headers=headers | {"Idempotency-Key": "1"}
        )
        assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
        other = key_header(parts, "b")  # another key's queue is its own
        assert client.post("/v1/jobs", json=SUPERVISED, headers=other).status_code == 201


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_past_its_rate_is_429_with_retry_after(parts):
    parts.quota = Quota(max_running=None, max_queued=100, rate_limit=0.5, rate_burst=3)
    headers, clock = key_header(parts, "a"), FakeClock()
    with api_client(parts) as client:
        client.app.state.rate_limiter = RateLimiter(clock)
        assert [client.get("/v1/jobs", headers=headers).status_code for _ in range(3)] == [200] * 3
        limited = client.get("/v1/jobs", headers=headers)
        assert_problem(limited, 429)
        assert limited.headers["retry-after"] == "2"  # one token at 0.5 a second
        assert client.get("/v1/jobs", headers=key_header(parts, "b")).status_code == 200
        clock.now += 1.9
        assert_problem(client.get("/v1/jobs", headers=headers), 429)
        clock.now += 0.2
        assert client.get("/v1/jobs", headers=headers).status_code == 200


def test_a_revoked_key_is_refused_at_once(parts):
    record, plain = parts.keys.create("a")
    headers = {"Authorization": f"Bearer {plain}"}
    with api_client(parts) as client:
        assert client.get("/v1/jobs", headers=headers).status_code == 200
        parts.keys.revoke(record.id)
        assert_problem(client.get("/v1/jobs", headers=headers), 401)


def test_keys_commands_list_revoke_and_set_quotas(tmp_path, monkeypatch):
    monkeypatch.setenv("OTRT_DATABASE_URL", f"sqlite:///{tmp_path / 'otrt.db'}")
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "--name", "ops", "--admin"])
    assert created.exit_code == 0 and created.stdout.startswith("otrt_")
    rows = listed(runner)
    assert [(r["name"], r["admin"], r["revoked_at"]) for r in rows] == [("ops", True, None)]
    key_id = rows[0]["id"]
    quota = ["keys", "set-quota", key_id, "--max-running", "2", "--rate-limit", "5"]
    assert runner.invoke(cli, quota).exit_code == 0
    assert runner.invoke(cli, ["keys", "set-quota", key_id, "--max-running", "0"]).exit_code == 0
    assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 0
    (row,) = listed(runner)
    assert (row["max_running"], row["rate_limit"]) == (None, 5.0) and row["revoked_at"]
    missing = runner.invoke(cli, ["keys", "revoke", "key_nope"])
    assert missing.exit_code == 1 and "no key key_nope" in missing.stderr


def listed(runner: CliRunner) -> list[dict]:
    output = runner.invoke(cli, ["keys", "list", "--json"]).stdout
    return [json.loads(line) for line in output.splitlines()]


def test_an_upload_in_parts_is_its_owners_alone(client, alice, bob):
    body = {"filename": "set.zip", "size": 70_000, "part_size": 65536}
    upload = client.post("/v1/uploads", json=body, headers=alice).json()
    for method, path in [
        ("GET", f"/v1/uploads/{upload['id']}"),
        ("PUT", f"/v1/uploads/{upload['id']}/parts/2"),
        ("POST", f"/v1/uploads/{upload['id']}/complete"),
        ("DELETE", f"/v1/uploads/{upload['id']}"),
    ]:
        answer = client.request(method, path, headers=bob, content=b"x" * 4464)
        assert answer.status_code == 404, (method, path, answer.text)
    assert (
        client.put(
            f"/v1/uploads/{upload['id']}/parts/2", headers=alice, content=b"x" * 4464
        ).status_code
        == 200
    )
