"""The sweep's search as a pure function of the stored points: Optuna's grid, random and
TPE samplers and its ASHA pruner, rebuilt from what otrt stores."""

from __future__ import annotations

import itertools
import json

import pytest

from otrt_core.jobs.search import Point, ask, decode, should_prune
from otrt_core.jobs.sweep_spec import SweepSpec

BASE = {"mode": "supervised", "student": {"architecture": "mlp"}, "dataset": {"name": "digits"}}
LAYERS = [[{"teacher": "stage2", "student": "stage2"}], [{}]]


def sweep(**fields) -> SweepSpec:
    return SweepSpec.model_validate({"base": BASE} | fields)


def stored(point: Point) -> Point:
    """The point as it comes back from the database (a JSON column)."""
    return Point(**json.loads(json.dumps(point.__dict__)))


def test_a_grid_proposes_every_point_once_whatever_ran_before():
    grid = sweep(
        search="grid",
        space={"training.lr": [0.01, 0.1], "regularizer.layers": LAYERS, "kd.temperature": [2, 4]},
    )
    points: list[Point] = []
    for number in range(8):
        point = ask(grid, points, seed=7)
        point.state, point.value = ("complete", 0.5) if number % 2 else ("running", None)
        points.append(stored(point))
    proposed = [json.dumps(decode(grid.space, p.encoded), sort_keys=True) for p in points]
    every = [
        json.dumps(
            {"training.lr": lr, "regularizer.layers": pairs, "kd.temperature": t}, sort_keys=True
        )
        for lr, pairs, t in itertools.product([0.01, 0.1], LAYERS, [2, 4])
    ]
    assert sorted(proposed) == sorted(every)  # each of the 8 points once


@pytest.mark.parametrize("search", ["random", "tpe"])
def test_random_and_tpe_draw_in_their_ranges_and_repeat_from_the_same_stored_points(search):
    space = {
        "regularizer.weight": {"log_uniform": [0.01, 100]},
        "training.optimizer": ["sgd", "adamw"],
    }
    spec = sweep(search=search, space=space)
    points: list[Point] = []
    for _ in range(12):
        point = ask(spec, points, seed=3)
        assert ask(spec, points, seed=3).encoded == point.encoded  # a pure function
        values = decode(spec.space, point.encoded)
        assert 0.01 <= values["regularizer.weight"] <= 100
        assert values["training.optimizer"] in ("sgd", "adamw")
        point.state, point.value = "complete", 1.0 / (1.0 + abs(values["regularizer.weight"] - 1))
        points.append(stored(point))
    weights = [decode(spec.space, p.encoded)["regularizer.weight"] for p in points]
    assert len(set(weights)) == 12  # each ask draws anew


def test_asha_stops_a_point_below_the_top_third_at_a_rung_and_keeps_the_best():
    spec = sweep(space={"training.lr": {"uniform": [0.01, 0.1]}}, early_stop="asha")
    finished = [
        Point({"training.lr": 0.01 * (i + 1)}, state="complete", value=v, epochs={1: v, 3: v})
        for i, v in enumerate([0.9, 0.8, 0.7])
    ]
    system = []
    for point in finished:  # each passed rung 0 (epoch 1) in turn, as ASHA records it
        point.system_attrs = {"completed_rung_0": point.epochs[1]}
        system.append(point)
    weak = Point({"training.lr": 0.05}, epochs={1: 0.5})
    strong = Point({"training.lr": 0.06}, epochs={1: 0.95})
    pruned, attrs = should_prune(spec, [*system, weak], 3)
    assert pruned and attrs == {"completed_rung_0": 0.5}
    kept, attrs = should_prune(spec, [*system, strong], 3)
    assert not kept and attrs == {"completed_rung_0": 0.95}
