"""The whole story against `make run`: teacher -> distill -> download -> evaluate.

    python examples/story.py [--url http://127.0.0.1:8000] [--api-key KEY] [--epochs 10]

Trains an MLP teacher on scikit-learn's digits, distils it into a quarter-width
MLP with OT + KD (the teacher named by its job id), follows the job's events,
downloads the student's weights and checks their test accuracy locally
against what the service reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

import otrt
from otrt_core.data import load_arrays
from otrt_core.models import build_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    training = {"epochs": args.epochs, "batch_size": 64, "lr": 0.05}
    with otrt.Client(args.url, args.api_key) as client:
        teacher = client.create_job(
            {
                "mode": "supervised",
                "student": {"architecture": "mlp"},
                "dataset": {"name": "digits"},
                "training": training,
            }
        )
        print(f"teacher {teacher['id']}: training")
        teacher = client.wait(teacher["id"])
        print(
            f"teacher {teacher['status']}: test accuracy {teacher['metrics']['test_accuracy']:.4f}"
        )

        student = client.create_job(
            {
                "mode": "distill",
                "teacher": {"architecture": "mlp", "checkpoint": teacher["id"]},
                "student": {"architecture": "mlp_small"},
                "dataset": {"name": "digits"},
                "kd": {"weight": 1.0},
                "training": training,
            }
        )
        for event in client.events(student["id"], follow=True):
            print(f"  {event['type']:<10} {event['message']}")
        student = client.job(student["id"])
        if student["status"] != "succeeded":
            print(f"student {student['status']}: {student['error']}", file=sys.stderr)
            return 1
        reported = student["metrics"]["test_accuracy"]

        with tempfile.TemporaryDirectory() as scratch:
            weights = client.download(student["id"], "student.safetensors", Path(scratch))
            metrics = json.loads(
                client.download(student["id"], "metrics.json", Path(scratch)).read_text()
            )
            model = build_model("mlp_small", num_classes=10, input_shape=(1, 8, 8))
            model.load_state_dict(load_file(weights))
    test = load_arrays("digits")
    mean = torch.tensor(metrics["normalization"]["mean"]).view(-1, 1, 1)
    std = torch.tensor(metrics["normalization"]["std"]).view(-1, 1, 1)
    with torch.no_grad():
        logits = model.eval()((torch.from_numpy(np.array(test.x_test)) - mean) / std)
    accuracy = float((logits.argmax(1).numpy() == test.y_test).mean())
    print(f"student {student['id']}: test accuracy {accuracy:.4f} here, {reported:.4f} reported")
    return 0 if abs(accuracy - reported) < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
