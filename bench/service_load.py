"""Latency of the embedded service under a fixed request rate, and dispatch latency.

Starts `otrt serve` (SQLite, embedded executor, auth on with a key from `otrt
keys create`) in a child process on a free port and reports its idle resident
memory. Then, from this process, over loopback:

- submits tiny jobs one after another and reports submit -> running latency
  from the server's own timestamps (``started_at - created_at``);
- starts a longer job, which trains during the load (one torch thread);
- with ``--submits N``, uploads N teachers (each its own weights) and times each
  ``POST /v1/jobs`` of a distill job from one of them while the job trains: the
  submission builds the teacher's architecture to check the weights fit, in a
  warm inspector child (``otrt_core.jobs.inspectors``);
- sends ``GET /v1/jobs/{id}`` and ``GET /v1/jobs`` at a fixed rate, open loop:
  request i is due at t0 + i / rate whatever earlier ones took, and its latency
  counts from that due time (a late sender does not hide a slow server). It
  reports median and p99 latency of each route, errors, and the rate achieved.

Prints JSON (and writes it with --out). Goals to report: status p99 < 20 ms at
200 requests/s while a job trains, dispatch < 0.5 s, idle RSS < 200 MB.
Timings, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import cpu_seconds, publish
from otrt_core.settings import Settings
from tests.utils.processes import start_server

TRAINING_JOB = {
    "mode": "supervised",
    "student": {"architecture": "cnn"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 500, "batch_size": 16},
}
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
    base_url: str, headers: dict[str, str], paths: list[str], rate: float, seconds: float
) -> tuple[dict[str, list[float]], list[int], float]:
    """Open-loop load: request i is due at t0 + i/rate, cycling through ``paths``, sent by 8
    threads. Returns latencies from each request's due time, error statuses, and the
    rate achieved (requests done / seconds from the first due time to the last answer)."""
    total = int(rate * seconds)
    latencies: dict[str, list[float]] = {path: [] for path in paths}
    errors: list[int] = []
    lock, start = threading.Lock(), time.perf_counter() + 0.2
    counter = iter(range(total))
    last_answer = [start]

    def sender() -> None:
        # A loaded 2-core machine answers late, not never: 30 s, not httpx's 5 s default.
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
            for index in counter:
                due = start + index / rate
                if (delay := due - time.perf_counter()) > 0:
                    time.sleep(delay)
                path = paths[index % len(paths)]
                status = client.get(path).status_code
                done = time.perf_counter()
                with lock:
                    latencies[path].append(done - due)
                    last_answer[0] = max(last_answer[0], done)
                    if status != 200:
                        errors.append(status)

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, total / (last_answer[0] - start)


def timed_submits(client: httpx.Client, scratch: Path, count: int) -> list[float]:
    """Seconds of each ``POST /v1/jobs`` of a distill job whose teacher is a newly uploaded
    file (its own random weights: nothing cached from an earlier check)."""
    import torch
    from safetensors.torch import save_file

    from otrt_core.models import build_model

    seconds = []
    for n in range(count):
        torch.manual_seed(n)
        path = scratch / f"teacher{n}.safetensors"
        model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10)
        save_file(model.state_dict(), path)
        headers = {"X-Filename": path.name}
        uploaded = client.post(
            "/v1/files?purpose=teacher", content=path.read_bytes(), headers=headers
        )
        body = {
            "mode": "distill",
            "teacher": {"architecture": "cnn", "checkpoint": uploaded.json()["id"]},
            "student": {"architecture": "cnn_small"},
            "dataset": {"name": "digits"},
            "training": {"epochs": 1},
        }
        started = time.perf_counter()
        answer = client.post("/v1/jobs", json=body)
        seconds.append(time.perf_counter() - started)
        assert answer.status_code == 201, answer.text
        client.post(f"/v1/jobs/{answer.json()['id']}/cancel")
    return seconds


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def api_key(data_dir: Path) -> dict[str, str]:
    """A new key on the server's database, with a rate limit the load never reaches."""
    env = os.environ | {"OTRT_DATA_DIR": str(data_dir)}

    def otrt(*args: str) -> str:
        command = [sys.executable, "-m", "otrt", *args]
        return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout

    plain = otrt("keys", "create", "--name", "bench").strip()
    key_id = json.loads(otrt("keys", "list", "--json").splitlines()[-1])["id"]
    otrt("keys", "set-quota", key_id, "--rate-limit", "1000000")
    return {"Authorization": f"Bearer {plain}"}


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
    parser.add_argument("--auth", choices=["on", "off"], default="on")
    parser.add_argument(
        "--train",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a job trains during the load",
    )
    parser.add_argument(
        "--submits", type=int, default=0, help="distill jobs submitted with new teachers"
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    report: dict = {"benchmark": "service_load", "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data_dir:
        headers = api_key(Path(data_dir)) if args.auth == "on" else {}
        server, client = start_server(
            Path(data_dir), {"OTRT_HEARTBEAT_SECONDS": "1", "OTRT_AUTH": args.auth}
        )
        client.headers.update(headers)
        base_url = str(client.base_url)
        try:
            time.sleep(1.0)  # settled: what an idle API process holds
            report["idle_rss_mb"] = rss_mb(server.pid)
            dispatch = []
            for _ in range(args.jobs):
                job_id = client.post("/v1/jobs", json=TINY_JOB).json()["id"]
                job = wait_for(client, job_id, {"succeeded", "failed"})
                started, created = (
                    datetime.fromisoformat(job[k]) for k in ("started_at", "created_at")
                )
                dispatch.append((started - created).total_seconds())
            training = (
                client.post("/v1/jobs", json=TRAINING_JOB).json()["id"] if args.train else None
            )
            while (
                training and client.get(f"/v1/jobs/{training}").json()["progress"]["steps"] is None
            ):
                time.sleep(0.1)  # until its trainer has started training
            submits = timed_submits(client, Path(data_dir), args.submits)
            paths = [f"/v1/jobs/{job_id}", "/v1/jobs"]
            server_before, sender_before = cpu_seconds(server.pid), own_cpu_seconds()
            latencies, errors, achieved = fixed_rate(
                base_url, headers, paths, args.rate, args.seconds
            )
            requests = sum(len(values) for values in latencies.values())
            cpu_per_request = {
                "server": 1000 * (cpu_seconds(server.pid) - server_before) / requests,
                "load_generator": 1000 * (own_cpu_seconds() - sender_before) / requests,
            }
            trained = training and client.get(f"/v1/jobs/{training}").json()["progress"]
            if training:
                client.post(f"/v1/jobs/{training}/cancel")
        finally:
            server.terminate()
            server.wait(timeout=60)
    report |= {
        "auth": args.auth,
        "trainer_nice": Settings().trainer_nice,  # OTRT_TRAINER_NICE, as the server reads it
        "rate_per_second": args.rate,
        "achieved_rate_per_second": achieved,
        "seconds": args.seconds,
        "errors": errors,
        # CPU milliseconds per read (user + system): the server process (its threads, not
        # the trainer child) and this process, which sends the load on the same cores.
        "cpu_ms_per_request": cpu_per_request,
        "get_job": summary(latencies[paths[0]]),
        "list_jobs": summary(latencies[paths[1]]),
        "training_meanwhile": {"job": TRAINING_JOB["student"], "progress": trained},
        "dispatch_seconds": {"median": statistics.median(dispatch), "max": max(dispatch)},
        # The first may wait for the warm inspector's own start (its torch import).
        "submit_with_new_teacher": summary(submits) if submits else None,
        "submit_with_new_teacher_after_the_first": summary(submits[1:]) if submits else None,
        "every_submit_seconds": submits,
        "goals": {"status_p99_ms": 20.0, "dispatch_seconds": 0.5, "idle_rss_mb": 200.0},
        "load_average_end": os.getloadavg(),
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
