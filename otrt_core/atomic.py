"""The one way otrt writes a file that someone else may read: write aside, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".part"  # what a crash mid-write leaves behind (cleaned on server start)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary file beside ``target`` to write to.

    On success it is fsynced and renamed over ``target``: a reader never sees
    half a file and a crash never leaves a torn one. On failure it is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX
    )
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        with open(temp, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
