"""Throughput and recovery of the distributed shape: real PostgreSQL, Redis, API, Celery workers.

Prints JSON (and writes it with --out):

- jobs/minute for N tiny jobs submitted at once, with 1 and then 2 workers;
- submit -> running (the server's ``started_at - created_at``): median and max (p99 from
  100 samples on)
  of those jobs, queueing behind busy workers included, and of jobs sent one
  at a time to an idle worker (the dispatch path alone: API, Redis, claim);
- recovery after a SIGKILL: seconds from killing the worker that runs a job to
  that job running again on the other worker (bounded by the lease, 3 s here).

``--storage s3`` runs the same on an S3 store (moto's server, started here unless
``--s3-endpoint`` names one): each worker has a data directory of its own, as
on separate hosts, so the recovered job resumes from the checkpoint in the
store; the report adds what pushing each epoch's checkpoint costs against the
epoch it follows (the executor pushes while the trainer goes on).

Uses the fault tests' harness (tests/service/cluster.py) against the PostgreSQL
and Redis given on the command line (a fresh schema, an emptied Redis database).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import secrets
import signal
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
from tests.utils.s3 import new_bucket, s3_server

TINY = {
    "mode": "supervised",
    "student": {"architecture": "mlp_small"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 1, "batch_size": 256},
}
MEDIUM = TINY | {"student": {"architecture": "cnn"}, "training": {"epochs": 6, "batch_size": 16}}


def seconds_between(job: dict, start: str, end: str) -> float:
    return (datetime.fromisoformat(job[end]) - datetime.fromisoformat(job[start])).total_seconds()


def spread(values: list[float]) -> dict[str, float | int]:
    """Median and maximum, and the p99 only where there are 100 samples for it: the "p99"
    of five samples would be their maximum by another name."""
    ordered = sorted(values)
    summary = {"samples": len(ordered), "median": statistics.median(ordered), "max": ordered[-1]}
    if len(ordered) >= 100:
        summary["p99"] = ordered[int(0.99 * len(ordered))]
    return summary


def throughput(cluster: Cluster, jobs: int) -> dict:
    submitted = time.monotonic()
    job_ids = [cluster.submit(TINY) for _ in range(jobs)]
    finished = [cluster.wait(job_id, {"succeeded", "failed"}, timeout=600) for job_id in job_ids]
    elapsed = time.monotonic() - submitted
    dispatch = [seconds_between(job, "created_at", "started_at") for job in finished]
    return {
        "jobs": jobs,
        "succeeded": sum(job["status"] == "succeeded" for job in finished),
        "jobs_per_minute": 60 * jobs / elapsed,
        "submit_to_running_seconds": spread(dispatch),
    }


def idle_dispatch(cluster: Cluster, jobs: int = 5) -> dict:
    latencies = []
    for _ in range(jobs):
        job = cluster.wait(cluster.submit(TINY), {"succeeded", "failed"}, timeout=120)
        latencies.append(seconds_between(job, "created_at", "started_at"))
    return spread(latencies)


def recovery(cluster: Cluster) -> tuple[float, str]:
    """Seconds from the SIGKILL to the job running again; and the job's id."""
    job_id = cluster.submit(MEDIUM)
    running = cluster.wait_event(job_id, "running")
    cluster.wait_event(job_id, "epoch")
    killed = time.time()
    os.kill(int(running["data"]["worker"].rsplit("-", 1)[1]), signal.SIGKILL)
    again = cluster.wait_event(job_id, "running", count=2, timeout=120)
    cluster.wait(job_id, {"succeeded", "failed"}, timeout=300)
    return datetime.fromisoformat(again["at"]).timestamp() - killed, job_id


def checkpoint_push(cluster: Cluster, job_id: str, workers: int) -> dict:
    """The workers' logged checkpoint pushes against the job's epoch times."""
    pushes = [
        float(seconds)
        for index in range(workers)
        for seconds in re.findall(
            r"checkpoint pushed in ([0-9.]+) s", (cluster.root / f"w{index}.log").read_text()
        )
    ]
    records = cluster.client.get(f"/v1/jobs/{job_id}/metrics").json()
    epochs = [b["seconds"] - a["seconds"] for a, b in itertools.pairwise(records)]
    return {
        "pushes": len(pushes),
        "push_seconds": spread(pushes),
        "epoch_seconds": spread(epochs),
        "share_of_an_epoch": statistics.median(pushes) / statistics.median(epochs),
    }


@contextlib.contextmanager
def storage_env(args: argparse.Namespace, root: Path):
    """The cluster's settings for ``--storage``: nothing for the local disk, else a
    fresh bucket on the S3 endpoint (moto's server, started here, if none is given)."""
    if args.storage == "local":
        yield {}
        return
    with contextlib.ExitStack() as stack:
        endpoint = args.s3_endpoint or stack.enter_context(s3_server(root / "moto.log")).url
        bucket = new_bucket(endpoint)
        yield {"OTRT_STORAGE_URL": f"s3://{bucket}/otrt", "OTRT_S3_ENDPOINT_URL": endpoint}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--storage", choices=["local", "s3"], default="local")
    parser.add_argument("--s3-endpoint", help="an S3 API's URL (default: moto's server, here)")
    parser.add_argument("--out")
    args = parser.parse_args()
    schema = f"otrt_bench_{secrets.token_hex(4)}"
    admin = make_engine(args.database_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    report: dict = {
        "benchmark": "queue_load",
        "storage": args.storage,
        "load_average_start": os.getloadavg(),
    }
    try:
        for workers in (1, 2):
            redis.Redis.from_url(args.redis_url).flushdb()
            with (
                tempfile.TemporaryDirectory() as root,
                storage_env(args, Path(root)) as env,
            ):
                url = f"{args.database_url}?options=-csearch_path%3D{schema}"
                cluster = Cluster(Path(root), url, args.redis_url, env=env)
                try:
                    for index in range(workers):
                        host = {"OTRT_DATA_DIR": f"{root}/host{index}"} if env else None
                        cluster.start_worker(f"w{index}", env=host)
                    cluster.start_api()
                    time.sleep(3)  # workers connected
                    report[f"workers_{workers}"] = throughput(cluster, args.jobs)
                    if workers == 1:
                        report["idle_dispatch_seconds"] = idle_dispatch(cluster)
                    if workers == 2:
                        seconds, job_id = recovery(cluster)
                        report["recovery_after_sigkill_seconds"] = seconds
                        if env:
                            report["checkpoint_push"] = checkpoint_push(cluster, job_id, workers)
                finally:
                    cluster.close()
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    report["speedup_2_vs_1"] = (
        report["workers_2"]["jobs_per_minute"] / report["workers_1"]["jobs_per_minute"]
    )
    report["lease_seconds"] = 3
    report["load_average_end"] = os.getloadavg()
    publish(report, args.out)


if __name__ == "__main__":
    main()
