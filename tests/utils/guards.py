"""Skip or fail: what a test does when something it needs is missing here.

``OTRT_REQUIRE_SERVICES=1`` (set by .ci/run) turns every missing service,
dataset or browser into a failure; ``OTRT_REQUIRE_CUDA=1`` (to set on a GPU
machine) does the same for CUDA. Without them a test skips and says why.
"""

from __future__ import annotations

import os

import pytest


def missing(reason: str, *, flag: str = "OTRT_REQUIRE_SERVICES") -> None:
    """Skips the test, or fails it when ``flag`` is 1 (what is missing is required here)."""
    if os.environ.get(flag) == "1":
        pytest.fail(f"{reason} ({flag}=1 makes it mandatory)", pytrace=False)
    pytest.skip(reason)
