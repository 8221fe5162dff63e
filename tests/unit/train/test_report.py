"""Every finished run reports what its student is worth: report.json, report.html and the
int8 student, consistent with the run's own metrics and models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime

from otrt_core.train import RunOptions, train
from otrt_core.train.setup import load_data
from tests.utils.specs import digits_spec


def test_a_distilled_students_report(tmp_path, digits_teacher):
    out = tmp_path / "run"
    events = []
    spec = digits_spec("distill", teacher_path=str(digits_teacher), kd={"weight": 1.0})
    metrics = train(spec, RunOptions(out_dir=out, teacher_path=digits_teacher), events.append)
    report = json.loads((out / "report.json").read_text())

    assert report["test_accuracy"] == metrics["test_accuracy"]
    lo, hi = report["ci95"]
    assert lo < report["test_accuracy"] < hi and hi - lo < 0.15  # 297 test inputs
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum() == report["test_size"] == 297
    assert np.trace(matrix) / matrix.sum() == report["test_accuracy"]
    assert [c["count"] for c in report["per_class"]] == matrix.sum(axis=1).tolist()
    assert 0 <= report["ece"] < 1 and sum(b["count"] for b in report["reliability"]) == 297
    assert 0.5 < report["teacher_agreement"] <= 1

    # Sizes: mlp_small against mlp on 8x8 inputs (64 -> hidden -> hidden -> 10).
    assert report["student"]["params"] == 64 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert report["student"]["macs"] == 64 * 64 + 64 * 64 + 64 * 10
    assert report["ratios"]["params"] < 0.2 and report["ratios"]["macs"] < 0.2
    assert report["student"]["latency_ms"]["b1"] > 0

    # The int8 student is a quantized graph with the accuracy the report states.
    int8 = out / "student.int8.onnx"
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(int8)).graph.node)
    data = load_data(spec, None)
    session = onnxruntime.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": data.x_test.numpy()})
    accuracy = float((logits.argmax(axis=1) == data.y_test.numpy()).mean())
    assert report["int8"]["accuracy"] == accuracy > report["test_accuracy"] - 0.05
    assert report["int8"]["bytes"] == int8.stat().st_size

    page = (out / "report.html").read_text()
    assert f"{report['test_accuracy'] * 100:.1f}%" in page and "<script" not in page
    assert "http" not in page  # self-contained: nothing is fetched
