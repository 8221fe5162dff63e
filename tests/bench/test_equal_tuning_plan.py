"""Which rows the equal-budget table runs next, read from what its file holds (no training)."""

from bench.equal_tuning import SETTINGS, TABLE_METHODS, default_family, mean_ranks, pending


def row(setting, method, seed, point, val=0.5, test=0.5):
    return {
        "setting": setting,
        "method": method,
        "seed": seed,
        "point": point,
        "val_accuracy": val,
        "test_accuracy": test,
    }


def test_defaults_come_first_then_the_search_then_the_chosen_point_on_other_seeds():
    todo = pending(["mnist1d"], ["scratch", "ot"], [0, 1, 2], [])
    keys = [(r.method, r.seed, r.point) for r in todo]
    assert keys[:6] == [(m, s, "defaults") for s in (0, 1, 2) for m in ("scratch", "ot")]
    assert keys[6:] == [("ot", 0, "x0.5"), ("ot", 0, "x2")]  # nothing chosen yet
    done = [
        row("mnist1d", "ot", 0, p, val=v)
        for p, v in [("defaults", 0.5), ("x0.5", 0.7), ("x2", 0.6)]
    ]
    todo = pending(["mnist1d"], ["ot"], [0, 1, 2], done)
    assert [(r.seed, r.point) for r in todo] == [
        (1, "defaults"),
        (2, "defaults"),
        (1, "x0.5"),
        (2, "x0.5"),
    ]


def test_a_mode_that_refuses_a_method_gets_no_rows_of_it():
    todo = pending(["mnist-td-10"], list(TABLE_METHODS), [0], [])
    assert {r.method for r in todo} == {"scratch", "ot", "ot + pool", "wkd-f"}
    assert not TABLE_METHODS["ot + pool"].fits(SETTINGS["fashion-500"])


def test_the_default_terms_are_the_best_mean_rank_a_tie_to_the_simpler():
    rows = [
        row("fashion-500", "kd", 0, "defaults", test=0.8),
        row("fashion-500", "ot + kd", 0, "defaults", test=0.9),
        row("mnist1d", "kd", 0, "defaults", test=0.9),
        row("mnist1d", "ot + kd", 0, "defaults", test=0.8),
        row("mnist-50-pool", "kd + pool", 0, "defaults", test=0.7),  # kd's row there
        row("mnist-50-pool", "ot + kd + pool", 0, "defaults", test=0.6),
        row("mnist-50-pool", "kd", 0, "defaults", test=0.95),  # not the pool setting's kd
    ]
    table = {}
    for r in rows:
        table.setdefault((r["setting"], r["method"], r["point"]), {})[r["seed"]] = r
    ranks = mean_ranks(table, "distill")
    assert ranks == {"kd": 4 / 3, "ot + kd": 5 / 3}
    assert default_family({"ot + kd": 1.5, "kd": 1.5}) == "kd"
