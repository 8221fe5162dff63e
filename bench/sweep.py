"""Sweeps on real Celery workers: parallel speed-up, ASHA's savings, the shared teacher cache.

Prints JSON (and writes it with --out). On one cluster (PostgreSQL schema, Redis
database, `otrt api`, two `otrt worker`s, each trainer on one thread):

- ``parallel``: the same grid of ``--trials`` points (``cnn`` on digits, ``--epochs``
  each) run one after another
  (``parallel: 1``) and two at a time (``parallel: 2``), interleaved over
  ``--rounds``; the ratio of their wall times (goal: <= 0.6).
- ``asha``: one random search of ``--trials`` points with ASHA and without, the
  epochs trained in all and the best metric of each.
- ``teacher_cache``: a distillation sweep whose trials share the teacher's
  cached outputs: seconds from a trial's claim to its trainer's first step,
  for the trial that built the cache and for those that read it.
- ``cancel``: seconds from cancelling a sweep with two trials running (on
  both workers) and more queued to every trial and the sweep having ended
  (heartbeat 0.5 s here; the goal is 10 s).

Uses the fault tests' harness (tests/service/cluster.py), like bench/queue_load.py.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from sqlalchemy import text

from bench.report import publish
from otrt_core.jobs.db import make_engine
from tests.service.cluster import Cluster

TRIAL = {
    "mode": "supervised",
    "student": {"architecture": "cnn"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 3, "batch_size": 32},
}


def run_sweep(cluster: Cluster, body: dict, timeout: float = 3600) -> tuple[dict, float]:
    """Submits a sweep and waits for its end; returns it and its wall time (seconds)."""
    started = time.monotonic()
    response = cluster.client.post("/v1/sweeps", json=body)
    assert response.status_code == 201, response.text
    sweep_id = response.json()["id"]
    deadline = started + timeout
    while (sweep := cluster.client.get(f"/v1/sweeps/{sweep_id}").json())["status"] in (
        "running",
        "cancelling",
    ):
        assert time.monotonic() < deadline, sweep
        time.sleep(0.5)
    return sweep, time.monotonic() - started


def parallel(cluster: Cluster, args: argparse.Namespace) -> dict:
    trials, rounds = args.trials, args.rounds
    lrs = [round(0.005 * (i + 1), 4) for i in range(trials)]
    base = TRIAL | {"training": TRIAL["training"] | {"epochs": args.epochs}}
    body = {"base": base, "space": {"training.lr": lrs}, "search": "grid"}
    walls: dict[str, list[float]] = {"one_at_a_time": [], "two_at_a_time": []}
    for _ in range(rounds):  # interleaved: the machine's load drifts
        for name, slots in (("one_at_a_time", 1), ("two_at_a_time", 2)):
            sweep, wall = run_sweep(cluster, body | {"parallel": slots})
            assert sweep["status"] == "succeeded", sweep
            walls[name].append(wall)
    pairs = zip(walls["one_at_a_time"], walls["two_at_a_time"], strict=True)
    ratios = [two / one for one, two in pairs]
    return {
        "trials": trials,
        "epochs_per_trial": args.epochs,
        "wall_seconds": walls,
        "ratio_two_over_one": statistics.median(ratios),
        "goal_ratio": 0.6,
    }


def epochs_trained(cluster: Cluster, sweep: dict) -> int:
    return sum(
        len(cluster.client.get(f"/v1/jobs/{trial['job_id']}/metrics").json())
        for trial in sweep["trials"]
        if trial["job_id"]
    )


def asha(cluster: Cluster, args: argparse.Namespace) -> dict:
    trials = args.trials
    base = TRIAL | {"training": {"epochs": args.asha_epochs, "batch_size": 32}}
    body = {
        "base": base,
        "space": {"training.lr": {"log_uniform": [0.0003, 0.5]}},
        "search": "random",
        "trials": trials,
        "parallel": 2,
    }
    report = {}
    for early_stop in ("none", "asha"):
        sweep, wall = run_sweep(cluster, body | {"early_stop": early_stop})
        report[early_stop] = {
            "epochs_trained": epochs_trained(cluster, sweep),
            "epochs_without_stopping": trials * base["training"]["epochs"],
            "pruned_trials": sum(t["status"] == "pruned" for t in sweep["trials"]),
            "best_metric": sweep["best"]["metric"],
            "wall_seconds": wall,
        }
    return report


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def teacher_cache(cluster: Cluster, args: argparse.Namespace) -> dict:
    """Claim -> trainer ready, for the trial that built the cache and those that read it."""
    trials = args.cache_trials
    data = {"name": "fashion_mnist", "train_subset": args.cache_inputs}
    teacher_body = {
        "mode": "supervised",
        "student": {"architecture": "cnn"},
        "dataset": data,
        "training": {"epochs": 1, "batch_size": 128},
    }
    teacher = cluster.submit(teacher_body)
    assert cluster.wait(teacher, {"succeeded", "failed"}, timeout=1800)["status"] == "succeeded"
    base = {
        "mode": "distill",
        "teacher": {"architecture": "cnn", "checkpoint": teacher},
        "student": {"architecture": "cnn_small"},
        "dataset": data,
        "training": {"epochs": 1, "batch_size": 128},
    }
    weights = [round(0.1 * 3**i, 3) for i in range(trials)]
    body = {"base": base, "space": {"regularizer.weight": weights}, "search": "grid", "parallel": 1}
    sweep, _ = run_sweep(cluster, body)
    by_source: dict[str, list[float]] = {}
    for trial in sweep["trials"]:
        events = cluster.events(trial["job_id"])
        running = next(e for e in events if e["type"] == "running")
        started = next(e for e in events if e["type"] == "started")
        seconds = seconds_between(running["at"], started["at"])
        by_source.setdefault(started["data"]["teacher_cache"], []).append(seconds)
    built, shared = by_source.get("memory", []), by_source.get("shared", [])
    return {
        "trials": trials,
        "inputs": data["train_subset"],
        "claim_to_start_seconds": by_source,
        "shared_over_built": statistics.median(shared) / statistics.median(built)
        if built and shared
        else None,
    }


def cancel(cluster: Cluster, args: argparse.Namespace) -> dict:
    long = TRIAL | {"training": {"epochs": 500, "batch_size": 16}}
    body = {"base": long, "space": {"training.lr": [0.01, 0.02, 0.03, 0.04]}, "search": "grid"}
    response = cluster.client.post("/v1/sweeps", json=body | {"parallel": 2})
    assert response.status_code == 201, response.text
    sweep_id = response.json()["id"]
    for trial in response.json()["trials"][:2]:
        cluster.wait_event(trial["job_id"], "started")
    asked = time.monotonic()
    assert cluster.client.post(f"/v1/sweeps/{sweep_id}/cancel").status_code == 202
    while (sweep := cluster.client.get(f"/v1/sweeps/{sweep_id}").json())["status"] != "cancelled":
        assert time.monotonic() - asked < 120, sweep
        time.sleep(0.1)
    ended = time.monotonic() - asked
    return {
        "seconds_to_cancelled": ended,
        "trials": [t["status"] for t in sweep["trials"]],
        "heartbeat_seconds": 0.5,
        "goal_seconds": 10,
    }


PARTS = {"parallel": parallel, "asha": asha, "teacher_cache": teacher_cache, "cancel": cancel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="of the parallel part")
    parser.add_argument("--epochs", type=int, default=8, help="per trial of the parallel part")
    parser.add_argument(
        "--asha-epochs", type=int, default=9, help="per trial of the ASHA part (rungs 1, 3, 9)"
    )
    parser.add_argument("--cache-trials", type=int, default=4)
    parser.add_argument("--cache-inputs", type=int, default=20_000, help="Fashion-MNIST images")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--out")
    args = parser.parse_args()
    schema = f"otrt_bench_{secrets.token_hex(4)}"
    admin = make_engine(args.database_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    redis.Redis.from_url(args.redis_url).flushdb()
    report: dict = {"benchmark": "sweep", "load_average_start": os.getloadavg()}
    try:
        with tempfile.TemporaryDirectory() as root:
            url = f"{args.database_url}?options=-csearch_path%3D{schema}"
            cluster = Cluster(Path(root), url, args.redis_url)
            try:
                cluster.start_worker("w0")
                cluster.start_worker("w1")
                cluster.start_api()
                time.sleep(3)  # workers connected
                for part in args.parts:
                    report[part] = PARTS[part](cluster, args)
            finally:
                cluster.close()
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    report["torch_threads_per_trainer"] = 1
    report["load_average_end"] = os.getloadavg()
    publish(report, args.out)


if __name__ == "__main__":
    main()
