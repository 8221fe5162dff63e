"""A sweep's request: what each point's job is, the baselines, and every problem at once."""

from __future__ import annotations

import math

import pytest

from otrt_core.jobs.sweep_spec import (
    SweepSpec,
    baseline_spec,
    job_count,
    sweep_problems,
    trial_count,
    trial_spec,
)
from otrt_core.jobs.sweeps import paired_gain

DISTILL = {
    "mode": "distill",
    "teacher": {"architecture": "mlp", "checkpoint": "file_teacher"},
    "student": {"architecture": "mlp_small"},
    "dataset": {"name": "digits"},
    "training": {"seed": 5, "epochs": 3},
}


def sweep(base=DISTILL, **fields) -> SweepSpec:
    fields.setdefault("space", {"regularizer.weight": [0.1, 1.0]})
    return SweepSpec.model_validate({"base": base} | fields)


def locations(problems: list[dict]) -> list[str]:
    return [".".join(map(str, p.loc)) for p in problems]


def test_a_point_s_job_is_the_base_with_its_values_and_the_seed_offset():
    spec = trial_spec(sweep(), {"regularizer.weight": 0.1, "kd.temperature": 2.0}, seed_index=2)
    assert spec.regularizer.weight == 0.1 and spec.kd.temperature == 2.0
    assert spec.training.seed == 7 and spec.training.epochs == 3
    assert (spec.regularizer.kind, spec.kd.kind) == ("kd", "wkd")  # distill's default: WKD-L


def test_the_baselines_train_the_same_student_alone_and_with_kd_on_the_same_data_and_seed():
    scratch = baseline_spec(sweep(), "scratch", 1)
    assert scratch.mode == "supervised" and scratch.teacher is None
    assert scratch.student.architecture == "mlp_small" and scratch.training.seed == 6
    assert scratch.dataset == trial_spec(sweep(), {}, 1).dataset
    kd = baseline_spec(sweep(), "kd", 1)
    assert kd.mode == "distill" and kd.regularizer.kind == "kd" and kd.regularizer.weight == "auto"
    assert kd.teacher.checkpoint == "file_teacher" and kd.training.seed == 6


def test_the_grid_s_size_bounds_its_points_and_jobs_count_seeds_and_baselines():
    grid = sweep(
        search="grid", space={"regularizer.weight": [0.1, 1, 10], "kd.temperature": [2, 4]}
    )
    assert trial_count(grid) == 6
    compared = sweep(search="random", trials=5, seeds=3, compare=["scratch", "kd"])
    assert trial_count(compared) == 5 and job_count(compared) == (5 + 2) * 3
    assert trial_count(sweep(search="tpe")) == 16  # the default for a search without a grid


def test_every_problem_of_a_sweep_is_listed_with_where_it_is():
    bad = sweep(
        search="grid",
        space={
            "regularizer.wieght": [1.0],
            "training.lr": {"uniform": [0.5, 0.1]},
            "kd.temperature": [],
            "training.seed": [1, 2],
            "regularizer.normalize": ["none", "sideways"],
            "regularizer": [{}],
        },
        compare=["scratch"],
    )
    problems = sweep_problems(bad, max_jobs=100)
    by_place = {".".join(map(str, p.loc)): p.msg for p in problems}
    assert "nearest: regularizer.weight" in by_place["body.space.regularizer.wieght"]
    assert "empty range" in by_place["body.space.training.lr.uniform"]
    assert "empty list" in by_place["body.space.kd.temperature"]
    assert "fixed" in by_place["body.space.training.seed"]
    assert "regularizer.normalize" in by_place["body.space.regularizer.normalize.1"]
    assert "group of fields" in by_place["body.space.regularizer"]
    assert "seeds >= 3" in by_place["body.seeds"]
    assert len(problems) == 7, problems


def test_a_grid_of_ranges_kd_outside_distill_and_too_many_jobs_are_refused():
    ranged = sweep(search="grid", space={"regularizer.weight": {"log_uniform": [0.01, 10]}})
    assert locations(sweep_problems(ranged, 100)) == ["body.space.regularizer.weight"]
    transfer = DISTILL | {"mode": "transfer", "student": {}}
    kd = sweep(base=transfer, compare=["kd"], seeds=3)
    (problem,) = sweep_problems(kd, 100)
    assert problem.loc == ("body", "compare") and "mode 'distill'" in problem.msg
    big = sweep(search="random", trials=40, seeds=3)
    (problem,) = sweep_problems(big, 100)
    assert "120 jobs" in problem.msg and "at most 100" in problem.msg
    overdrawn = sweep(search="grid", trials=3)
    assert sweep_problems(overdrawn, 100)[0].msg == "the grid has 2 points; trials is at most that"
    negative = sweep(space={"regularizer.weight": {"log_uniform": [0, 1]}})
    assert "low > 0" in sweep_problems(negative, 100)[0].msg


@pytest.mark.parametrize(
    ("ours", "theirs", "gain", "half"),
    [
        # differences 0.02, 0.04, 0.03: mean 0.03, sd 0.01, t(0.975, 2) = 4.302653
        ([0.90, 0.92, 0.94], [0.88, 0.88, 0.91], 0.03, 4.302653 * 0.01 / math.sqrt(3)),
        # a seed without its baseline is left out of the pairs: differences 0.1, 0.3
        ([0.5, 0.6, 0.7], [0.4, None, 0.4], 0.2, 12.706205 * math.sqrt(0.02) / math.sqrt(2)),
    ],
)
def test_the_paired_gain_and_its_t_interval_match_a_hand_computation(ours, theirs, gain, half):
    result = paired_gain(ours, theirs)
    assert result["gain"] == pytest.approx(gain)
    assert result["ci95"] == pytest.approx([gain - half, gain + half], rel=1e-5)


def test_one_pair_has_a_gain_but_no_interval_and_none_has_neither():
    assert paired_gain([0.9], [0.8]) == {"gain": pytest.approx(0.1), "ci95": None, "seeds": 1}
    assert paired_gain([None], [0.8]) == {"gain": None, "ci95": None, "seeds": 0}
