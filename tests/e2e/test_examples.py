"""examples/: every spec is valid, and the story script runs against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from otrt_core.jobs.sweep_spec import SweepSpec, sweep_problems
from otrt_core.spec import resolve_spec
from tests.utils.processes import start_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", sorted((EXAMPLES / "specs").glob("*.json")), ids=lambda p: p.stem)
def test_every_example_spec_resolves(path):
    spec = resolve_spec(json.loads(path.read_text()))
    assert spec.metadata["example"]


@pytest.mark.parametrize("path", sorted((EXAMPLES / "sweeps").glob("*.json")), ids=lambda p: p.stem)
def test_every_example_sweep_is_valid(path):
    sweep = SweepSpec.model_validate(json.loads(path.read_text()))
    assert sweep_problems(sweep, max_jobs=256) == [] and sweep.base.metadata["example"]


@pytest.mark.slow
def test_the_story_script_runs_against_otrt_serve(tmp_path):
    process, http = start_server(tmp_path)
    try:
        story = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "story.py"),
                "--url",
                str(http.base_url),
                "--epochs",
                "3",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert story.returncode == 0, story.stdout + story.stderr
    assert "here," in story.stdout and "reported" in story.stdout
