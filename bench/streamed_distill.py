"""A distill epoch on a registered dataset, streamed against held in memory.

One snapshot of ``--images`` small JPEGs (bench/streamed_memory.py's images and
conversion, cached under ``--cache``/N outside the repository) is trained on by the
real trainer (``python -m otrt train SPEC --dataset-shards SNAPSHOT``, one torch
thread, ``OTRT_LOADER_WORKERS`` loader processes) in two ways that differ only in
``OTRT_MAX_DECODED_BYTES``:

- ``memory``: the default limit; the snapshot is decoded into one array and batches
  are gathered on the device;
- ``streamed``: a limit of 1 byte; batches come from the DataLoader's workers reading
  the shards.

Four runs per round, interleaved: supervised and distill (teacher ``cnn`` trained once
on the same snapshot, in memory; ``training.teacher_cache: auto``), each memory and
streamed. A run's epoch time is the median of its epochs after the first (the first
holds the set-up and the teacher cache's one teacher pass, reported apart), from
its ``metrics.json`` history; the medians over ``--rounds`` are reported, with the
ratio streamed / memory of each mode, and the teacher cache each run said it used
in its ``start`` event::

    python bench/streamed_distill.py --images 10000 --rounds 2 \\
        --out bench/out/streamed_distill.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import publish
from bench.streamed_memory import make_images, make_snapshot
from otrt_core.protocol import METRICS

STREAMED_LIMIT = {"memory": None, "streamed": "1"}  # OTRT_MAX_DECODED_BYTES


def spec(mode: str, epochs: int, student: str = "cnn_small") -> dict:
    body = {
        "mode": mode,
        "student": {"architecture": student},
        "dataset": {"name": "ds_bench", "image_size": 32},
        "training": {"epochs": epochs, "batch_size": 64, "teacher_cache": "auto"},
    }
    if mode == "distill":
        body["teacher"] = {"architecture": "cnn", "checkpoint": "teacher"}
    return body


def run(body: dict, snapshot: Path, work: Path, path: str, args, teacher=None) -> dict:
    """One ``otrt train`` run on ``snapshot`` read the ``path`` way, its output under
    ``work``/out: its epoch times and the teacher cache its start event named."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(body))
    env = os.environ | {
        "OTRT_TORCH_THREADS": "1",
        "OTRT_LOADER_WORKERS": str(args.workers),
        "OTRT_DATA_DIR": str(work / "data"),
    }
    env.pop("OTRT_MAX_DECODED_BYTES", None)
    if STREAMED_LIMIT[path]:
        env["OTRT_MAX_DECODED_BYTES"] = STREAMED_LIMIT[path]
    command = [sys.executable, "-m", "otrt", "train", str(work / "spec.json")]
    command += ["--out", str(work / "out"), "--dataset-shards", str(snapshot), "--device", "cpu"]
    if teacher is not None:
        command += ["--teacher-file", str(teacher)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1500)
    if done.returncode != 0:
        raise SystemExit(f"otrt train exited {done.returncode}:\n{done.stderr[-3000:]}")
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    start = next(e for e in events if e.get("event") == "start")
    history = json.loads((work / "out" / METRICS).read_text())["history"]
    seconds = [record["seconds"] for record in history]
    later = [b - a for a, b in itertools.pairwise(seconds)]
    return {
        "first_epoch_with_setup_seconds": seconds[0],
        "epoch_seconds": statistics.median(later) if later else None,
        "teacher_cache": start.get("teacher_cache"),
        "teacher_cache_off": start.get("teacher_cache_off"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="OTRT_LOADER_WORKERS")
    parser.add_argument("--cache", default="/tmp/otrt-bench-images")
    parser.add_argument("--out")
    args = parser.parse_args()
    root = Path(args.cache) / str(args.images)
    generation = make_images(root / "images", args.images)
    conversion = make_snapshot(root / "images", root / "snapshot")
    snapshot = root / "snapshot"
    report: dict = {
        "benchmark": "streamed_distill",
        "images": args.images,
        "epochs": args.epochs,
        "loader_workers": args.workers,
        "generation_seconds": generation,  # None: the cache had them
        "conversion_seconds": conversion,
        "load_average_start": os.getloadavg(),
    }
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="otrt-streamed-distill-") as scratch:
        scratch = Path(scratch)
        run(spec("supervised", 1, "cnn"), snapshot, scratch / "teacher", "memory", args)
        teacher_weights = scratch / "teacher" / "out" / "student.safetensors"
        for _ in range(args.rounds):
            for mode, path in itertools.product(("supervised", "distill"), STREAMED_LIMIT):
                weights = teacher_weights if mode == "distill" else None
                work = Path(tempfile.mkdtemp(dir=scratch))
                result = run(spec(mode, args.epochs), snapshot, work, path, args, weights)
                runs.setdefault(f"{mode}_{path}", []).append(result)
    epoch = {name: statistics.median(r["epoch_seconds"] for r in rs) for name, rs in runs.items()}
    report |= {
        "epoch_seconds": epoch,
        "first_epoch_with_setup_seconds": {
            name: statistics.median(r["first_epoch_with_setup_seconds"] for r in rs)
            for name, rs in runs.items()
        },
        "teacher_cache": {name: rs[0]["teacher_cache"] for name, rs in runs.items()},
        "teacher_cache_off": {name: rs[0]["teacher_cache_off"] for name, rs in runs.items()},
        "distill_streamed_over_memory": epoch["distill_streamed"] / epoch["distill_memory"],
        "supervised_streamed_over_memory": (
            epoch["supervised_streamed"] / epoch["supervised_memory"]
        ),
        "every_run": runs,
        "load_average_end": os.getloadavg(),
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
