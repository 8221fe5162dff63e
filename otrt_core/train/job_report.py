"""The report of a finished run: ``report.json``, ``report.html`` and ``student.int8.onnx``.

What the selected student is worth (API.md, "Report"): its test accuracy with a
95% interval, per class, confusion matrix, calibration, agreement with the
teacher; parameters, MACs and onnxruntime CPU latency of student and teacher;
and the student quantized to int8 with its accuracy and latency. The report
reads models through their common interface: it does not know where they came from.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from otrt_core import protocol
from otrt_core.atomic import atomic_path
from otrt_core.models import StagedModel
from otrt_core.report.cost import (
    CALIBRATION_INPUTS,
    latency_ms,
    macs_per_input,
    onnx_logits,
    parameter_count,
)
from otrt_core.report.html import render
from otrt_core.report.stats import prediction_report
from otrt_core.train.export import export_onnx, quantize_int8
from otrt_core.train.predict import input_batches, predict
from otrt_core.train.setup import Run

# An int8 student this many points below the float one is worth a warning.
INT8_MAX_DROP = 0.01


def write_report(
    run: Run,
    logits: np.ndarray,
    out_dir: Path,
    history: list[dict],
    plan: np.ndarray | None,
    emit,
    collapsed: bool = False,
) -> dict[str, Any]:
    """Writes the three files beside the student's ``student.onnx``; returns the report.

    ``logits`` are the selected student's on the test split; ``collapsed``, whether the
    collapse guard fired on it.
    """
    data, threads = run.data, torch.get_num_threads()
    input_shape = tuple(data.x_train.shape[1:])
    teacher_logits = None
    if run.teacher is not None:
        size = run.spec.training.batch_size
        candidate = predict(run.teacher, data.x_test, run.device, size).cpu().numpy()
        if candidate.shape == logits.shape:  # the same task (distill)
            teacher_logits = candidate
    report: dict[str, Any] = {"title": _title(run)}
    report |= prediction_report(logits, data.y_test.numpy(), data.num_classes, teacher_logits)
    student_onnx = out_dir / protocol.STUDENT_ONNX
    report["student"] = _costs(run.student, student_onnx, input_shape, threads)
    # Every field of the report, null where it has no value: the route serves this file.
    report["teacher"] = report["ratios"] = None
    if run.teacher is not None:
        with tempfile.TemporaryDirectory() as scratch:
            teacher_onnx = Path(scratch) / "teacher.onnx"
            export_onnx(run.teacher, data.x_test[:16], teacher_onnx)
            report["teacher"] = _costs(run.teacher, teacher_onnx, input_shape, threads)
        student_macs, teacher_macs = report["student"]["macs"], report["teacher"]["macs"]
        report["ratios"] = {
            "params": report["student"]["params"] / report["teacher"]["params"],
            "macs": student_macs / teacher_macs if student_macs and teacher_macs else None,
            "latency_b1": report["student"]["latency_ms"]["b1"]
            / report["teacher"]["latency_ms"]["b1"],
        }
    report["int8"] = _int8(run, student_onnx, out_dir / protocol.STUDENT_INT8, report, threads)
    report["collapsed"] = collapsed
    if report["int8"].get("warning"):
        emit(protocol.Warned(message=report["int8"]["warning"]))
    with atomic_path(out_dir / protocol.REPORT) as temp:
        temp.write_text(json.dumps(report, indent=2) + "\n")
    with atomic_path(out_dir / protocol.REPORT_HTML) as temp:
        temp.write_text(render(report, history, plan))
    return report


def _title(run: Run) -> str:
    spec = run.spec
    student = spec.student.architecture or "graph"
    if spec.teacher is None:
        return f"{spec.mode} {student} on {spec.dataset.name}"
    teacher = spec.teacher.architecture or "graph"
    return f"{spec.mode} {teacher} → {student} on {spec.dataset.name}"


def _costs(
    model: StagedModel, graph: Path, input_shape: tuple[int, ...], threads: int
) -> dict[str, Any]:
    return {
        "params": parameter_count(model),
        # None when none of its layers is of a counted kind (matrix products, say).
        "macs": macs_per_input(model, input_shape) or None,
        "latency_ms": latency_ms(graph, input_shape, threads),
    }


def _int8(
    run: Run, float_graph: Path, int8_graph: Path, report: dict, threads: int
) -> dict[str, Any]:
    """The student quantized to int8, calibrated on training inputs: accuracy, latency,
    and the drop from the float student (a warning past ``INT8_MAX_DROP``)."""
    data = run.data
    calibration = data.x_train[:CALIBRATION_INPUTS].numpy()
    quantize_int8(float_graph, int8_graph, calibration)
    batches = input_batches(data.x_test, CALIBRATION_INPUTS)
    predicted = np.concatenate(
        [onnx_logits(int8_graph, inputs.numpy(), threads).argmax(axis=1) for inputs in batches]
    )
    accuracy = float((predicted == data.y_test.numpy()).mean())
    drop = report["test_accuracy"] - accuracy
    result = {
        "accuracy": accuracy,
        "drop": drop,
        "latency_ms": latency_ms(int8_graph, tuple(data.x_train.shape[1:]), threads),
        "bytes": int8_graph.stat().st_size,
    }
    if drop > INT8_MAX_DROP:
        result["warning"] = (
            f"the int8 student is {drop * 100:.1f} points below the float one "
            f"({accuracy:.1%} against {report['test_accuracy']:.1%})"
        )
    return result
