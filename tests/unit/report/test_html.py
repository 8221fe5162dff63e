"""report.html's charts read without the JSON: class names, axis ticks, whole legends."""

from __future__ import annotations

import re

from otrt_core.report.html import render


def report(classes: list[str]) -> dict:
    k = len(classes)
    return {
        "title": "distill cnn → cnn_small on shop",
        "test_accuracy": 0.8,
        "ci95": [0.7, 0.9],
        "test_size": 10 * k,
        "per_class": [{"class": c, "accuracy": 0.8, "count": 10} for c in classes],
        "confusion_matrix": [
            [8 if i == j else 2 // max(k - 1, 1) for j in range(k)] for i in range(k)
        ],
        "ece": 0.05,
        "reliability": [
            {
                "low": b / 10,
                "high": (b + 1) / 10,
                "confidence": b / 10 + 0.05,
                "accuracy": 0.5,
                "count": 3,
            }
            for b in range(10)
        ],
        "teacher_agreement": None,
        "student": {"params": 10, "macs": 10, "latency_ms": {"b1": 1.0, "b64": 2.0}},
        "teacher": None,
        "ratios": None,
        "int8": {"params": 10, "macs": 10, "latency_ms": {"b1": 1.0, "b64": 2.0}, "accuracy": 0.79},
        "collapsed": False,
    }


HISTORY = [
    {
        "epoch": e,
        "train_accuracy": 0.5 + e / 10,
        "val_accuracy": 0.5 + e / 12,
        "train_loss": 1 / e,
        "val_loss": 1.2 / e,
    }
    for e in (1, 2, 3)
]


def test_charts_name_the_classes_tick_their_axes_and_show_whole_legends():
    page = render(report(["cat", "dog", "parrot"]), HISTORY, None)
    confusion = page[page.index('<table class="confusion">') :]
    assert all(f"<th>{name}</th>" in confusion for name in ("cat", "dog", "parrot"))
    bars = re.search(r'aria-label="accuracy per class">.*?</svg>', page).group(0)
    assert all(f">{name}</text>" in bars for name in ("cat", "dog", "parrot"))
    calibration = re.search(r'aria-label="reliability diagram">.*?</svg>', page).group(0)
    assert calibration.count(">50%</text>") == 2  # both axes ticked
    for key in ("train_accuracy", "val_accuracy", "train_loss", "val_loss"):
        assert f"— {key}</text>" in page  # each series named whole, on its own line


def test_too_many_classes_to_name_fall_back_to_a_heatmap():
    page = render(report([f"c{i}" for i in range(50)]), HISTORY, None)
    assert 'class="confusion"' not in page and "rows: true class; columns: predicted" in page
