"""Methods at equal tuning budget: the equal-budget table, and sweeps on the service.

``table`` runs every distillation term (scratch, KD, KD + pool, WKD-L, OT, OT +
pool, OT + KD (+ pool), WKD-F) on the same search in four settings: distill on
Fashion-MNIST (500 labels per class) and on MNIST-1D, and MNIST with few labels
(distill, 50 per class with the other training images as the pool;
transfer_distill, 10 per class). A method a mode refuses (a logit term where the
teacher's classes differ) has no rows there. Each method runs on the service's
untuned defaults (the body names the mode, the models, the data and the term's
switches, nothing else) and on the same search points (its "auto" ratios halved
and doubled) on the first seed; validation picks the point, which then runs on
the other seeds. A row is one (setting, method, seed, point) job; each is
appended to ``bench/results/equal_budget.jsonl`` as it ends, teachers stay under
``bench/out/equal_budget``, and a piece (``--budget-minutes``) starts no row it
expects to end past its budget: run it again to go on. ``markdown`` writes the
table from the committed rows into ``bench/results/equal_budget.md`` and
docs/reproduce.md.

``sweeps`` is the comparison before it: OT, FitNets and AT, one TPE sweep each
through the service's sweeps (docs/sweeps.md) over its weight, its layer and,
for OT, its normalization, with the same number of points and seeds and ASHA
off; each sweep also trains the student alone and with KD on the same seeds
(``compare``). Setting: reproduce.py's "distill, Fashion-MNIST (500/class)" with
its hand-tuned recipe (8 epochs) and its teacher (every training image, 4
epochs), unless ``--teacher-subset`` and ``--teacher-epochs`` say otherwise. It
runs on an embedded service in this process (``otrt serve``'s executor, two jobs
at a time, one thread each), and writes JSON and a markdown table to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.mnist_few import paired
from bench.reproduce import experiments, run_in_scratch, run_job
from otrt.wiring import build_embedded
from otrt_core.jobs.sweep_spec import SweepSpec
from otrt_core.settings import Settings
from otrt_core.spec import LOGIT_AUTO_RATIO, REPRESENTATION_AUTO_RATIO, JobSpec

OWNER = "bench"
SETTING = "distill, Fashion-MNIST (500/class)"


def spaces(quick: bool) -> dict[str, dict[str, Any]]:
    """Each method's space: its weight around its usual value, two layers, and for OT
    its normalization. AT compares conv maps, so its layers are the last two stages."""
    ot_layers = [[{"teacher": s, "student": s}] for s in ("penultimate", "stage2")]
    at_layers = [[{"teacher": s, "student": s}] for s in ("stage3", "stage2")]
    result = {
        "ot": {
            "regularizer.weight": {"log_uniform": [0.01, 100.0]},
            "regularizer.normalize": ["none", "center", "standardize"],
            "regularizer.layers": ot_layers,
        },
        "fitnet": {
            "regularizer.weight": {"log_uniform": [1.0, 10_000.0]},
            "regularizer.layers": ot_layers,
        },
        "at": {
            "regularizer.weight": {"log_uniform": [10.0, 100_000.0]},
            "regularizer.layers": at_layers,
        },
    }
    if quick:
        for space in result.values():
            space["regularizer.layers"] = space["regularizer.layers"][:1]
    return result


def run_service_job(service, body: dict[str, Any]) -> Any:
    job, _ = service.submit(OWNER, JobSpec.model_validate(body))
    while (job := service.job(OWNER, job.id)).status not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
    assert job.status == "succeeded", job.error
    return job


def run_sweep(service, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    sweep = service.submit_sweep(
        OWNER, SweepSpec.model_validate(body), key_id=None, max_queued=None
    )
    while (sweep := service.sweep(OWNER, sweep["id"]))["status"] in ("running", "cancelling"):
        time.sleep(2)
    return sweep, time.perf_counter() - started


def row(method: str, sweep: dict[str, Any], wall: float) -> dict[str, Any]:
    best = sweep["best"]
    tests = [
        t["test_accuracy"]
        for t in sweep["trials"]
        if t["role"] == "point" and t["point"] == best["point"]
    ]
    return {
        "method": method,
        "status": sweep["status"],
        "points": sweep["points"]["planned"],
        "best_params": best["params"],
        "best_val_accuracy": best["metric"],
        "best_test_accuracy_by_seed": tests,
        "compare": sweep["compare"],
        "baselines_test_accuracy": {
            role: [t["test_accuracy"] for t in sweep["trials"] if t["role"] == role]
            for role in ("scratch", "kd")
        },
        "wall_seconds": wall,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Setting: {report['setting']}; {report['trials']} points per method (TPE), "
        f"{report['seeds']} seeds each; best point chosen on validation, test accuracy "
        "and paired 95% intervals over the seeds.",
        f"Teacher: cnn on {_images(report['teacher']['dataset'])}, "
        f"{report['teacher']['training']['epochs']} epochs, "
        f"test accuracy {100 * report['teacher_test_accuracy']:.1f}%.",
        "",
        "| method | best point | test accuracy (mean) | vs scratch | vs KD | wall |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        tests = r["best_test_accuracy_by_seed"]
        values = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in r["best_params"].items())
        gains = []
        for kind in ("scratch", "kd"):
            gain = r["compare"][kind]
            low, high = gain["ci95"] or (gain["gain"], gain["gain"])
            gains.append(f"{100 * gain['gain']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]")
        lines.append(
            f"| {r['method']} | {values} | {100 * sum(tests) / len(tests):.1f} | "
            f"{gains[0]} | {gains[1]} | {r['wall_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def _images(dataset: dict[str, Any]) -> str:
    subset = dataset.get("train_subset")
    return f"{subset} images per class" if subset else "every training image"


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(pair["student"] for pair in value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------ the equal-budget table
#
# Every term on the same search, resumable: a row is one (setting, method, seed,
# point) job, appended to a JSON Lines file as soon as it ends; a piece runs rows
# two at a time until its budget would be passed, never stopping one mid-way.

RESULTS = Path("bench/results/equal_budget.jsonl")
TEACHERS = Path("bench/out/equal_budget")
REPRODUCE_MD = Path("docs/reproduce.md")
TABLE_BEGIN, TABLE_END = "<!-- equal-budget table: begin -->", "<!-- equal-budget table: end -->"
SOURCE, TARGET = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
# A point multiplies every "auto" ratio of the method by this factor; "defaults" is 1
# with nothing named (the body a user would send). Each tuned method gets the same
# points, chosen on the first seed's validation accuracy.
POINTS = {"defaults": 1.0, "x0.5": 0.5, "x2": 2.0}
FIRST_SEED = 0  # the seed whose validation accuracy picks each method's point
FIRST_ROW_SECONDS = 150.0  # a row's guess before one of its setting has ended


def teacher_body(dataset: dict[str, Any], architecture: str, epochs: int) -> dict[str, Any]:
    return {
        "mode": "supervised",
        "student": {"architecture": architecture},
        "dataset": dataset,
        "training": {"epochs": epochs, "batch_size": 128, "lr": 0.05},
    }


TEACHER_BODIES = {
    # bench/reproduce.py's teachers: every training image, a fixed recipe.
    "fashion_all": teacher_body({"name": "fashion_mnist", "val_fraction": 0.017}, "cnn", 4),
    "mnist1d": teacher_body({"name": "mnist1d"}, "cnn1d", 20),
    "mnist_all": teacher_body({"name": "mnist"}, "cnn", 8),
    "mnist_source": teacher_body({"name": "mnist", "classes": SOURCE}, "cnn", 8),
}


@dataclass(frozen=True)
class Setting:
    mode: str
    teacher: str  # a key of TEACHER_BODIES
    student: str
    dataset: dict[str, Any]
    pool: bool  # the training images without labels are the unlabeled pool


SETTINGS = {
    "fashion-500": Setting(
        "distill",
        "fashion_all",
        "cnn_small",
        {"name": "fashion_mnist", "train_subset": 500, "val_fraction": 0.017},
        pool=False,
    ),
    "mnist1d": Setting("distill", "mnist1d", "cnn1d_small", {"name": "mnist1d"}, pool=False),
    "mnist-50-pool": Setting(
        "distill", "mnist_all", "cnn_small", {"name": "mnist", "train_subset": 50}, pool=True
    ),
    "mnist-td-10": Setting(
        "transfer_distill",
        "mnist_source",
        "cnn_small",
        {"name": "mnist", "classes": TARGET, "train_subset": 10},
        pool=True,
    ),
}


@dataclass(frozen=True)
class TableMethod:
    """A method's job sections, and what it needs of a setting."""

    regularizer: dict[str, Any]
    kd: dict[str, Any] = field(default_factory=dict)
    logits: bool = False  # reads the teacher's logits: refused where the classes differ
    pool: bool = False  # reads the unlabeled pool

    def fits(self, setting: Setting) -> bool:
        return (setting.mode == "distill" or not self.logits) and (setting.pool or not self.pool)


