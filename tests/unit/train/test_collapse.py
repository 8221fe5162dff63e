"""The collapse guard's rule (otrt_core.train.collapse): below 1.5/k is chance."""

from otrt_core.train.collapse import at_chance, collapse_warning, loss_shares


def record(val_accuracy: float, task: float = 1.0, regularizer: float = 0.0, kd: float = 0.0):
    return {
        "val_accuracy": val_accuracy,
        "losses": {"task": task, "regularizer": regularizer, "kd": kd},
    }


def test_chance_is_one_and_a_half_times_a_uniform_guess():
    assert at_chance(0.149, 10) and not at_chance(0.15, 10)
    assert at_chance(0.29, 5) and not at_chance(0.31, 5)
    assert not at_chance(float("nan"), 10)  # no test split: nothing to judge


def test_a_healthy_run_raises_nothing():
    history = [record(0.1), record(0.5), record(0.9), record(0.95)]
    assert collapse_warning(history, 0.94, 10, "ot") is None


def test_ending_at_chance_names_the_term_that_dominates():
    history = [record(0.1, task=2.3, regularizer=20.0) for _ in range(4)]
    why = collapse_warning(history, 0.11, 10, "ot")
    assert why is not None and "ended at chance" in why
    assert "task 10%, regularizer 90%" in why
    assert "The ot term outweighs the task" in why and '"auto"' in why


def test_staying_at_chance_for_the_second_half_counts_even_if_the_end_recovers():
    history = [record(0.5), record(0.6), record(0.1, kd=9.0), record(0.12, kd=9.0)]
    why = collapse_warning(history, 0.40, 10, "ot")
    assert why is not None and "stayed at chance" in why and "The kd term" in why
    # One epoch above chance in the second half: not stuck.
    history[-1] = record(0.5)
    assert collapse_warning(history, 0.40, 10, "ot") is None


def test_a_task_loss_that_never_falls_points_at_the_learning_rate():
    why = collapse_warning([record(0.1, task=2.3)] * 2, 0.1, 10, "none")
    assert why is not None and "lower training.lr" in why


def test_records_of_an_earlier_version_carry_no_shares():
    assert loss_shares([{"val_accuracy": 0.1}]) is None
    assert collapse_warning([{"val_accuracy": 0.1}], 0.1, 10, "ot").endswith("10 classes)")
