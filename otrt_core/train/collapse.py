"""The collapse guard: a student that ends at chance, or stays there, is said to have collapsed.

A term too strong for the task (a teacher on another scale, a weight chosen for
other data) can hold the student at chance while the job "succeeds". The guard
names it, with each part's share of the loss, so that the fix is plain.

With :math:`k` classes an accuracy :math:`a` is *at chance* when

.. math::

    a < 1.5 / k

(15% on ten classes, 30% on five). A run has *collapsed* when the selected
student's accuracy is at chance, or the validation accuracy was at chance in
every epoch of the second half of training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

CHANCE_FACTOR = 1.5
LOSS_PARTS = ("task", "regularizer", "kd")  # an epoch record's ``losses``, per labeled input


def at_chance(accuracy: float, num_classes: int) -> bool:
    """Whether ``accuracy`` is below 1.5 times the chance level of ``num_classes`` classes."""
    return math.isfinite(accuracy) and accuracy < CHANCE_FACTOR / num_classes


def collapse_warning(
    history: Sequence[dict[str, Any]],
    final_accuracy: float,
    num_classes: int,
    regularizer_kind: str,
) -> str | None:
    """Why the run collapsed, naming each loss part's share over the second half of
    training and the likely fix; ``None`` when it did not."""
    second_half = history[len(history) // 2 :]
    stuck = bool(second_half) and all(
        at_chance(r["val_accuracy"], num_classes) for r in second_half
    )
    ended = at_chance(final_accuracy, num_classes)
    if not (ended or stuck):
        return None
    message = (
        f"the student collapsed: it {'ended' if ended else 'stayed'} at chance "
        f"({final_accuracy:.1%}; below {CHANCE_FACTOR / num_classes:.1%} counts as chance "
        f"for {num_classes} classes)"
    )
    shares = loss_shares(second_half)
    if shares is None:
        return message
    parts = ", ".join(f"{name} {share:.0%}" for name, share in shares.items() if share > 0)
    message += f"; over the second half of training the loss was {parts}"
    if shares["regularizer"] + shares["kd"] > shares["task"]:
        term = regularizer_kind if shares["regularizer"] >= shares["kd"] else "kd"
        return message + (
            f'. The {term} term outweighs the task: set its weight to "auto" (or lower it), '
            'and with OT keep regularizer.normalize "rms" when the teacher\'s features are '
            "on another scale"
        )
    return message + ". The task loss itself did not fall: lower training.lr"


def loss_shares(records: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Each loss part's share of the summed parts' mean over ``records`` (None when the
    records carry no ``losses``: a checkpoint of an earlier version)."""
    if not records:
        return None
    means = {
        part: sum(r.get("losses", {}).get(part, 0.0) for r in records) / len(records)
        for part in LOSS_PARTS
    }
    total = sum(means.values())
    if not total > 0:
        return None
    return {part: value / total for part, value in means.items()}
