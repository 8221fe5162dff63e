"""OT, FitNets and AT at equal tuning budget: one sweep each, on the service itself.

bench/reproduce.py tunes OT's weight, normalization and layer but only the
baselines' weight, so its "tuned OT" row had the larger search. Here each
method gets the same search through the service's sweeps (docs/sweeps.md): TPE
over its weight (log-uniform around its usual value), its layer, and for OT its
normalization (the one option FitNets and AT do not have), with the same number
of points, the same seeds and ASHA off. Each sweep also trains the student
alone and with KD on the same seeds (``compare``), so every row carries the
paired 95% interval of its gain over both.

The setting is reproduce.py's "distill, Fashion-MNIST (500/class)" with its
hand-tuned recipe (8 epochs: the service's sized defaults train for 2000
steps, hours for this many jobs on 2 cores) and its teacher (every training
image, 4 epochs), unless ``--teacher-subset`` and ``--teacher-epochs`` say
otherwise: a teacher no better than the student alone has nothing to transfer. It runs on an
embedded service in this process (``otrt serve``'s executor, two jobs at a
time, one thread each). Prints JSON and writes JSON and a markdown table
to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reproduce import experiments
from otrt.wiring import build_embedded
from otrt_core.jobs.sweep_spec import SweepSpec
from otrt_core.settings import Settings
from otrt_core.spec import JobSpec

OWNER = "bench"
SETTING = "distill, Fashion-MNIST (500/class)"


def spaces(quick: bool) -> dict[str, dict[str, Any]]:
    """Each method's space: its weight around its usual value, two layers, and for OT
    its normalization. AT compares conv maps, so its layers are the last two stages."""
    ot_layers = [[{"teacher": s, "student": s}] for s in ("penultimate", "stage2")]
    at_layers = [[{"teacher": s, "student": s}] for s in ("stage3", "stage2")]
    result = {
        "ot": {
            "regularizer.weight": {"log_uniform": [0.01, 100.0]},
            "regularizer.normalize": ["none", "center", "standardize"],
            "regularizer.layers": ot_layers,
        },
        "fitnet": {
            "regularizer.weight": {"log_uniform": [1.0, 10_000.0]},
            "regularizer.layers": ot_layers,
        },
        "at": {
            "regularizer.weight": {"log_uniform": [10.0, 100_000.0]},
            "regularizer.layers": at_layers,
        },
    }
    if quick:
        for space in result.values():
            space["regularizer.layers"] = space["regularizer.layers"][:1]
    return result


def run_service_job(service, body: dict[str, Any]) -> Any:
    job, _ = service.submit(OWNER, JobSpec.model_validate(body))
    while (job := service.job(OWNER, job.id)).status not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
    assert job.status == "succeeded", job.error
    return job


def run_sweep(service, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    sweep = service.submit_sweep(
        OWNER, SweepSpec.model_validate(body), key_id=None, max_queued=None
    )
    while (sweep := service.sweep(OWNER, sweep["id"]))["status"] in ("running", "cancelling"):
        time.sleep(2)
    return sweep, time.perf_counter() - started


def row(method: str, sweep: dict[str, Any], wall: float) -> dict[str, Any]:
    best = sweep["best"]
    tests = [
        t["test_accuracy"]
        for t in sweep["trials"]
        if t["role"] == "point" and t["point"] == best["point"]
    ]
    return {
        "method": method,
        "status": sweep["status"],
        "points": sweep["points"]["planned"],
        "best_params": best["params"],
        "best_val_accuracy": best["metric"],
        "best_test_accuracy_by_seed": tests,
        "compare": sweep["compare"],
        "baselines_test_accuracy": {
            role: [t["test_accuracy"] for t in sweep["trials"] if t["role"] == role]
            for role in ("scratch", "kd")
        },
        "wall_seconds": wall,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Setting: {report['setting']}; {report['trials']} points per method (TPE), "
        f"{report['seeds']} seeds each; best point chosen on validation, test accuracy "
        "and paired 95% intervals over the seeds.",
        f"Teacher: cnn on {_images(report['teacher']['dataset'])}, "
        f"{report['teacher']['training']['epochs']} epochs, "
        f"test accuracy {100 * report['teacher_test_accuracy']:.1f}%.",
        "",
        "| method | best point | test accuracy (mean) | vs scratch | vs KD | wall |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        tests = r["best_test_accuracy_by_seed"]
        values = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in r["best_params"].items())
        gains = []
        for kind in ("scratch", "kd"):
            gain = r["compare"][kind]
            low, high = gain["ci95"] or (gain["gain"], gain["gain"])
            gains.append(f"{100 * gain['gain']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]")
        lines.append(
            f"| {r['method']} | {values} | {100 * sum(tests) / len(tests):.1f} | "
            f"{gains[0]} | {gains[1]} | {r['wall_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def _images(dataset: dict[str, Any]) -> str:
    subset = dataset.get("train_subset")
    return f"{subset} images per class" if subset else "every training image"


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(pair["student"] for pair in value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6, help="points per method")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=["ot", "fitnet", "at"])
    parser.add_argument(
        "--teacher-subset", type=int, help="teacher images per class (0: all; default: all)"
    )
    parser.add_argument("--teacher-epochs", type=int, help="default: reproduce.py's, 4")
    parser.add_argument("--quick", action="store_true", help="a tiny run for CI")
    parser.add_argument("--out", default="bench/out/equal_tuning")
    args = parser.parse_args()
    teachers, chosen = experiments(quick=False)
    experiment = next(e for e in chosen if e.name == SETTING)
    teacher_body = teachers[experiment.teacher]
    if args.teacher_subset is not None:
        subset = {"train_subset": args.teacher_subset or None}
        teacher_body = teacher_body | {"dataset": teacher_body["dataset"] | subset}
    if args.teacher_epochs is not None:
        epochs = {"epochs": args.teacher_epochs}
        teacher_body = teacher_body | {"training": teacher_body["training"] | epochs}
    if args.quick:  # 30 images per class, 1 epoch: seconds per job
        teacher_body = teacher_body | {
            "dataset": teacher_body["dataset"] | {"train_subset": 30},
            "training": teacher_body["training"] | {"epochs": 1},
        }
        experiment.dataset = experiment.dataset | {"train_subset": 30}
        experiment.hand_tuned = experiment.hand_tuned | {"epochs": 1}
    methods = spaces(args.quick)
    report: dict[str, Any] = {
        "benchmark": "equal_tuning",
        "setting": experiment.name,
        "trials": args.trials,
        "seeds": args.seeds,
        "recipe": experiment.hand_tuned,
        "teacher": teacher_body,
        "load_average_start": os.getloadavg(),
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), torch_threads=1)
        embedded = build_embedded(settings, concurrency=2)
        embedded.executor.start()
        service = embedded.app.state.service
        try:
            teacher = run_service_job(service, teacher_body)
            report["teacher_test_accuracy"] = teacher.metrics["test_accuracy"]
            base = {
                "mode": experiment.mode,
                "teacher": {"architecture": "cnn", "checkpoint": teacher.id},
                "student": {"architecture": experiment.student},
                "dataset": experiment.dataset,
                "training": experiment.hand_tuned,
            }
            for method in args.methods or list(methods):
                body = {
                    "base": base | {"regularizer": {"kind": method}},
                    "space": methods[method],
                    "search": "tpe",
                    "trials": args.trials,
                    "parallel": 2,
                    "seeds": args.seeds,
                    "compare": ["scratch", "kd"],
                }
                sweep, wall = run_sweep(service, body)
                report["rows"].append(row(method, sweep, wall))
                print(f"{method}: {sweep['best']['metric']:.3f}", file=sys.stderr, flush=True)
        finally:
            embedded.executor.shutdown()
    report["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "equal_tuning.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "equal_tuning.md").write_text(markdown(report) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