AUTO_KD = {"weight": "auto"}
TABLE_METHODS = {
    "scratch": TableMethod({"kind": "none"}),
    "kd": TableMethod({"kind": "kd"}, logits=True),
    "kd + pool": TableMethod({"kind": "kd"}, {"unlabeled": True}, logits=True, pool=True),
    "wkd-l": TableMethod({"kind": "none"}, {"kind": "wkd", **AUTO_KD}, logits=True),
    "ot": TableMethod({"kind": "ot"}),
    "ot + pool": TableMethod({"kind": "ot", "unlabeled": True}, pool=True),
    "ot + kd": TableMethod({"kind": "ot"}, AUTO_KD, logits=True),
    "ot + kd + pool": TableMethod({"kind": "ot", "unlabeled": True}, AUTO_KD, True, True),
    "wkd-f": TableMethod({"kind": "wkd_f"}),
}


def table_body(setting_name: str, method_name: str, point: str, seed: int) -> dict[str, Any]:
    """The job: what a user names (mode, models, data, the term and its switches), with
    the point's "auto" ratios where it is not the defaults."""
    setting, method = SETTINGS[setting_name], TABLE_METHODS[method_name]
    body: dict[str, Any] = {
        "mode": setting.mode,
        "teacher": {
            "architecture": TEACHER_BODIES[setting.teacher]["student"]["architecture"],
            "checkpoint": "teacher",  # the file given to the trainer
        },
        "student": {"architecture": setting.student},
        "dataset": dict(setting.dataset),
        "regularizer": dict(method.regularizer),
        "kd": dict(method.kd),
        "training": {"seed": seed},
    }
    if method_name == "scratch":
        body["mode"] = "supervised"
        del body["teacher"], body["kd"]
        return body
    if point != "defaults":
        factor = POINTS[point]
        if body["regularizer"]["kind"] != "none":
            body["regularizer"]["auto_ratio"] = factor * _ratio(body["regularizer"]["kind"])
        if body["kd"].get("weight") == "auto":
            body["kd"]["auto_ratio"] = factor * LOGIT_AUTO_RATIO
    return body


