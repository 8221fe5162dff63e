"""What the OT term costs next to a training step, and what each solver costs alone.

Prints JSON (and writes it with --out). Two parts:

1. steps: for each (student, teacher) pair at batch 128 on 3x32x32 inputs, the
   median time of (a) a plain supervised step, (b) a KD step (frozen teacher's
   forward + KL), (c) a KD step plus the OT term for each solver, on the
   penultimate features and on all stages, and (d) the same with the OT term
   written the naive way (POT's ``ot.emd2`` on torch tensors, backpropagating
   through POT). All configurations are interleaved step by step, so that the
   machine's load drifts over all of them alike. The OT term is also timed
   alone (forward and backward on the step's features), which is far less
   noisy than a difference of two step times.
2. solve: the solve alone at widths 64..2048 for each solver, with each one's
   Omega error against exact network simplex, and what ``auto`` picks; Sinkhorn's
   error at each of ``--epsilons``; on CUDA, Sinkhorn timed in each of
   ``--sinkhorn-modes`` (eager kernels, a replayed CUDA graph, the graph of
   compiled half steps that training uses).

``--parts`` runs either part alone; ``--pairs`` picks the model pairs
(``student/teacher[@CxHxW]``; ``cnn_small/cnn@3x32x32`` is a small KD step);
``--amp`` runs the steps under bf16 autocast (CUDA).

Timing goals are reported, never asserted: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ot
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import publish
from otrt_core.models import build_model
from otrt_core.ot import (
    DEFAULT_EPSILON,
    DEFAULT_MAX_ITER,
    LayerPair,
    OTRegularizer,
    choose_solver,
    cost_matrix,
    neurons,
    transport_plan,
)
from otrt_core.ot.solvers import _graphed_sinkhorn_plan, _sinkhorn_iterations
from otrt_core.settings import Settings
from otrt_core.train.teacher_cache import channel_means
from otrt_core.train.terms import kd_loss
from tests.utils.features import relu_features

MODEL_PAIRS = ["resnet20/resnet56", "resnet8x4/resnet32x4", "cnn_small/cnn@3x32x32"]
SINKHORN_MODES = ("eager", "graphed", "fused")
WIDTHS = [64, 128, 256, 512, 1024, 2048]
# Beside ``auto`` (and what it resolves to, reported per stage), each solver forced.
TIMED_SOLVERS = ("exact", "assignment", "sinkhorn")
KD_TEMPERATURE = 4.0


def main() -> None:
    args = parse_args()
    if Settings().torch_threads:
        torch.set_num_threads(Settings().torch_threads)
    device = torch.device(args.device)
    report = {
        "benchmark": "ot_overhead",
        "machine": machine(device),
        "load_average_start": os.getloadavg(),
        "config": vars(args),
    }
    pairs = args.pairs[:1] if args.quick else args.pairs
    if "steps" in args.parts:
        report["steps"] = [
            bench_steps(
                *parse_pair(pair), device, args.batch_size, args.warmup, args.repeats, args.amp
            )
            for pair in pairs
        ]
    widths = [w for w in args.widths if w <= 256] if args.quick else args.widths
    if "solve" in args.parts:
        modes = args.sinkhorn_modes if device.type == "cuda" else []
        report["solve"] = bench_solves(
            widths, device, args.batch_size, args.solve_repeats, args.epsilons, modes
        )
    report["load_average_end"] = os.getloadavg()
    if {"steps", "solve"} <= set(args.parts):
        report["goals"] = goals(report)
    publish(report, args.out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds of every step")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of every step")
    parser.add_argument("--solve-repeats", type=int, default=3, help="timed solves per width")
    parser.add_argument("--widths", type=int, nargs="+", default=WIDTHS)
    parser.add_argument("--quick", action="store_true", help="first model pair, widths <= 256")
    parser.add_argument(
        "--parts", nargs="+", choices=["steps", "solve"], default=["steps", "solve"]
    )
    parser.add_argument("--pairs", nargs="+", default=MODEL_PAIRS, help="student/teacher")
    parser.add_argument("--amp", action="store_true", help="steps under bf16 autocast (CUDA)")
    parser.add_argument(
        "--epsilons",
        type=float,
        nargs="+",
        default=[DEFAULT_EPSILON],
        help="Sinkhorn epsilons whose Omega error to report",
    )
    parser.add_argument(
        "--sinkhorn-modes",
        nargs="+",
        choices=SINKHORN_MODES,
        default=list(SINKHORN_MODES),
        help="on CUDA: how the Sinkhorn iterations run, each timed",
    )
    parser.add_argument("--out", help="also write the JSON here")
    return parser.parse_args()


def parse_pair(pair: str) -> tuple[str, str, tuple[int, ...] | None]:
    """``student/teacher[@CxHxW]``: the models, and an input shape other than the student's."""
    models, _, shape = pair.partition("@")
    student, teacher = models.split("/")
    return student, teacher, tuple(int(d) for d in shape.split("x")) if shape else None


