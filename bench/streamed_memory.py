"""The trainer's process tree memory (PSS, not page cache) and its time to the first step,
at N images on the streamed path.

For each ``--images`` N: N small JPEGs (64-96 px a side, smooth colour fields, 10
classes) are generated once into ``--cache``/N (default /tmp/otrt-bench-images/N,
outside the repository; reused when present, made by a pool of 2 processes) and
converted once to a snapshot there (``otrt_core.data.convert``, as a registered dataset
is). Then the real trainer runs on it as a child process::

    OTRT_MAX_DECODED_BYTES=1 OTRT_TORCH_THREADS=1 OTRT_LOADER_WORKERS=2 \\
        python -m otrt train SPEC --out DIR --dataset-shards SNAPSHOT --device cpu

(``OTRT_MAX_DECODED_BYTES=1`` forces the streamed path; the spec: supervised,
cnn_small, 32 px, one epoch of batches of 64). Its stdout events give the seconds
from the process's start to its ``start`` event (``seconds_to_start_event``: imports,
the snapshot opened, the loader built) and to its first ``step`` event
(``seconds_to_first_step_line``). The trainer prints a step line only every
``steps_per_epoch // 4`` batches (trainer.py's STEP_LINES_PER_EPOCH), so the first step
line comes after the batch the JSON names (``first_step``: about 1/4 of an epoch, so
about 39 steps at 10,000 images and 5 times as many at 50,000); its time grows with N
for that reason alone. ``estimated_seconds_to_step_1`` takes those steps off, at the
rate between the first two step lines (``seconds_per_step``; None when the run
stopped before the second). Every 0.5 s (``--interval``) the summed PSS (``Pss:`` of
/proc/PID/smaps_rollup: shared pages split among their users, page cache left out
except pages a process maps) of the trainer and all its descendants (its loader
workers) is sampled, and of the trainer alone; the peaks are reported in MiB, with
the tree's ``Pss_Anon`` (without mapped files and libraries). The trainer is stopped
(SIGTERM, then SIGKILL after 30 s) at the first step line ``--steps`` or more steps
after the first one (in practice the second line), ``--seconds`` after its first step
line, at the end of its epoch, or when it exits, whichever comes first.

Sizes are interleaved round by round; the median of ``--rounds`` is reported, with
the ratios of the largest size to the smallest::

    python bench/streamed_memory.py --images 10000 50000 --rounds 2 \\
        --out bench/out/streamed_memory.json

The trainer shares the machine's cores with whatever else runs (the load average is
reported); the sampling misses peaks shorter than its interval.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from bench.report import publish
from otrt_core.data.convert import Request, convert

CLASSES = 10
CHUNK = 500  # images per task of the generating pool
COMPLETE = ".complete"  # written once a cache directory's images (or snapshot) are whole
MIB = 1024 * 1024


# --- the images and their snapshot, made once per size --------------------------------


def _write_chunk(task: tuple[str, int, int]) -> None:
    root, start, stop = task
    rng = np.random.default_rng(start)  # the same images whatever the pool's order
    for n in range(start, stop):
        folder = Path(root) / "train" / f"class_{n % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        height, width = (int(v) for v in rng.integers(64, 97, size=2))
        small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        image.save(folder / f"{n:07d}.jpg", quality=90)


def make_images(root: Path, count: int, processes: int = 2) -> float | None:
    """``root/train/class_k/n.jpg``, ``count`` of them; the seconds it took, None when
    they were already there."""
    if (root / COMPLETE).exists():
        return None
    started = time.perf_counter()
    tasks = [(str(root), start, min(start + CHUNK, count)) for start in range(0, count, CHUNK)]
    with Pool(processes) as pool:
        pool.map(_write_chunk, tasks)
    (root / COMPLETE).write_text(str(count))
    return time.perf_counter() - started


def make_snapshot(root: Path, snapshot: Path) -> float | None:
    """``root``'s images converted to ``snapshot``; the seconds, None when already there."""
    if (snapshot / COMPLETE).exists():
        return None
    started = time.perf_counter()
    request = Request(source=root.as_uri() + "/", allowed=[root.as_uri() + "/"])
    convert(request, snapshot, lambda event: None)  # resumes a conversion cut short
    (snapshot / COMPLETE).write_text("")
    return time.perf_counter() - started


# --- the memory of a process tree -----------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
            except OSError:
                continue
            todo.extend(int(child) for child in text.split())
    return found


