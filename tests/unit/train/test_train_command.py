"""`otrt train` as a process: JSON lines, exit codes, SIGTERM then --resume."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

OTRT = str(Path(sys.executable).parent / "otrt")


def write_spec(directory: Path, body: dict) -> Path:
    path = directory / "spec.json"
    path.write_text(json.dumps(body))
    return path


def otrt_train(spec: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [OTRT, "train", str(spec), "--out", str(spec.parent / "out"), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def supervised(epochs: int, **dataset) -> dict:
    return {
        "mode": "supervised",
        "student": {"architecture": "mlp"},
        "dataset": {"name": "digits", **dataset},
        "training": {"batch_size": 64, "epochs": epochs},
    }


def test_sigterm_saves_and_exits_75_then_resume_finishes(tmp_path):
    spec = write_spec(tmp_path, supervised(epochs=40))
    out = tmp_path / "out"
    process = subprocess.Popen(
        [OTRT, "train", str(spec), "--out", str(out)], stdout=subprocess.PIPE, text=True
    )
    for line in process.stdout:  # wait until training is under way
        if json.loads(line)["event"] == "epoch":
            break
    process.send_signal(signal.SIGTERM)
    remaining, _ = process.communicate(timeout=60)
    assert process.returncode == 75
    last = json.loads(remaining.strip().splitlines()[-1])
    assert (last["event"], last["reason"]) == ("stopped", "signal")
    assert (out / "checkpoint.pt").exists()

    resumed = otrt_train(spec, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert events[0]["event"] == "start" and events[0]["resumed"] is True
    done = events[0][
        "history"
    ]  # the epochs finished before the stop, for a parent that missed them
    assert [r["epoch"] for r in done] == list(range(1, events[0]["epoch"] + 1)) and done
    assert events[-1]["event"] == "done"
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 40


def test_a_bad_spec_exits_2_with_every_problem_located(tmp_path):
    body = {
        "mode": "distill",
        "student": {"architecture": "resnet19"},
        "dataset": {"name": "digits"},
    }
    result = otrt_train(write_spec(tmp_path, body))
    assert result.returncode == 2
    assert "error: teacher: mode 'distill' needs a teacher" in result.stderr
    assert "error: student.architecture: unknown architecture 'resnet19'" in result.stderr


def test_an_unreadable_teacher_exits_2_with_an_error_event(tmp_path):
    (tmp_path / "teacher.pt").write_bytes(b"not a checkpoint")
    body = {
        "mode": "distill",
        "teacher": {"architecture": "mlp", "checkpoint": "teacher.pt"},
        "student": {"architecture": "mlp_small"},
        "dataset": {"name": "digits"},
    }
    result = otrt_train(write_spec(tmp_path, body))
    assert result.returncode == 2
    event = json.loads(result.stdout.strip().splitlines()[-1])
    assert event == {
        "event": "error",
        "code": "invalid_input",
        "message": event["message"],
    }
    assert event["message"].startswith("teacher: the checkpoint is neither safetensors")


def test_a_dataset_file_beside_the_spec_trains(tmp_path):
    labels = np.arange(120) % 3
    inputs = np.random.default_rng(0).normal(size=(120, 40)) + labels[:, None]  # separable
    np.savez(tmp_path / "data.npz", x_train=inputs, y_train=labels)
    body = {**supervised(epochs=2, name="data.npz"), "student": {"architecture": "cnn1d_small"}}
    result = otrt_train(write_spec(tmp_path, body))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["num_classes"] == 3 and metrics["input_shape"] == [1, 40]


def test_an_internal_fault_is_not_reported_as_the_users_input(tmp_path, monkeypatch, capsys):
    """A bug of otrt's (a shape error, say) escapes as itself: the service sees a crash
    (internal_error), not an `invalid_input` event blaming the spec."""
    from otrt import train_command
    from otrt_core import train as engine

    def shape_bug(*_args, **_kwargs):
        raise ValueError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(engine, "train", shape_bug)
    spec = write_spec(
        tmp_path,
        {"mode": "supervised", "student": {"architecture": "mlp"}, "dataset": {"name": "digits"}},
    )
    with pytest.raises(ValueError, match="shapes"):
        train_command.run_train(spec, tmp_path / "out", False, "cpu", None, 1)
    assert '"event": "error"' not in capsys.readouterr().out
