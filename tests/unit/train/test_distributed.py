"""training.gpus: the trainer under torchrun, 2 ranks on the CPU with gloo (no GPU here).

The runner the service uses (worker/runner.py) starts every run; what is checked:
the ranks' run equals one process's on the same global batches, rank 0 alone
speaks and writes, a stop reaches every rank and leaves no process, and a run
resumes from the checkpoint rank 0 wrote.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from otrt_core import protocol
from otrt_core.spec import resolve_spec
from worker.runner import END_OF_OUTPUT, TrainerInputs, TrainerProcess

pytestmark = pytest.mark.slow

SPEC = {
    "mode": "supervised",
    "student": {"architecture": "mlp_small"},
    "dataset": {"name": "digits"},
    "training": {"epochs": 3, "batch_size": 64, "lr": 0.05},
}
ONE_THREAD = {"OTRT_TORCH_THREADS": "1"}


def start(
    tmp_path: Path, name: str, gpus: int, epochs: int = 3, resume=False, batch_size: int = 64
) -> TrainerProcess:
    training = {"gpus": gpus, "epochs": epochs, "batch_size": batch_size}
    spec = SPEC | {"training": SPEC["training"] | training}
    spec_path = tmp_path / f"{name}.json"
    spec_path.write_text(json.dumps(spec))
    return TrainerProcess(
        TrainerInputs(spec_path),
        tmp_path / name,
        resume=resume,
        device="cpu",
        env=ONE_THREAD,
        processes=gpus,
    )


def events_of(trainer: TrainerProcess) -> list[dict]:
    events = []
    while (event := trainer.next_event(timeout=300)) is not END_OF_OUTPUT:
        assert event is not None, "the trainer said nothing for 5 minutes"
        events.append(event)
    return events


def losses(events: list[dict]) -> list[float]:
    return [e["train_loss"] for e in events if e["event"] == "epoch"]


def test_two_ranks_train_as_one_process_on_the_same_global_batches(tmp_path):
    one = start(tmp_path, "one", gpus=1)
    one_events = events_of(one)
    assert one.wait() == protocol.EXIT_OK
    two = start(tmp_path, "two", gpus=2)
    two_events = events_of(two)
    assert two.wait() == protocol.EXIT_OK

    (started,) = [e for e in two_events if e["event"] == "start"]
    assert started["world_size"] == 2
    # Rank 0 alone speaks: one line per event, as from one process.
    assert [e["event"] for e in two_events] == [e["event"] for e in one_events]
    # Each rank trains on half of every batch and DDP averages the gradients: the same
    # steps as one process on the whole batch, up to the order of float sums. A single
    # rank (or unsynchronized ones) would see half the data and drift at once.
    assert losses(two_events) == pytest.approx(losses(one_events), rel=1e-4)
    metrics = [json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("one", "two")]
    assert metrics[1]["test_accuracy"] == pytest.approx(metrics[0]["test_accuracy"], abs=0.003)
    assert (tmp_path / "two" / "student.onnx").exists()


def test_a_stop_reaches_every_rank_leaves_no_process_and_the_run_resumes(tmp_path):
    uninterrupted = start(tmp_path, "straight", gpus=2, epochs=10)
    straight = losses(events_of(uninterrupted))
    assert uninterrupted.wait() == protocol.EXIT_OK

    trainer = start(tmp_path, "stopped", gpus=2, epochs=10)
    while (event := trainer.next_event(timeout=300))["event"] != "epoch":
        assert event is not END_OF_OUTPUT
    group = trainer.pid  # torchrun leads the process group its ranks are in
    trainer.stop()
    assert trainer.wait() == protocol.EXIT_STOPPED
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)  # no rank, no torchrun left
    assert (tmp_path / "stopped" / protocol.CHECKPOINT).exists()

    resumed = start(tmp_path, "stopped", gpus=2, epochs=10, resume=True)
    events = events_of(resumed)
    assert resumed.wait() == protocol.EXIT_OK
    (started,) = [e for e in events if e["event"] == "start"]
    assert started["resumed"] and started["epoch"] >= 1
    history = json.loads((tmp_path / "stopped" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 11))
    assert [h["train_loss"] for h in history] == pytest.approx(straight, rel=1e-4)


def test_wkd_terms_and_auto_weights_train_under_two_ranks(tmp_path):
    """WKD-F's projector is a parameter of the term, which DDP wraps with the student;
    the auto weights come from rank 0 (a rank's own share would give another number)."""
    from otrt_core.train import RunOptions, train

    teacher = {"mode": "supervised", "student": {"architecture": "cnn"}, "dataset": SPEC["dataset"]}
    teacher_spec = resolve_spec(teacher | {"training": SPEC["training"]})
    train(teacher_spec, RunOptions(out_dir=tmp_path / "teacher", device="cpu"), lambda e: None)
    spec = {
        "mode": "distill",
        "teacher": {"architecture": "cnn", "checkpoint": "teacher"},
        "student": {"architecture": "cnn_small"},
        "dataset": SPEC["dataset"],
        "regularizer": {"kind": "wkd_f"},
        "kd": {"kind": "wkd", "weight": "auto"},
        "training": SPEC["training"] | {"gpus": 2, "epochs": 4},
    }
    spec_path = tmp_path / "wkd.json"
    spec_path.write_text(json.dumps(spec))
    inputs = TrainerInputs(spec_path, teacher=tmp_path / "teacher" / "student.safetensors")
    trainer = TrainerProcess(
        inputs, tmp_path / "wkd", resume=False, device="cpu", env=ONE_THREAD, processes=2
    )
    events = events_of(trainer)
    assert trainer.wait() == protocol.EXIT_OK
    (started,) = [e for e in events if e["event"] == "start"]
    assert started["world_size"] == 2
    assert set(started["weights"]) == {"regularizer.weight", "kd.weight"}
    written = json.loads((tmp_path / "wkd" / "spec.json").read_text())
    assert written["kd"]["weight"] == pytest.approx(started["weights"]["kd.weight"])
    assert written["regularizer"]["layers"][0]["teacher"] == "stage3"  # cnn's last map
    metrics = json.loads((tmp_path / "wkd" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.8 and not metrics["collapsed"]


def test_a_last_batch_shorter_than_the_ranks_trains_on_every_rank(tmp_path):
    """Global batches of n - 1 rows: the last holds one, cycled so that each of the two
    ranks has a row (an empty share made a NaN loss)."""
    from otrt_core.train.setup import load_data

    labeled = len(load_data(resolve_spec(SPEC), None).y_train)
    trainer = start(tmp_path, "short", gpus=2, epochs=2, batch_size=labeled - 1)
    events = events_of(trainer)
    assert trainer.wait() == protocol.EXIT_OK
    assert len(losses(events)) == 2 and all(math.isfinite(loss) for loss in losses(events))


def test_two_ranks_stream_a_registered_dataset_with_a_short_last_batch(tmp_path):
    """A registered dataset on the streamed path under 2 ranks: each rank's loader takes
    its share of every global batch, and a last batch of one row is cycled to both."""
    from otrt_core.data.convert import Request, convert
    from otrt_core.data.registered import job_rows
    from otrt_core.data.shard_cache import ShardCache
    from otrt_core.data.shard_reader import open_snapshot
    from tests.utils.images import image_tree

    image_tree(tmp_path / "shop", classes=3, per_class=12, sizes=(30, 60))
    snapshot_dir = tmp_path / "snapshot"
    source = (tmp_path / "shop").as_uri() + "/"
    convert(Request(source=source, allowed=[tmp_path.as_uri() + "/"]), snapshot_dir, lambda e: None)
    spec = {
        "mode": "supervised",
        "student": {"architecture": "cnn_small"},
        "dataset": {"name": "ds_test", "image_size": 16, "augment": "standard"},
        "training": {"epochs": 2, "lr": 0.05, "gpus": 2},
    }
    snapshot = open_snapshot(str(snapshot_dir), ShardCache(tmp_path / "cache", 1 << 30))
    labeled = len(job_rows(snapshot, resolve_spec(spec))[0].rows)
    spec["training"]["batch_size"] = labeled - 1  # the last global batch holds one row
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = ONE_THREAD | {"OTRT_MAX_DECODED_BYTES": "1", "OTRT_LOADER_WORKERS": "0"}
    trainer = TrainerProcess(
        TrainerInputs(spec_path, dataset_shards=str(snapshot_dir)),
        tmp_path / "out",
        resume=False,
        device="cpu",
        env=env,
        processes=2,
    )
    events = events_of(trainer)
    assert trainer.wait() == protocol.EXIT_OK, events[-3:]
    (started,) = [e for e in events if e["event"] == "start"]
    assert started["world_size"] == 2 and started["data_path"] == "streamed"
    assert len(losses(events)) == 2 and all(math.isfinite(loss) for loss in losses(events))


def test_otrt_train_of_a_two_gpu_spec_runs_two_ranks_as_the_worker_does(tmp_path):
    """`otrt train` by hand with training.gpus 2 relaunches itself under torchrun (it ran
    one process and said nothing before); its exit code is rank 0's."""
    import subprocess
    import sys

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC | {"training": SPEC["training"] | {"gpus": 2}}))
    command = [sys.executable, "-m", "otrt", "train", str(spec_path), "--out", str(tmp_path / "o")]
    done = subprocess.run(
        [*command, "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | ONE_THREAD,
    )
    assert done.returncode == protocol.EXIT_OK, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    (started,) = [e for e in events if e["event"] == "start"]
    assert started["world_size"] == 2
    assert len(losses(events)) == 3  # rank 0 alone speaks