def _ratio(kind: str) -> float:
    return LOGIT_AUTO_RATIO if kind == "kd" else REPRESENTATION_AUTO_RATIO


@dataclass(frozen=True)
class TableRow:
    setting: str
    method: str
    seed: int
    point: str

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.setting, self.method, self.seed, self.point)


def read_rows(results: Path) -> list[dict[str, Any]]:
    if not results.exists():
        return []
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip()]


def pending(
    settings: list[str], methods: list[str], seeds: list[int], done: list[dict[str, Any]]
) -> list[TableRow]:
    """What the file lacks, in order: every method's defaults seed by seed (the rows that
    choose the service's defaults), then each tuned method's other points on the first
    seed, then its chosen point on the other seeds once the first seed has chosen."""
    have = {(r["setting"], r["method"], r["seed"], r["point"]): r for r in done}
    chosen = [(s, m) for s in settings for m in methods if TABLE_METHODS[m].fits(SETTINGS[s])]
    todo = [TableRow(s, m, seed, "defaults") for seed in seeds for s, m in chosen]
    for s, m in chosen:
        if m == "scratch":
            continue
        search = [TableRow(s, m, seeds[0], point) for point in POINTS if point != "defaults"]
        todo += search
        point = best_point(have, s, m, seeds[0])
        if point not in (None, "defaults"):
            todo += [TableRow(s, m, seed, point) for seed in seeds[1:]]
    return [row for row in todo if row.key not in have]


