"""The warm inspector children: a verdict per request, and a fresh child after one that
ran over its time, died or failed (real processes, no fakes)."""

from __future__ import annotations

import os
import signal

import pytest
from safetensors.torch import save_file

from otrt_core.jobs.inspection import BASELINE_DATA_BYTES
from otrt_core.jobs.inspectors import ChildLimits, Inspectors
from otrt_core.models import build_model


@pytest.fixture
def fit(tmp_path) -> list[str]:
    """A request: do these weights fit mlp_small on 8x8 inputs?"""
    path = tmp_path / "teacher.safetensors"
    save_file(build_model("mlp_small", input_shape=(1, 8, 8)).state_dict(), path)
    return ["fit", str(path), "mlp_small", "[1, 8, 8]"]


def test_a_child_answers_many_requests_and_one_that_died_is_replaced(fit):
    pool = Inspectors(ChildLimits(BASELINE_DATA_BYTES + (64 << 20), 120.0), size=1)
    first = pool.ask(fit)
    assert first == {"misfit": None}
    child = pool.idle.queue[-1]
    assert pool.ask(fit) == first and pool.idle.queue[-1] is child  # warm: the same one
    os.kill(child.process.pid, signal.SIGKILL)  # as the kernel does to a child out of memory
    assert pool.ask(fit) == first  # a new child answers
    assert pool.idle.queue[-1] is not child and child.process.poll() is not None


def test_a_request_past_its_time_kills_the_child_and_the_next_gets_a_new_one(fit):
    pool = Inspectors(ChildLimits(BASELINE_DATA_BYTES + (64 << 20), 0.001), size=1)
    verdict = pool.ask(fit)  # the child is still importing torch
    assert verdict == {"error": "the upload could not be inspected in time"}
    assert pool.idle.queue[-1] is None  # killed: its slot starts a new child next time
    pool.limits = ChildLimits(pool.limits.data_bytes, 120.0)
    assert pool.ask(fit) == {"misfit": None}


def test_a_file_the_child_refuses_is_an_error_verdict(tmp_path):
    pool = Inspectors(ChildLimits(BASELINE_DATA_BYTES + (64 << 20), 120.0), size=1)
    junk = tmp_path / "teacher.pt"
    junk.write_bytes(b"not a checkpoint")
    verdict = pool.ask(["teacher", str(junk), "1000"])
    assert "error" in verdict and not verdict.get("too_large")
