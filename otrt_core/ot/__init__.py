"""Optimal-transport distance between a teacher's and a student's representations.

Public names (METHOD.md, "Public functions of otrt_core.ot"): keep them stable.
"""

from otrt_core.ot.cost import cost_matrix
from otrt_core.ot.distance import Transport, ot_distance, transport
from otrt_core.ot.features import NORMALIZATIONS, SPATIAL_MODES, neurons
from otrt_core.ot.regularizer import LayerPair, OTRegularizer, RegularizerOutput
from otrt_core.ot.solvers import (
    DEFAULT_EPSILON,
    DEFAULT_MAX_ITER,
    SOLVERS,
    choose_solver,
    transport_plan,
)

__all__ = [
    "DEFAULT_EPSILON",
    "DEFAULT_MAX_ITER",
    "NORMALIZATIONS",
    "SOLVERS",
    "SPATIAL_MODES",
    "LayerPair",
    "OTRegularizer",
    "RegularizerOutput",
    "Transport",
    "choose_solver",
    "cost_matrix",
    "neurons",
    "ot_distance",
    "transport",
    "transport_plan",
]
