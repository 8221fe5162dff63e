"""What a student's test predictions say: accuracy with its interval, per class, confusion,
calibration, agreement with the teacher. numpy only; every number can be checked by hand.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
CALIBRATION_BINS = 15


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / total`` (95% by default).

    .. math::

        \\frac{\\hat p + \\frac{z^2}{2n} \\pm z \\sqrt{\\frac{\\hat p (1 - \\hat p)}{n}
        + \\frac{z^2}{4 n^2}}}{1 + \\frac{z^2}{n}}

    Unlike the normal approximation it stays inside [0, 1] and is not empty at
    0% or 100% accuracy.
    """
    if total == 0:
        return (math.nan, math.nan)
    p, n = correct / total, total
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, center - half), min(1.0, center + half))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """``(classes, classes)`` counts: rows the true class, columns the predicted one."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def per_class(matrix: np.ndarray) -> list[dict[str, Any]]:
    """Each class's accuracy (recall) and test count; accuracy ``None`` for an absent class."""
    counts = matrix.sum(axis=1)
    return [
        {
            "class": index,
            "accuracy": float(matrix[index, index] / count) if count else None,
            "count": int(count),
        }
        for index, count in enumerate(counts)
    ]


def calibration(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error over ``bins`` equal-width bins of top-1 confidence,

    .. math::

        \\mathrm{ECE} = \\sum_b \\frac{|B_b|}{N} \\, |\\mathrm{acc}(B_b) - \\mathrm{conf}(B_b)|

    and the reliability diagram's non-empty bins (range, mean confidence, accuracy, count).
    A confidence of exactly 1 falls in the last bin.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    ece, diagram = 0.0, []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if not count:
            continue
        accuracy = float(correct[members].mean())
        mean_confidence = float(confidence[members].mean())
        ece += count / len(labels) * abs(accuracy - mean_confidence)
        diagram.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "confidence": mean_confidence,
                "accuracy": accuracy,
                "count": count,
            }
        )
    return ece, diagram


def prediction_report(
    logits: np.ndarray, labels: np.ndarray, classes: int, teacher_logits: np.ndarray | None
) -> dict[str, Any]:
    """The report's numbers from the student's test logits (and the teacher's, when it
    has the same classes): accuracy and its 95% interval, per class, confusion matrix,
    ECE with its reliability bins, and top-1 agreement with the teacher."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    predicted = logits.argmax(axis=1)
    correct = int((predicted == labels).sum())
    matrix = confusion_matrix(labels, predicted, classes)
    ece, reliability = calibration(probabilities, labels)
    agreement = None
    if teacher_logits is not None:
        agreement = float((teacher_logits.argmax(axis=1) == predicted).mean())
    return {
        "test_accuracy": correct / len(labels),
        "ci95": list(wilson_interval(correct, len(labels))),
        "test_size": len(labels),
        "per_class": per_class(matrix),
        "confusion_matrix": matrix.tolist(),
        "ece": ece,
        "reliability": reliability,
        "teacher_agreement": agreement,
    }
