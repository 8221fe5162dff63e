"""Weights of ``"auto"``: each term balanced against the task loss from the first batches.

A weight means nothing on its own: the same lambda is negligible beside one
teacher and drowns the task beside another whose features are 100 times
larger. ``"auto"`` fixes instead what the weight does to the student. On the
first :data:`BATCHES` batches, before any step, with :math:`\\theta` the
student's parameters, :math:`g_0 = \\nabla_\\theta L_{task}` and
:math:`g_l = \\nabla_\\theta \\Omega_l` the gradient of a term's layer pair ``l``
at unit weight (a term without pairs has one part):

- a pair of weight ``"auto"`` gets :math:`w_l = \\overline{\\|g_0\\|} / (P\\,
  \\overline{\\|g_l\\|})` for the term's :math:`P` pairs (each an equal share of
  the task's gradient before lambda);
- a term of weight ``"auto"`` gets :math:`\\lambda = r\\, \\overline{\\|g_0\\|} /
  \\overline{\\|\\sum_l w_l g_l\\|}`, with :math:`r` its ``auto_ratio``,

where the bar is the mean over the batches. The weights are then fixed for
the whole run (the checkpoint keeps them); ``spec.json`` and the ``start``
event hold them. Norms of combinations come from each batch's Gram matrix of
the gradients, so every part is differentiated once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from otrt_core.spec import MAX_WEIGHT, JobSpec, is_auto
from otrt_core.train.terms import Features, Term, on_rows

BATCHES = 4  # batches whose gradients set the auto weights
NO_GRADIENT = 1e-4  # a part's gradient norm, relative to its target, that counts as none


@dataclass(frozen=True)
class Balanced:
    """A term whose weights the spec leaves, in part, to ``"auto"``."""

    term: Term
    field: str  # the spec's section: "regularizer" or "kd"
    weight: float | str  # lambda, or "auto"
    pair_weights: tuple[float | str, ...]  # w_l, each a number or "auto" (() without pairs)
    ratio: float  # the term's gradient over the task's, when lambda is "auto"

    @property
    def parts(self) -> int:
        return max(1, len(self.pair_weights))

    def paths(self) -> dict[str, int | None]:
        """The spec's dotted field of each auto weight, to the pair it sets (None: lambda)."""
        paths: dict[str, int | None] = {}
        for index, weight in enumerate(self.pair_weights):
            if is_auto(weight):
                paths[f"{self.field}.layers.{index}.weight"] = index
        if is_auto(self.weight):
            paths[f"{self.field}.weight"] = None
        return paths


def balanced_terms(spec: JobSpec, term: Term, kd: Term | None) -> list[Balanced]:
    """The run's terms with at least one ``"auto"`` weight."""
    reg = spec.regularizer
    candidates = [
        Balanced(
            term,
            "regularizer",
            reg.weight,
            tuple(p.weight for p in reg.layers) if term.pairs else (),
            reg.auto_ratio,
        )
    ]
    if kd is not None:
        candidates.append(Balanced(kd, "kd", spec.kd.weight, (), spec.kd.auto_ratio))
    return [c for c in candidates if c.paths()]


# One batch's features: (student's stages, teacher's stages, labels), under autocast.
BatchFeatures = Callable[[], tuple[Features, Features, Tensor]]