def rollup(pid: int) -> dict[str, int]:
    """``Pss`` and ``Pss_Anon`` of ``pid`` in bytes; zeros once it is gone."""
    values = {"Pss": 0, "Pss_Anon": 0}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in values:
            values[name] = int(rest.split()[0]) * 1024
    return values


def sample(pid: int) -> dict[str, int]:
    """The PSS of ``pid``'s tree and of ``pid`` alone, in bytes, and its process count."""
    pids = descendants(pid)
    rollups = {p: rollup(p) for p in pids}
    return {
        "tree_pss": sum(r["Pss"] for r in rollups.values()),
        "tree_pss_anon": sum(r["Pss_Anon"] for r in rollups.values()),
        "trainer_pss": rollups[pid]["Pss"],
        "processes": sum(1 for r in rollups.values() if r["Pss"] > 0),
    }


# --- one run of the trainer -----------------------------------------------------------

SPEC = {
    "mode": "supervised",
    "student": {"architecture": "cnn_small"},
    "dataset": {"name": "ds_bench", "image_size": 32},
    "training": {"epochs": 1, "batch_size": 64},
}


class Events:
    """The trainer's stdout events with the monotonic time each line arrived."""

    def __init__(self, stream) -> None:
        self.lines: list[tuple[float, dict]] = []
        self.other: list[str] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            now = time.monotonic()
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            with self.lock:
                if isinstance(event, dict) and "event" in event:
                    self.lines.append((now, event))
                else:
                    self.other.append(line.rstrip())

    def first(self, kind: str) -> tuple[float, dict] | None:
        with self.lock:
            return next(((t, e) for t, e in self.lines if e["event"] == kind), None)

    def every(self, kind: str) -> list[tuple[float, dict]]:
        with self.lock:
            return [(t, e) for t, e in self.lines if e["event"] == kind]

    def last(self, kind: str) -> tuple[float, dict] | None:
        with self.lock:
            return next(((t, e) for t, e in reversed(self.lines) if e["event"] == kind), None)