def machine(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "pot": ot.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---------------------------------------------------------------- timing helpers


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds for one call; waits for the device only around the measurement."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleave(
    runs: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median milliseconds of each run, calling them round-robin."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(warmup + repeats):
        for name, run in runs.items():
            elapsed = timed(run, device)
            if round_index >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


# ---------------------------------------------------------------- part 1: training steps


def naive_ot_loss(teacher: dict[str, Tensor], student: dict[str, Tensor], stages) -> Tensor:
    """The OT term as commonly written: POT's emd2 on torch tensors, autograd through POT."""
    device = student["logits"].device
    loss = torch.zeros((), device=device)
    with torch.autocast(device.type, enabled=False):  # POT takes no bfloat16
        for stage in stages:
            u = neurons(teacher[stage])  # (p, n), float32
            v = neurons(student[stage])  # (q, n)
            cost = ot.dist(u, v) / u.shape[1]
            a = torch.full((u.shape[0],), 1 / u.shape[0], device=u.device)
            b = torch.full((v.shape[0],), 1 / v.shape[0], device=v.device)
            loss = loss + ot.emd2(a, b, cost)
    return loss


def bench_steps(
    student_name: str,
    teacher_name: str,
    input_shape: tuple[int, ...] | None,
    device: torch.device,
    batch_size: int,
    warmup: int,
    repeats: int,
    amp: bool = False,
) -> dict:
    torch.manual_seed(0)
    student = build_model(student_name, input_shape=input_shape).to(device).train()
    teacher = build_model(teacher_name, input_shape=student.input_shape)
    teacher = teacher.to(device).eval().requires_grad_(False)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, *student.input_shape, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    y = torch.randint(0, 10, (batch_size,), device=device)
    # With spatial pooling the penultimate features are the pooled last stage:
    # "all" pairs the conv stages, so that no distance is computed twice.
    conv_stages = tuple(name for name in student.stage_names if name != "penultimate")
    layer_sets = {"penultimate": ("penultimate",), "all": conv_stages}

    with torch.no_grad():
        teacher_features, student_features = teacher.forward_stages(x), student.forward_stages(x)
    widths = {
        stage: (teacher_features[stage].shape[1], student_features[stage].shape[1])
        for stage in student.stage_names
    }
    # The assignment solver needs equal widths: timed only for pairs that have them.
    equal = all(p == q for p, q in widths.values())
    solvers = [s for s in TIMED_SOLVERS if s != "assignment" or equal]
    ot_terms: dict[str, Callable[[dict, dict], Tensor]] = {}
    for layers, stages in layer_sets.items():
        pairs = [LayerPair(stage, stage) for stage in stages]
        for solver in ("auto", *solvers):
            ot_terms[f"{solver}/{layers}"] = OTRegularizer(pairs, solver=solver)
        ot_terms[f"naive_emd2/{layers}"] = lambda t, s, stages=stages: naive_ot_loss(t, s, stages)

    # What the trainer's teacher cache serves instead of a forward pass: the logits,
    # and each map as its channel means (all that pooled OT reads).
    cached = {name: channel_means(values) for name, values in teacher_features.items()}

    def step(kd: bool, ot_term=None, from_cache: bool = False) -> Callable[[], None]:
        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                student_features = student.forward_stages(x)
                loss = F.cross_entropy(student_features["logits"], y)
                if kd:
                    if from_cache:
                        teacher_features = cached
                    else:
                        with torch.no_grad():
                            teacher_features = teacher.forward_stages(x)
                    loss = loss + kd_loss(
                        student_features["logits"], teacher_features["logits"], KD_TEMPERATURE
                    )
                    if ot_term is not None:
                        loss = loss + as_loss(ot_term(teacher_features, student_features))
            loss.backward()
            optimizer.step()

        return run

    def term_alone(ot_term) -> Callable[[], None]:
        with torch.no_grad():
            teacher_features = teacher.forward_stages(x)
            student_features = student.forward_stages(x)

        def run() -> None:
            inputs = {k: v.detach().requires_grad_() for k, v in student_features.items()}
            as_loss(ot_term(teacher_features, inputs)).backward()

        return run

    runs = {"plain": step(kd=False), "kd": step(kd=True)}
    runs |= {f"kd+ot:{name}": step(kd=True, ot_term=term) for name, term in ot_terms.items()}
    runs |= {f"ot_term:{name}": term_alone(term) for name, term in ot_terms.items()}
    runs |= {
        "cached:kd": step(kd=True, from_cache=True),
        "cached:kd+ot": step(kd=True, ot_term=ot_terms["auto/all"], from_cache=True),
    }
    medians = interleave(runs, device, warmup, repeats)

    kd_ms = medians["kd"]
    ot_rows = {
        name: {
            "kd_step_with_ot_ms": medians[f"kd+ot:{name}"],
            "step_overhead_vs_kd": medians[f"kd+ot:{name}"] / kd_ms - 1,
            "ot_term_ms": medians[f"ot_term:{name}"],
            "ot_term_vs_kd_step": medians[f"ot_term:{name}"] / kd_ms,
        }
        for name in ot_terms
    }
    return {
        "student": student_name,
        "teacher": teacher_name,
        "input_shape": list(student.input_shape),
        "batch_size": batch_size,
        "amp": amp,
        "stage_widths_teacher_student": widths,
        "auto_resolves_to": {
            stage: choose_solver(p, q, device) for stage, (p, q) in widths.items()
        },
        "plain_step_ms": medians["plain"],
        "cached_teacher": {  # the trainer's default when the teacher's outputs fit
            "kd_step_ms": medians["cached:kd"],
            "kd_step_with_auto_ot_all_ms": medians["cached:kd+ot"],
            "step_overhead_vs_kd": medians["cached:kd+ot"] / medians["cached:kd"] - 1,
        },
        "kd_step_ms": kd_ms,
        "kd_vs_plain": kd_ms / medians["plain"],
        "ot": ot_rows,
    }


def as_loss(output) -> Tensor:
    return output if isinstance(output, Tensor) else output.loss


# ---------------------------------------------------------------- part 2: the solve alone


def bench_solves(
    widths: list[int],
    device: torch.device,
    n: int,
    repeats: int,
    epsilons: list[float],
    sinkhorn_modes: list[str],
) -> list[dict]:
    rows = []
    for width in widths:
        for p, q in [(width, width), (width, max(1, width // 2))]:
            u = neurons(relu_features(n, p, seed=p, dtype=torch.float32, device=device))
            v = neurons(relu_features(n, q, seed=q + 1, dtype=torch.float32, device=device))
            cost = cost_matrix(u, v)  # (p, q)
            solvers = ["exact", "sinkhorn"] + (["assignment"] if p == q else [])
            runs = {
                name: lambda name=name, cost=cost: transport_plan(cost, name) for name in solvers
            }
            runs["naive_emd2"] = lambda cost=cost: naive_emd2(cost)
            runs |= {
                f"sinkhorn:{mode}": lambda mode=mode, cost=cost: sinkhorn_in_mode(cost, mode)
                for mode in sinkhorn_modes
            }
            medians = interleave(runs, device, warmup=1, repeats=repeats)
            exact_omega = float((transport_plan(cost, "exact") * cost).sum())
            auto = choose_solver(p, q, device)
            errors = {
                name: float((transport_plan(cost, name) * cost).sum()) / exact_omega - 1
                for name in solvers
            }
            # POT's default iteration cap stops network simplex early at large widths.
            errors["naive_emd2"] = float(naive_emd2(cost)) / exact_omega - 1
            sinkhorn_errors = {
                str(eps): float((transport_plan(cost, "sinkhorn", epsilon=eps) * cost).sum())
                / exact_omega
                - 1
                for eps in epsilons
            }
            rows.append(
                {
                    "p": p,
                    "q": q,
                    "ms": medians,
                    "omega_relative_error": errors,
                    "sinkhorn_error_by_epsilon": sinkhorn_errors,
                    "auto": auto,
                    "auto_vs_exact_time": medians[auto] / medians["exact"],
                    "auto_vs_naive_time": medians[auto] / medians["naive_emd2"],
                }
            )
    return rows


def sinkhorn_in_mode(cost: Tensor, mode: str) -> Tensor:
    """Sinkhorn at the default epsilon as ``mode`` runs it: eager kernels, a replayed CUDA
    graph of them, or the graph of compiled half steps that training uses."""
    if mode == "eager":
        return _sinkhorn_iterations(cost, DEFAULT_EPSILON, DEFAULT_MAX_ITER)
    return _graphed_sinkhorn_plan(cost, DEFAULT_EPSILON, DEFAULT_MAX_ITER, fuse=mode == "fused")


def naive_emd2(cost: Tensor) -> Tensor:
    p, q = cost.shape
    a = torch.full((p,), 1 / p, device=cost.device)
    b = torch.full((q,), 1 / q, device=cost.device)
    return ot.emd2(a, b, cost)


# ---------------------------------------------------------------- summary


def goals(report: dict) -> dict:
    """The issue's goals, read off this run's ratios."""
    auto_terms = [
        row["ot"][f"auto/{layers}"] for row in report["steps"] for layers in ("penultimate", "all")
    ]
    large = [row for row in report["solve"] if max(row["p"], row["q"]) >= 1024]
    return {
        "auto_ot_term_vs_kd_step_max": max(term["ot_term_vs_kd_step"] for term in auto_terms),
        "auto_step_overhead_vs_kd_max": max(term["step_overhead_vs_kd"] for term in auto_terms),
        "overhead_goal": 0.01 if report["machine"]["device"] == "cpu" else 0.03,
        "auto_vs_exact_time_max_at_1024_plus": (
            max(row["auto_vs_exact_time"] for row in large) if large else None
        ),
        "auto_omega_error_max": max(
            abs(row["omega_relative_error"][row["auto"]]) for row in report["solve"]
        ),
    }


if __name__ == "__main__":
    main()