def balance(
    terms: list[Balanced],
    batches: Iterable[BatchFeatures],
    task_loss: Callable[[Features, Tensor], Tensor],
    parameters: list[torch.nn.Parameter],
) -> dict[str, float]:
    """Sets every auto weight of ``terms`` (``set_weights``) from the ``batches``; returns
    each by its spec path (``regularizer.weight``, ``kd.layers.0.weight``...)."""
    if not terms:
        return {}
    grams = [_gram(terms, features, task_loss, parameters) for features in batches]
    task_norm = _mean_norm(grams, _unit(0, grams))
    chosen: dict[str, float] = {}
    offset = 1
    for balanced in terms:
        parts = range(offset, offset + balanced.parts)
        offset += balanced.parts
        pair_weights = [
            _auto(task_norm, balanced.parts * _mean_norm(grams, _unit(i, grams)))
            if is_auto(w)
            else float(w)
            for i, w in zip(parts, balanced.pair_weights or (1.0,), strict=True)
        ]
        if is_auto(balanced.weight):
            combined = torch.zeros(len(grams[0]), dtype=torch.float64)
            combined[list(parts)] = torch.tensor(pair_weights, dtype=torch.float64)
            weight = _auto(balanced.ratio * task_norm, _mean_norm(grams, combined))
        else:
            weight = float(balanced.weight)
        balanced.term.set_weights(weight, pair_weights if balanced.pair_weights else ())
        for path, pair in balanced.paths().items():
            chosen[path] = weight if pair is None else pair_weights[pair]
    return chosen


def _gram(
    terms: list[Balanced],
    features: BatchFeatures,
    task_loss: Callable[[Features, Tensor], Tensor],
    parameters: list[torch.nn.Parameter],
) -> Tensor:
    """The Gram matrix of one batch's gradients on ``parameters``: the task's, then each
    term's parts at unit weight, in ``terms`` order (float64, on the host)."""
    student, teacher, labels = features()
    losses = [task_loss(student, labels)]
    for balanced in terms:
        term, count = balanced.term, len(balanced.pair_weights)
        for part in range(balanced.parts):
            # What the weight multiplies: the term at weight 1 less the term at weight 0
            # (WKD-L's target-class part, for one, is not weighted).
            one_hot = [float(i == part) for i in range(count)]
            term.set_weights(1.0, one_hot)
            weighted = on_rows(term, teacher, student, labels).loss
            term.set_weights(0.0, one_hot)
            losses.append(weighted - on_rows(term, teacher, student, labels).loss)
    flat = []
    for loss in losses:
        grads = torch.autograd.grad(
            loss, parameters, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        flat.append(torch.cat([g.reshape(-1) for g in grads]).double())
    stacked = torch.stack(flat)
    return (stacked @ stacked.T).cpu()


def _unit(index: int, grams: list[Tensor]) -> Tensor:
    unit = torch.zeros(len(grams[0]), dtype=torch.float64)
    unit[index] = 1.0
    return unit


def _mean_norm(grams: list[Tensor], coefficients: Tensor) -> float:
    """The mean over batches of ``||sum_i c_i g_i||``, from each batch's Gram matrix."""
    norms = [math.sqrt(max(0.0, float(coefficients @ gram @ coefficients))) for gram in grams]
    return sum(norms) / len(norms)


def _auto(target: float, norm: float) -> float:
    """The weight that scales a gradient of ``norm`` to ``target``, within the spec's
    bounds. A part with no gradient at the start (a student that starts as the teacher,
    in ``transfer``: below :data:`NO_GRADIENT` of the target) has nothing to scale, and
    keeps weight 1 rather than a ratio of rounding errors."""
    return min(target / norm, MAX_WEIGHT) if norm > NO_GRADIENT * target else 1.0


def apply(terms: list[Balanced], chosen: dict[str, float]) -> None:
    """Sets the weights ``balance`` chose (read back from a checkpoint)."""
    for balanced in terms:
        paths = {pair: path for path, pair in balanced.paths().items()}
        pair_weights = [
            chosen[paths[i]] if i in paths else float(w)
            for i, w in enumerate(balanced.pair_weights)
        ]
        weight = chosen[paths[None]] if None in paths else float(balanced.weight)
        balanced.term.set_weights(weight, pair_weights)


def resolved(spec: JobSpec, chosen: dict[str, float]) -> JobSpec:
    """``spec`` with each ``"auto"`` weight replaced by the number ``balance`` chose."""
    if not chosen:
        return spec
    data = spec.model_dump()
    for path, value in chosen.items():
        *parents, leaf = (int(key) if key.isdigit() else key for key in path.split("."))
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    return JobSpec.model_validate(data)