def best_point(have: dict, setting: str, method: str, seed: int) -> str | None:
    """The point with the best validation accuracy on ``seed``, once every point has run."""
    runs = [have.get((setting, method, seed, point)) for point in POINTS]
    if any(run is None for run in runs):
        return None
    return max(runs, key=lambda run: run["val_accuracy"])["point"]


def train_teachers(names: set[str], quick: bool, teachers: Path) -> dict[str, Path]:
    """Each teacher trained once and kept on disk (between pieces too)."""
    teachers.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in sorted(names):
        path = teachers / f"{name}.safetensors"
        if not path.exists():
            body = TEACHER_BODIES[name]
            if quick:
                body = _quick(body) | {"training": body["training"] | {"epochs": 1}}
            with tempfile.TemporaryDirectory() as out:
                metrics = run_job(body, Path(out), None)
                (Path(out) / "student.safetensors").rename(path)
            print(f"teacher {name}: {metrics['test_accuracy']:.4f}", file=sys.stderr, flush=True)
        paths[name] = path
    return paths


def _quick(body: dict[str, Any]) -> dict[str, Any]:
    """A seconds-long version of a job: 20 images per class, 2 epochs."""
    return body | {
        "dataset": body["dataset"] | {"train_subset": 20},
        "training": body["training"] | {"epochs": 2},
    }


def run_table_row(row: TableRow, teacher: str, quick: bool) -> dict[str, Any]:
    """One job in a worker process (one torch thread): its line of the results file."""
    body = table_body(row.setting, row.method, row.point, row.seed)
    body = _quick(body) if quick else body
    metrics, spec = run_in_scratch(body, teacher)
    return {
        "setting": row.setting,
        "method": row.method,
        "seed": row.seed,
        "point": row.point,
        "test_accuracy": metrics["test_accuracy"],
        "val_accuracy": metrics["best_val_accuracy"],
        "collapsed": bool(metrics.get("collapsed")),
        "weights": {"regularizer": spec["regularizer"]["weight"], "kd": spec["kd"]["weight"]},
        "training": {k: spec["training"][k] for k in ("epochs", "batch_size", "lr")},
        "epochs_run": metrics["epochs_run"],
        "seconds": metrics["wall_seconds"],
        "body": body,
    }


