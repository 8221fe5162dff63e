"""What `otrt train` shows on a terminal (a progress bar) and elsewhere (JSON lines)."""

import json

from otrt.train_command import Reporter
from otrt_core import protocol

START = protocol.Start(
    epoch=0, epochs=2, step=0, steps=10, device="cpu", teacher_cache="off", resumed=False
)
EPOCH = protocol.Epoch(
    epoch=1,
    step=5,
    steps=10,
    train_loss=0.5,
    train_accuracy=0.7,
    val_loss=0.6,
    val_accuracy=0.8,
    ot_distance=None,
    lr=0.05,
    seconds=1.0,
)


def test_json_lines_when_not_on_a_terminal_parse_back_to_the_same_events(capsys):
    with Reporter(interactive=False) as emit:
        emit(START)
        emit(EPOCH)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"event": "start", **{k: v for k, v in vars(START).items()}}
    assert [protocol.parse_event(line) for line in lines] == [START, EPOCH]


def test_unknown_or_incomplete_lines_parse_to_nothing():
    assert protocol.parse_event({"event": "progress", "step": 1}) is None
    assert protocol.parse_event({"event": "epoch", "epoch": 1}) is None
    newer = protocol.event_line(EPOCH) | {"field_of_a_newer_trainer": 1}
    assert protocol.parse_event(newer) == EPOCH


def test_a_terminal_gets_a_bar_and_one_line_per_epoch(capsys):
    with Reporter(interactive=True) as emit:
        emit(START)
        emit(EPOCH)
        emit(protocol.Done(test_accuracy=0.75, best_val_accuracy=0.8, selected_epoch=1, seconds=2))
    out = capsys.readouterr().out
    assert "epoch 1: train loss 0.5000, val accuracy 80.00%" in out
    assert '"test_accuracy": 0.75' in out
