"""A trainer's child process runs at a lower priority than the service that starts it,
so that the API keeps its share of the cores while jobs train on the same host."""

from __future__ import annotations

import os
import sys

import pytest
from pydantic import ValidationError

from otrt_core.settings import Settings
from worker.runner import ChildProcess, niced

PRINT_NICENESS = "import json, os; print(json.dumps({'event': 'nice', 'value': os.nice(0)}))"


def test_a_child_started_niced_runs_that_much_nicer_than_its_parent(tmp_path):
    child = ChildProcess(
        [sys.executable, "-c", PRINT_NICENESS], tmp_path / "child.log", {}, preexec_fn=niced(5)
    )
    assert child.wait() == 0
    event = child.next_event(timeout=10)
    assert event is not None and event["value"] == min(19, os.nice(0) + 5)


def test_no_nice_leaves_the_child_as_its_parent():
    assert niced(0) is None


def test_the_setting_defaults_to_10_and_refuses_what_nice_cannot_be(monkeypatch):
    assert Settings().trainer_nice == 10
    monkeypatch.setenv("OTRT_TRAINER_NICE", "0")
    assert Settings().trainer_nice == 0
    monkeypatch.setenv("OTRT_TRAINER_NICE", "25")
    with pytest.raises(ValidationError, match="trainer_nice"):
        Settings()