def run_table(args: argparse.Namespace) -> None:
    """One piece: what the results file lacks, two rows at a time, until the budget."""
    started = time.monotonic()
    deadline = started + 60 * args.budget_minutes
    piece = time.strftime("%Y-%m-%dT%H:%M:%S")
    machine = f"{platform.node()} ({os.cpu_count()} cores, cpu)"
    settings = args.settings or list(SETTINGS)
    methods = args.methods or list(TABLE_METHODS)
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    teachers = train_teachers({SETTINGS[s].teacher for s in settings}, args.quick, args.teachers)
    ran = 0
    with ProcessPoolExecutor(max_workers=2) as workers:
        running: dict[Any, TableRow] = {}
        while True:
            done = read_rows(results)
            busy = {row.key for row in running.values()}
            todo = [row for row in pending(settings, methods, seeds, done) if row.key not in busy]
            while todo and len(running) < 2:
                row = todo.pop(0)
                if time.monotonic() + row_seconds(done, row.setting) > deadline:
                    todo = []
                    break
                teacher = str(teachers[SETTINGS[row.setting].teacher])
                running[workers.submit(run_table_row, row, teacher, args.quick)] = row
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                line = future.result() | {"piece": piece, "machine": machine}
                line["load_average"] = os.getloadavg()[0]
                with results.open("a") as out:
                    out.write(json.dumps(line) + "\n")
                ran += 1
                print(
                    f"{line['setting']} / {line['method']} / {line['point']} / seed "
                    f"{line['seed']}: {line['test_accuracy']:.4f} ({line['seconds']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    left = len(pending(settings, methods, seeds, read_rows(results)))
    minutes = (time.monotonic() - started) / 60
    print(f"piece {piece}: {ran} rows in {minutes:.1f} min; {left} left", file=sys.stderr)
    Path(args.results).with_suffix(".md").write_text(table_markdown(read_rows(results)) + "\n")


def row_seconds(done: list[dict[str, Any]], setting: str) -> float:
    """A row's expected wall time: the longest of its setting's so far (with margin)."""
    seconds = [r["seconds"] for r in done if r["setting"] == setting]
    return 1.2 * max(seconds) if seconds else FIRST_ROW_SECONDS


FAMILIES = ("kd", "ot", "wkd-l", "wkd-f", "ot + kd")  # simplest first: a tie goes left


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[int, dict]]:
    """(setting, method, point) -> seed -> row."""
    table: dict[tuple[str, str, str], dict[int, dict]] = {}
    for r in rows:
        table.setdefault((r["setting"], r["method"], r["point"]), {})[r["seed"]] = r
    return table


def tuned_point(table: dict, setting: str, method: str) -> str:
    """The point validation chose on the first seed (the defaults until every point ran)."""
    have = {(st, m, seed, pt): runs[seed] for (st, m, pt), runs in table.items() for seed in runs}
    return best_point(have, setting, method, FIRST_SEED) or "defaults"


def cell(runs: dict[int, dict], base: dict[int, dict] | None) -> str:
    """The paired difference to ``base`` on the seeds both have, with its 95% interval."""
    shared = sorted(set(runs) & set(base or {}))
    if not base or runs is base or not shared:
        return ""
    mean, half = paired(
        [runs[s]["test_accuracy"] for s in shared], [base[s]["test_accuracy"] for s in shared]
    )
    interval = f" [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}]" if half == half else ""
    return f"{100 * mean:+.1f}{interval}"


