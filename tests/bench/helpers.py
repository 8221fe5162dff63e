"""What every benchmark smoke test does: check its data is here, run the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from otrt_core.data import DatasetUnavailable, load_arrays
from tests.utils.guards import missing
from tests.utils.processes import ROOT


def needs_dataset(name: str) -> None:
    """Skips (fails under OTRT_REQUIRE_SERVICES=1, as in CI) when ``name`` is not installed."""
    try:
        load_arrays(name)
    except DatasetUnavailable as error:  # .ci/run installs it; CI never skips this
        missing(str(error))


def run_bench(script: str, *args: str, cwd: Path | None = None) -> None:
    """``python bench/<script> args…`` to its end (in ``cwd``, default here); fails on a
    non-zero exit, with the end of what the script wrote to stderr."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )
    assert done.returncode == 0, f"bench/{script} exited {done.returncode}:\n{done.stderr[-4000:]}"