def run_trainer(snapshot: Path, scratch: Path, args: argparse.Namespace) -> dict:
    """One trainer run on ``snapshot``: its timings and peak memory."""
    spec = scratch / "spec.json"
    spec.write_text(json.dumps(SPEC))
    env = os.environ | {
        "OTRT_MAX_DECODED_BYTES": "1",
        "OTRT_TORCH_THREADS": "1",
        "OTRT_LOADER_WORKERS": str(args.workers),
        "OTRT_DATA_DIR": str(scratch / "data"),  # its shard cache, out of the repository
    }
    command = [sys.executable, "-m", "otrt", "train", str(spec), "--out", str(scratch / "out")]
    command += ["--dataset-shards", str(snapshot), "--device", "cpu"]
    with open(scratch / "stderr.log", "wb") as stderr:
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=scratch,
            start_new_session=True,  # its loader workers can be killed with it
        )
    events = Events(process.stdout)
    peaks = {"tree_pss": 0, "tree_pss_anon": 0, "trainer_pss": 0, "processes": 0}
    at_first_step: dict[str, int] | None = None
    samples, stopped_because = 0, "exited"
    while process.poll() is None:
        now = sample(process.pid)
        samples += 1
        peaks = {name: max(peaks[name], now[name]) for name in peaks}
        first, last = events.first("step"), events.last("step")
        if first is not None and at_first_step is None:
            at_first_step = now
        if first is not None and last[1]["step"] >= first[1]["step"] + args.steps:
            stopped_because = f"{args.steps} steps after the first step line"
            break
        if first is not None and time.monotonic() - first[0] >= args.seconds:
            stopped_because = f"{args.seconds:g} s after the first step line"
            break
        if events.first("epoch") is not None:
            stopped_because = "its epoch ended"
            break
        if first is None and time.monotonic() - started > args.timeout:
            stopped_because = f"no step line within {args.timeout:g} s"
            break
        time.sleep(args.interval)
    stop(process)
    events.thread.join(timeout=5)
    start, first = events.first("start"), events.first("step")
    if start is None or first is None:
        tail = (scratch / "stderr.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the trainer gave no step line ({stopped_because}):\n{tail}")
    steps = start[1]["steps"] // start[1]["epochs"]
    lines = events.every("step")
    per_step = None  # from the first two step lines, when the run got that far
    if len(lines) >= 2 and lines[1][1]["step"] > first[1]["step"]:
        per_step = (lines[1][0] - first[0]) / (lines[1][1]["step"] - first[1]["step"])
    return {
        "seconds_to_start_event": start[0] - started,
        "seconds_to_first_step_line": first[0] - started,
        "first_step": first[1]["step"],
        "seconds_per_step": per_step,
        # The first step line less the steps after the first at the rate between the
        # first two lines: the time to one step, comparable across sizes (roughly).
        "estimated_seconds_to_step_1": None
        if per_step is None
        else first[0] - started - (first[1]["step"] - 1) * per_step,
        "trainer_clock_at_first_step_line": first[1]["seconds"],
        "steps_per_epoch": steps,
        "data_path": start[1].get("data_path"),
        "last_step_seen": events.last("step")[1]["step"],
        "peak_tree_pss_mib": peaks["tree_pss"] / MIB,
        "peak_tree_pss_anon_mib": peaks["tree_pss_anon"] / MIB,
        "peak_trainer_pss_mib": peaks["trainer_pss"] / MIB,
        "tree_pss_at_first_step_line_mib": (at_first_step or peaks)["tree_pss"] / MIB,
        "peak_processes": peaks["processes"],
        "samples": samples,
        "stopped_because": stopped_because,
        "seconds_run": time.monotonic() - started,
        "exit_code": process.returncode,
    }


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the trainer (it checkpoints and exits), SIGKILL to its session after 30 s
    and to whatever of it is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # its own session: this run's processes
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# --- the benchmark --------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="OTRT_LOADER_WORKERS")
    parser.add_argument("--steps", type=int, default=20, help="Stop this many steps ...")
    parser.add_argument("--seconds", type=float, default=120, help="... or seconds after it.")
    parser.add_argument("--interval", type=float, default=0.5, help="Seconds between samples.")
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds to a step line.")
    parser.add_argument("--cache", default="/tmp/otrt-bench-images")
    parser.add_argument("--out", default="bench/out/streamed_memory.json")
    args = parser.parse_args()
    sizes = sorted(set(args.images))

    prepared = {}
    for count in sizes:
        root = Path(args.cache) / str(count)
        generation = make_images(root / "images", count)
        conversion = make_snapshot(root / "images", root / "snapshot")
        shards = [p for p in (root / "snapshot").iterdir() if p.suffix == ".tar"]
        prepared[count] = {
            "directory": str(root),
            "generation_seconds": generation,  # None: reused from an earlier run
            "conversion_seconds": conversion,
            "snapshot_bytes": sum(p.stat().st_size for p in shards),
            "shards": len(shards),
        }

    runs: dict[int, list[dict]] = {count: [] for count in sizes}
    loads = []
    for _ in range(args.rounds):
        for count in sizes:
            with tempfile.TemporaryDirectory(prefix="otrt-streamed-") as scratch:
                snapshot = Path(args.cache) / str(count) / "snapshot"
                runs[count].append(run_trainer(snapshot, Path(scratch), args))
            loads.append(os.getloadavg()[0])

    measures = [
        "seconds_to_start_event",
        "seconds_to_first_step_line",
        "estimated_seconds_to_step_1",
        "seconds_per_step",
        "peak_tree_pss_mib",
        "peak_tree_pss_anon_mib",
        "peak_trainer_pss_mib",
    ]
    medians = {
        str(count): {m: median(r[m] for r in runs[count]) for m in measures} for count in sizes
    }
    small, large = medians[str(sizes[0])], medians[str(sizes[-1])]
    report = {
        "images": sizes,
        "spec": SPEC,
        "loader_workers": args.workers,
        "torch_threads": 1,
        "cores": len(os.sched_getaffinity(0)),
        "rounds": args.rounds,
        "sample_interval_seconds": args.interval,
        "prepared": {str(count): prepared[count] for count in sizes},
        "median": medians,
        f"ratio_{sizes[-1]}_to_{sizes[0]}": {
            m: large[m] / small[m] if large[m] and small[m] else None for m in measures
        },
        "every_run": {str(count): runs[count] for count in sizes},
        "load_average": {"min": min(loads), "max": max(loads)},
    }
    publish(report, args.out)


def median(values) -> float | None:
    """The median of the values that are not None; None when there are none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


if __name__ == "__main__":
    main()