def mean_ranks(table: dict, mode: str) -> dict[str, float]:
    """Each family's mean rank over the mode's settings on the untuned defaults (1 is
    best; a family is its "+ pool" row where the setting has a pool)."""
    ranks: dict[str, list[float]] = {}
    for name, setting in SETTINGS.items():
        if setting.mode != mode:
            continue
        means = {}
        for family in ("scratch", *FAMILIES):
            method = f"{family} + pool" if setting.pool else family
            runs = table.get((name, method if method in TABLE_METHODS else family, "defaults"))
            if not runs:
                runs = table.get((name, family, "defaults"))
            if runs:
                means[family] = statistics.fmean(r["test_accuracy"] for r in runs.values())
        ordered = sorted(means.values(), reverse=True)
        for family, mean in means.items():
            ranks.setdefault(family, []).append(1 + ordered.index(mean))
    return {family: statistics.fmean(values) for family, values in ranks.items()}


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """Every setting's rows: the untuned defaults and the tuned point, each with its
    paired 95% interval against the student alone and against KD on the same seeds."""
    table = by_key(rows)
    pieces = sorted({r["piece"] for r in rows})
    machines = sorted({r["machine"] for r in rows})
    lines = [
        f"{len(rows)} runs, {sum(r['seconds'] for r in rows) / 3600:.2f} h of one-thread "
        f"jobs, two at a time, in {len(pieces)} pieces on {', '.join(machines)}. Points: "
        + ", ".join(f"{p} (auto ratios x{f:g})" for p, f in POINTS.items())
        + "; the tuned point is the best on the first seed's validation accuracy.",
        "",
    ]
    for name, setting in SETTINGS.items():
        if not any(key[0] == name for key in table):
            continue
        lines += [
            f"### {name}: {setting.mode}, {_data(setting)}",
            "",
            "| method | defaults: test % by seed | mean | vs alone | vs KD | at chance "
            "| tuned: point | mean | vs alone | vs KD | s/run |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        scratch = table.get((name, "scratch", "defaults"))
        kd_tuned = table.get((name, "kd", tuned_point(table, name, "kd")))
        for method in TABLE_METHODS:
            runs = table.get((name, method, "defaults"))
            if not runs:
                continue
            point = tuned_point(table, name, method)
            tuned = table.get((name, method, point), {})
            by_seed = [runs[s]["test_accuracy"] for s in sorted(runs)]
            lines.append(
                f"| {method} | {', '.join(f'{100 * a:.1f}' for a in by_seed)} | "
                f"{100 * statistics.fmean(by_seed):.1f} | {cell(runs, scratch)} | "
                f"{cell(runs, table.get((name, 'kd', 'defaults')))} | "
                f"{sum(r['collapsed'] for r in runs.values())}/{len(runs)} | "
                f"{point}{_partial(tuned, runs)} | "
                f"{100 * statistics.fmean(r['test_accuracy'] for r in tuned.values()):.1f} | "
                f"{cell(tuned, scratch)} | {cell(tuned, kd_tuned)} | "
                f"{statistics.fmean(r['seconds'] for r in runs.values()):.0f} |"
            )
        lines.append("")
    for mode in ("distill", "transfer_distill"):
        ranks = mean_ranks(table, mode)
        if any(family in FAMILIES for family in ranks):
            listed = ", ".join(f"{f} {r:.2f}" for f, r in sorted(ranks.items(), key=_rank))
            lines.append(
                f"Mean rank on the defaults, {mode}: {listed}; "
                f"default terms: **{default_family(ranks)}**."
            )
    return "\n".join(lines)


def _partial(tuned: dict, runs: dict) -> str:
    """Says so when the tuned point has run on fewer seeds than the defaults."""
    return "" if len(tuned) == len(runs) else f" ({len(tuned)}/{len(runs)} seeds)"


def _rank(item: tuple[str, float]) -> tuple[float, int]:
    family, rank = item
    return rank, (FAMILIES.index(family) if family in FAMILIES else -1)


def default_family(ranks: dict[str, float]) -> str:
    """The term family with the best mean rank (the simpler on a tie); never scratch."""
    return min((f for f in ranks if f in FAMILIES), key=lambda f: _rank((f, ranks[f])))


def _data(setting: Setting) -> str:
    dataset = setting.dataset
    subset = dataset.get("train_subset")
    return (
        f"{dataset['name']}"
        + (f" classes {dataset['classes']}" if dataset.get("classes") else "")
        + (f", {subset} labels per class" if subset else ", every training image")
        + (", the other training images as the pool" if setting.pool else "")
        + f", student {setting.student}, teacher {setting.teacher}"
    )


def write_markdown(args: argparse.Namespace) -> None:
    """The table from the committed rows, into its .md beside them and docs/reproduce.md."""
    text = table_markdown(read_rows(Path(args.results)))
    Path(args.results).with_suffix(".md").write_text(text + "\n")
    doc = REPRODUCE_MD.read_text()
    before, rest = doc.split(TABLE_BEGIN, 1)
    after = rest.split(TABLE_END, 1)[1]
    REPRODUCE_MD.write_text(f"{before}{TABLE_BEGIN}\n{text}\n{TABLE_END}{after}")
    print(text)


def add_sweeps_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=6, help="points per method")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=["ot", "fitnet", "at"])
    parser.add_argument(
        "--teacher-subset", type=int, help="teacher images per class (0: all; default: all)"
    )
    parser.add_argument("--teacher-epochs", type=int, help="default: reproduce.py's, 4")
    parser.add_argument("--quick", action="store_true", help="a tiny run for CI")
    parser.add_argument("--out", default="bench/out/equal_tuning")


