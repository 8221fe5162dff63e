"""The report's numbers against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from otrt_core.report.stats import (
    calibration,
    confusion_matrix,
    per_class,
    prediction_report,
    wilson_interval,
)


def test_wilson_interval_matches_the_textbook_values():
    # 8 of 10, z^2 = 3.8415: center (0.8 + 0.19207) / 1.38415 = 0.71674, half-width
    # 1.96 * sqrt(0.016 + 0.0096) / 1.38415 = 0.22658, so [0.4902, 0.9433].
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    # It never leaves [0, 1] and is not empty at the extremes, where p(1 - p) = 0.
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(0, 20)[1] > 0.1
    assert wilson_interval(20, 20)[1] == 1.0 and wilson_interval(20, 20)[0] < 0.9


def test_confusion_matrix_and_per_class_accuracy():
    labels = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0, 1])
    matrix = confusion_matrix(labels, predicted, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert per_class(matrix) == [
        {"class": 0, "accuracy": 0.5, "count": 2},
        {"class": 1, "accuracy": 2 / 3, "count": 3},
        {"class": 2, "accuracy": 0.0, "count": 1},
        {"class": 3, "accuracy": None, "count": 0},
    ]


def test_expected_calibration_error_by_hand():
    # Two inputs at confidence 0.9 (one right), two at 0.6 (both right), 10 bins:
    # bin [0.9, 1.0): |0.5 - 0.9| = 0.4; bin [0.6, 0.7): |1.0 - 0.6| = 0.4; ECE 0.4.
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 1])
    ece, bins = calibration(probabilities, labels, bins=10)
    assert ece == pytest.approx(0.4)
    assert [(b["low"], b["count"], b["accuracy"]) for b in bins] == [(0.6, 2, 1.0), (0.9, 2, 0.5)]
    assert [b["confidence"] for b in bins] == pytest.approx([0.6, 0.9])


def test_prediction_report_from_logits():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.7, 0.2, 0.1]]))
    labels = np.array([0, 1, 2, 2])
    teacher = np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [1.0, 0, 0]])
    report = prediction_report(logits, labels, 3, teacher)
    assert report["test_accuracy"] == 0.75 and report["test_size"] == 4
    assert report["ci95"] == pytest.approx(list(wilson_interval(3, 4)))
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert report["teacher_agreement"] == 0.75  # the teacher differs on the third input
    # Every input at confidence 0.7 in one bin, 75% right: ECE = |0.75 - 0.7|.
    assert report["ece"] == pytest.approx(0.05)
    assert prediction_report(logits, labels, 3, None)["teacher_agreement"] is None
