"""One process against two (training.gpus: 2) on the same global batches, with the OT term.

With several ranks the OT term is computed on each rank's share of the batch
(features are not gathered across ranks), so its transport problems are half
the size: this measures what that does to the distance and to the student.
A teacher (``mlp`` on scikit-learn's digits) is trained first; then, for each
seed, the same OT distillation (``mlp_small``, penultimate layers) runs with 1
and 2 ranks, one after the other, through the runner the service uses (2
ranks: torchrun, gloo on the CPU; NCCL on 2 GPUs with ``--device cuda``).
Prints JSON and writes it with --out.

    OTRT_TORCH_THREADS=1 python bench/ddp.py --out bench/out/ddp.json   # about 3 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import publish
from otrt_core import protocol
from worker.runner import END_OF_OUTPUT, TrainerInputs, TrainerProcess

TEACHER = {
    "mode": "supervised",
    "student": {"architecture": "mlp"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 20, "batch_size": 64},
}


def distill(teacher: Path, seed: int, gpus: int, batch_size: int) -> dict:
    return {
        "mode": "distill",
        "teacher": {"architecture": "mlp", "checkpoint": str(teacher)},
        "student": {"architecture": "mlp_small"},
        "dataset": {"name": "digits"},
        "regularizer": {
            "kind": "ot",
            "weight": 1.0,
            "layers": [{"teacher": "penultimate", "student": "penultimate"}],
        },
        "training": {"epochs": 20, "batch_size": batch_size, "seed": seed, "gpus": gpus},
    }


def run(spec: dict, out: Path, device: str) -> dict:
    out.mkdir(parents=True)
    (out / "job.json").write_text(json.dumps(spec))
    started = time.perf_counter()
    trainer = TrainerProcess(
        TrainerInputs(out / "job.json"),
        out,
        resume=False,
        device=device,
        env={},
        processes=spec["training"].get("gpus", 1),
    )
    epochs = []
    while (event := trainer.next_event(timeout=600)) is not END_OF_OUTPUT:
        if event and event["event"] == "epoch":
            epochs.append(event)
    code = trainer.wait()
    if code != protocol.EXIT_OK:
        raise SystemExit(f"the trainer exited {code}: {trainer.stderr_tail()}")
    metrics = json.loads((out / protocol.METRICS).read_text())
    return {
        "test_accuracy": metrics["test_accuracy"],
        "last_ot_distance": epochs[-1]["ot_distance"],
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    report = {"benchmark": "ddp", "config": vars(args), "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        run(TEACHER, root / "teacher", args.device)
        teacher = root / "teacher" / protocol.STUDENT_WEIGHTS
        rows = []
        for seed in range(args.seeds):  # 1 and 2 ranks interleaved, seed by seed
            row = {"seed": seed}
            for gpus in (1, 2):
                spec = distill(teacher, seed, gpus, args.batch_size)
                row[f"ranks_{gpus}"] = run(spec, root / f"s{seed}-r{gpus}", args.device)
            rows.append(row)
    report["rows"] = rows
    for key in ("test_accuracy", "last_ot_distance"):
        diffs = [row["ranks_2"][key] - row["ranks_1"][key] for row in rows]
        report[f"{key}_2_minus_1"] = {
            "mean": statistics.fmean(diffs),
            "per_seed": diffs,
        }
    report["load_average_end"] = os.getloadavg()
    publish(report, args.out)


if __name__ == "__main__":
    main()