def sweeps(args: argparse.Namespace) -> None:
    """OT, FitNets and AT at equal tuning through the service's sweeps."""
    teachers, chosen = experiments(quick=False)
    experiment = next(e for e in chosen if e.name == SETTING)
    teacher_body = teachers[experiment.teacher]
    if args.teacher_subset is not None:
        subset = {"train_subset": args.teacher_subset or None}
        teacher_body = teacher_body | {"dataset": teacher_body["dataset"] | subset}
    if args.teacher_epochs is not None:
        epochs = {"epochs": args.teacher_epochs}
        teacher_body = teacher_body | {"training": teacher_body["training"] | epochs}
    if args.quick:  # 30 images per class, 1 epoch: seconds per job
        teacher_body = teacher_body | {
            "dataset": teacher_body["dataset"] | {"train_subset": 30},
            "training": teacher_body["training"] | {"epochs": 1},
        }
        experiment.dataset = experiment.dataset | {"train_subset": 30}
        experiment.hand_tuned = experiment.hand_tuned | {"epochs": 1}
    methods = spaces(args.quick)
    report: dict[str, Any] = {
        "benchmark": "equal_tuning",
        "setting": experiment.name,
        "trials": args.trials,
        "seeds": args.seeds,
        "recipe": experiment.hand_tuned,
        "teacher": teacher_body,
        "load_average_start": os.getloadavg(),
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), torch_threads=1)
        embedded = build_embedded(settings, concurrency=2)
        embedded.executor.start()
        service = embedded.app.state.service
        try:
            teacher = run_service_job(service, teacher_body)
            report["teacher_test_accuracy"] = teacher.metrics["test_accuracy"]
            base = {
                "mode": experiment.mode,
                "teacher": {"architecture": "cnn", "checkpoint": teacher.id},
                "student": {"architecture": experiment.student},
                "dataset": experiment.dataset,
                "training": experiment.hand_tuned,
            }
            for method in args.methods or list(methods):
                body = {
                    "base": base | {"regularizer": {"kind": method}},
                    "space": methods[method],
                    "search": "tpe",
                    "trials": args.trials,
                    "parallel": 2,
                    "seeds": args.seeds,
                    "compare": ["scratch", "kd"],
                }
                sweep, wall = run_sweep(service, body)
                report["rows"].append(row(method, sweep, wall))
                print(f"{method}: {sweep['best']['metric']:.3f}", file=sys.stderr, flush=True)
        finally:
            embedded.executor.shutdown()
    report["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "equal_tuning.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "equal_tuning.md").write_text(markdown(report) + "\n")
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_sweeps_arguments(commands.add_parser("sweeps", help=sweeps.__doc__))
    table = commands.add_parser("table", help=run_table.__doc__)
    table.add_argument("--settings", nargs="+", choices=list(SETTINGS))
    table.add_argument("--methods", nargs="+", choices=list(TABLE_METHODS))
    table.add_argument("--seeds", type=int, default=3)
    table.add_argument("--budget-minutes", type=float, default=25.0)
    table.add_argument("--quick", action="store_true", help="20 images per class, 2 epochs")
    table.add_argument("--results", default=str(RESULTS))
    table.add_argument("--teachers", type=Path, default=TEACHERS)
    markdown_parser = commands.add_parser("markdown", help=write_markdown.__doc__)
    markdown_parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    {"sweeps": sweeps, "table": run_table, "markdown": write_markdown}[args.command](args)


if __name__ == "__main__":
    main()
