"""A sweep's search: Optuna's samplers and its ASHA pruner over the stored trials.

otrt keeps no Optuna storage. Each decision rebuilds an in-memory study from
what otrt's database holds (every point tried so far: its parameters, its
state, its per-epoch metric, and the system attributes Optuna gave it), asks
Optuna, and hands back what to store. So the search is a pure function of the
stored trials, run by whoever advances the sweep; a restart loses nothing.

Values Optuna cannot hold as categories (lists of layer pairs, say) are kept
as their JSON text: a categorical choice is ``json.dumps(value, sort_keys=True)``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial

from otrt_core.jobs.sweep_spec import Range, SweepSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

# ASHA (Li et al., 2020) as Optuna's SuccessiveHalvingPruner: rungs at epochs 1, 3, 9, …;
# a trial goes on past a rung only if it is in the top third of the trials that reached it.
ASHA_MIN_EPOCHS = 1
ASHA_REDUCTION_FACTOR = 3

STATES = {
    "running": TrialState.RUNNING,
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}


@dataclass
class Point:
    """One point of the space as the store knows it.

    ``encoded`` holds the values as Optuna sees them (JSON text for choices),
    ``system_attrs`` what Optuna's sampler or pruner attached to it, ``value``
    the metric once complete, ``epochs`` the metric at each epoch so far.
    """

    encoded: dict[str, Any]
    system_attrs: dict[str, Any] = field(default_factory=dict)
    state: str = "running"
    value: float | None = None
    epochs: dict[int, float] = field(default_factory=dict)


def distributions(space: dict[str, list[Any] | Range]) -> dict[str, BaseDistribution]:
    """Optuna's distribution of each field of the space."""
    result: dict[str, BaseDistribution] = {}
    for path, values in space.items():
        if not isinstance(values, Range):
            result[path] = CategoricalDistribution([encode(v) for v in values])
        elif values.kind == "int_uniform":
            result[path] = IntDistribution(*values.bounds)
        else:
            low, high = values.bounds
            result[path] = FloatDistribution(low, high, log=values.kind == "log_uniform")
    return result


def encode(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def decode(space: dict[str, list[Any] | Range], encoded: dict[str, Any]) -> dict[str, Any]:
    """The job field values of a point Optuna gave (choices back from their JSON text)."""
    return {
        path: value if isinstance(space[path], Range) else json.loads(value)
        for path, value in encoded.items()
    }


def _study(sweep: SweepSpec, points: list[Point], seed: int) -> optuna.Study:
    """An in-memory study holding every stored point, with the sweep's sampler and pruner.

    ``seed`` is the sweep's. The grid's order follows it, so it must stay the same
    from one ask to the next; random and TPE samplers, built anew for each ask,
    draw from ``seed`` plus the number of points so far, else each ask would
    draw the same first value.
    """
    space = distributions(sweep.space)
    if sweep.search == "grid":
        grid = {path: list(dist.choices) for path, dist in space.items()}
        sampler: optuna.samplers.BaseSampler = optuna.samplers.GridSampler(grid, seed=seed)
    elif sweep.search == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed + len(points))
    else:
        # constant_liar: points still running count as bad guesses, so parallel asks spread
        # (Optuna marks the option experimental, and says so on every sampler built).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed + len(points), constant_liar=True)
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=ASHA_MIN_EPOCHS, reduction_factor=ASHA_REDUCTION_FACTOR
    )
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    for point in points:
        state = STATES[point.state]
        study.add_trial(
            create_trial(
                state=state,
                value=point.value if state == TrialState.COMPLETE else None,
                params=point.encoded,
                distributions=space,
                system_attrs=point.system_attrs,
                intermediate_values=point.epochs,
            )
        )
    return study


def ask(sweep: SweepSpec, points: list[Point], seed: int) -> Point:
    """The next point to try, given every point tried so far (a new, running :class:`Point`);
    ``seed`` is the sweep's."""
    study = _study(sweep, points, seed)
    trial = study.ask(distributions(sweep.space))
    attrs = study._storage.get_trial_system_attrs(trial._trial_id)
    return Point(encoded=dict(trial.params), system_attrs=dict(attrs))


def should_prune(sweep: SweepSpec, points: list[Point], index: int) -> tuple[bool, dict[str, Any]]:
    """Whether ASHA stops ``points[index]`` at its latest epoch, and the point's system
    attributes afterwards (the rungs it has now completed, which the store keeps)."""
    study = _study(sweep, points, seed=0)
    trial = study.get_trials(deepcopy=False)[index]
    pruned = study.pruner.prune(study, trial)
    return pruned, dict(study._storage.get_trial_system_attrs(trial._trial_id))
