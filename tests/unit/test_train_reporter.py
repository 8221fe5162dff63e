"""What `otrt train` shows on a terminal (a progress bar) and elsewhere (JSON lines)."""

import json

from otrt.train_command import Reporter


def test_json_lines_when_not_on_a_terminal(capsys):
    with Reporter(interactive=False) as emit:
        emit({"event": "start", "step": 0, "steps": 10})
    assert json.loads(capsys.readouterr().out) == {"event": "start", "step": 0, "steps": 10}


def test_a_terminal_gets_a_bar_and_one_line_per_epoch(capsys):
    with Reporter(interactive=True) as emit:
        emit({"event": "start", "step": 0, "steps": 10})
        emit(
            {
                "event": "epoch",
                "epoch": 1,
                "step": 5,
                "steps": 10,
                "train_loss": 0.5,
                "val_accuracy": 0.8,
            }
        )
        emit({"event": "done", "test_accuracy": 0.75})
    out = capsys.readouterr().out
    assert "epoch 1: train loss 0.5000, val accuracy 80.00%" in out
    assert '"test_accuracy": 0.75' in out
