"""What WKD-L and WKD-F cost per training step, against KD and FitNets (issue 33's goals).

For each (student, teacher, classes) setting, the median time of a whole step
(student forward and backward, the frozen teacher's forward, the term, the
optimizer) with each term: KD, WKD-L (kd.kind "wkd"), FitNets and WKD-F on the
last map stage (the same stage for both, so that the projector and the
regressor see the same maps). The four steps are interleaved round by round,
so the machine's load drifts over all of them alike; the report gives the
ratios WKD-L / KD and WKD-F / FitNets, whose goal is at most 1.1.

    python bench/term_cost.py --out bench/results/term_cost.json
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ot_overhead import interleave, machine
from bench.report import publish
from otrt_core.models import build_model
from otrt_core.settings import Settings
from otrt_core.spec import resolve_spec
from otrt_core.train.terms import FitNetTerm, KDTerm, Term, WKDFeatureTerm, WKDLogitTerm, on_rows
from otrt_core.train.wkd import class_cost_from_head

# student/teacher@CxHxW:classes (the paper's CIFAR-100 pair, and a small one of otrt's).
SETTINGS = ["resnet8x4/resnet32x4@3x32x32:100", "cnn_small/cnn@1x28x28:10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--settings", nargs="+", default=SETTINGS)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if Settings().torch_threads:
        torch.set_num_threads(Settings().torch_threads)
    device = torch.device(args.device)
    report = {
        "benchmark": "term_cost",
        "machine": machine(device),
        "load_average_start": os.getloadavg(),
        "config": vars(args),
        "settings": [
            bench(s, device, args.batch_size, args.warmup, args.repeats) for s in args.settings
        ],
    }
    report["load_average_end"] = os.getloadavg()
    publish(report, args.out)


def bench(setting: str, device: torch.device, batch_size: int, warmup: int, repeats: int) -> dict:
    models, rest = setting.split("@")
    student_name, teacher_name = models.split("/")
    shape, classes = rest.split(":")
    input_shape = tuple(int(d) for d in shape.split("x"))
    num_classes = int(classes)
    torch.manual_seed(0)
    student = build_model(student_name, num_classes=num_classes, input_shape=input_shape)
    teacher = build_model(teacher_name, num_classes=num_classes, input_shape=input_shape)
    student, teacher = student.to(device).train(), teacher.to(device).eval().requires_grad_(False)
    stage = [s for s in student.stage_names if s != "penultimate"][-1]
    x = torch.randn(batch_size, *input_shape, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    cost = class_cost_from_head(teacher.head.weight)

    def spec(kind: str):  # the term's fields: weight 1 on the last map stage
        return resolve_spec(
            {
                "mode": "distill",
                "teacher": {"architecture": teacher_name, "checkpoint": "t"},
                "student": {"architecture": student_name},
                "dataset": {"name": "digits"},
                "regularizer": {
                    "kind": kind,
                    "weight": 1.0,
                    "layers": [{"teacher": stage, "student": stage}],
                },
            }
        )

    terms: dict[str, Term] = {
        "kd": KDTerm(1.0, 4.0),
        "wkd_l": WKDLogitTerm(1.0, 4.0, cost),
        "fitnet": FitNetTerm(spec("fitnet"), teacher, student),
        "wkd_f": WKDFeatureTerm(spec("wkd_f"), teacher, student),
    }
    for term in terms.values():
        term.to(device)
    optimizers = {
        name: torch.optim.SGD([*student.parameters(), *term.parameters()], lr=1e-3, momentum=0.9)
        for name, term in terms.items()
    }

    def step(name: str) -> Callable[[], None]:
        term, optimizer = terms[name], optimizers[name]

        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            student_features = student.forward_stages(x)
            with torch.no_grad():
                teacher_features = teacher.forward_stages(x)
            loss = F.cross_entropy(student_features["logits"], y)
            loss = loss + on_rows(term, teacher_features, student_features, y).loss
            loss.backward()
            optimizer.step()

        return run

    medians = interleave({name: step(name) for name in terms}, device, warmup, repeats)
    return {
        "setting": setting,
        "stage": stage,
        "batch_size": batch_size,
        "step_ms": medians,
        "wkd_l_vs_kd": medians["wkd_l"] / medians["kd"],
        "wkd_f_vs_fitnet": medians["wkd_f"] / medians["fitnet"],
        "goal": 1.1,
    }


if __name__ == "__main__":
    main()
