"""The OT regularizer over several named layer pairs.

.. math::

    R(\\theta) = \\lambda \\sum_l w_l \\, \\Omega(S_l(\\theta), T_l)

where each pair ``l`` names a teacher stage :math:`T_l` and a student stage
:math:`S_l` (the stage names every zoo model declares, e.g. ``stage2`` or
``penultimate``) and :math:`w_l` is its weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from otrt_core.ot.distance import transport
from otrt_core.ot.features import NORMALIZATIONS, SPATIAL_MODES
from otrt_core.ot.solvers import DEFAULT_EPSILON, DEFAULT_MAX_ITER, SOLVERS


@dataclass(frozen=True)
class LayerPair:
    """A teacher stage matched to a student stage, with its weight ``w_l``."""

    teacher: str
    student: str
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.teacher}->{self.student}"


@dataclass(frozen=True)
class RegularizerOutput:
    """What one evaluation of the regularizer gives.

    Attributes
    ----------
    loss : Tensor ``()``
        :math:`\\lambda \\sum_l w_l \\Omega_l`, differentiable (envelope gradient).
    distances : dict[str, Tensor]
        Omega of each pair (unweighted), keyed by ``LayerPair.name``; detached
        scalars left on the device, so logging them costs no host sync.
    plans : dict[str, Tensor]
        The transport plan of each pair, ``(p, q)``, detached.
    """

    loss: Tensor
    distances: dict[str, Tensor]
    plans: dict[str, Tensor]


class OTRegularizer(nn.Module):
    """:math:`\\lambda \\sum_l w_l \\Omega(S_l, T_l)` over named layer outputs.

    Has no parameters; a module so that it sits beside the models it
    regularizes. Call it with the teacher's and the student's stage outputs on
    the same batch, keyed by stage name.
    """

    def __init__(
        self,
        pairs: Sequence[LayerPair],
        *,
        weight: float = 1.0,
        solver: str = "auto",
        spatial: str = "pool",
        normalize: str = "none",
        epsilon: float = DEFAULT_EPSILON,
        max_iter: int = DEFAULT_MAX_ITER,
    ) -> None:
        super().__init__()
        problems = []
        if not pairs:
            problems.append("at least one layer pair is needed")
        if len({pair.name for pair in pairs}) != len(pairs):
            problems.append("layer pairs must be distinct")
        if any(pair.weight < 0 for pair in pairs) or weight < 0:
            problems.append("weights must be non-negative")
        if solver not in SOLVERS:
            problems.append(f"solver must be one of {SOLVERS}; got {solver!r}")
        if spatial not in SPATIAL_MODES:
            problems.append(f"spatial must be one of {SPATIAL_MODES}; got {spatial!r}")
        if normalize not in NORMALIZATIONS:
            problems.append(f"normalize must be one of {NORMALIZATIONS}; got {normalize!r}")
        if not epsilon > 0:
            problems.append(f"epsilon must be positive; got {epsilon}")
        if max_iter < 1:
            problems.append(f"max_iter must be at least 1; got {max_iter}")
        if problems:
            raise ValueError("; ".join(problems))
        self.pairs = tuple(pairs)
        self.weight = weight
        self.solver = solver
        self.spatial = spatial
        self.normalize = normalize
        self.epsilon = epsilon
        self.max_iter = max_iter

    def forward(
        self, teacher_features: Mapping[str, Tensor], student_features: Mapping[str, Tensor]
    ) -> RegularizerOutput:
        results = {
            pair.name: transport(
                _stage(teacher_features, pair.teacher, "teacher"),
                _stage(student_features, pair.student, "student"),
                solver=self.solver,
                spatial=self.spatial,
                normalize=self.normalize,
                epsilon=self.epsilon,
                max_iter=self.max_iter,
            )
            for pair in self.pairs
        }
        loss = sum(pair.weight * results[pair.name].distance for pair in self.pairs)
        return RegularizerOutput(
            loss=self.weight * loss,
            distances={name: result.distance.detach() for name, result in results.items()},
            plans={name: result.plan for name, result in results.items()},
        )

    def extra_repr(self) -> str:
        pairs = ", ".join(f"{pair.name}:{pair.weight:g}" for pair in self.pairs)
        return (
            f"pairs=[{pairs}], weight={self.weight:g}, solver={self.solver}, "
            f"spatial={self.spatial}, normalize={self.normalize}, epsilon={self.epsilon:g}"
        )


def _stage(features: Mapping[str, Tensor], name: str, side: str) -> Tensor:
    try:
        return features[name]
    except KeyError:
        known = ", ".join(sorted(features)) or "none"
        raise KeyError(f"the {side} has no stage {name!r}; its stages are: {known}") from None
