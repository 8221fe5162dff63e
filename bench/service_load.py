"""Latency of the embedded service under a fixed request rate, and dispatch latency.

Starts `otrt serve` (SQLite, embedded executor) in a child process on a free
port, then from this process, over loopback:

- sends ``GET /v1/jobs/{id}`` and ``GET /v1/jobs`` at a fixed rate (open loop:
  request i is sent at t0 + i / rate, whatever earlier ones took) and reports
  median and p99 latency of each;
- submits tiny jobs one after another and reports submit -> running latency
  from the server's own timestamps (``started_at - created_at``).

Prints JSON (and writes it with --out). Goals to report: status p99 < 20 ms at
200 requests/s, dispatch < 0.5 s. Timings, not assertions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import publish
from tests.utils.processes import start_server

TINY_JOB = {
    "mode": "supervised",
    "student": {"architecture": "mlp_small"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 1, "batch_size": 256},
}


def wait_for(client: httpx.Client, job_id: str, statuses: set[str]) -> dict:
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in statuses:
        time.sleep(0.05)
    return job


def fixed_rate(
    base_url: str, paths: list[str], rate: float, seconds: float
) -> dict[str, list[float]]:
    """Open-loop load: one request every 1/rate s, cycling through ``paths``, 8 sender threads."""
    total = int(rate * seconds)
    latencies: dict[str, list[float]] = {path: [] for path in paths}
    lock, start = threading.Lock(), time.perf_counter() + 0.2
    counter = iter(range(total))

    def sender() -> None:
        with httpx.Client(base_url=base_url) as client:
            for index in counter:
                delay = start + index / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                path = paths[index % len(paths)]
                sent = time.perf_counter()
                client.get(path).raise_for_status()
                with lock:
                    latencies[path].append(time.perf_counter() - sent)

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "median_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=5, help="tiny jobs for dispatch latency")
    parser.add_argument("--out")
    args = parser.parse_args()
    report: dict = {"benchmark": "service_load", "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as data_dir:
        server, client = start_server(Path(data_dir), {"OTRT_HEARTBEAT_SECONDS": "1"})
        base_url = str(client.base_url)
        try:
            dispatch = []
            for _ in range(args.jobs):
                job_id = client.post("/v1/jobs", json=TINY_JOB).json()["id"]
                job = wait_for(client, job_id, {"succeeded", "failed"})
                started, created = (
                    datetime.fromisoformat(job[k]) for k in ("started_at", "created_at")
                )
                dispatch.append((started - created).total_seconds())
            paths = [f"/v1/jobs/{job_id}", "/v1/jobs"]
            latencies = fixed_rate(base_url, paths, args.rate, args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=60)
    report |= {
        "rate_per_second": args.rate,
        "seconds": args.seconds,
        "get_job": summary(latencies[paths[0]]),
        "list_jobs": summary(latencies[paths[1]]),
        "dispatch_seconds": {"median": statistics.median(dispatch), "max": max(dispatch)},
        "goals": {"status_p99_ms": 20.0, "dispatch_seconds": 0.5},
        "load_average_end": os.getloadavg(),
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
