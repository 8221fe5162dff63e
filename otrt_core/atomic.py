"""The one way otrt writes a file that someone else may read: write aside, fsync, rename."""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".part"  # what a crash mid-write leaves behind (cleaned on server start)
_WRITER = re.compile(r"~([^~/]+)~(\d+)~")


def writer() -> str:
    """Who writes a partial file, for its name: this host and process. The next start on
    this host removes what a dead process left at once, without waiting out the grace
    that protects a live upload (another replica's, or this host's other processes')."""
    return f"~{socket.gethostname()}~{os.getpid()}~"


def written_by_dead_process(name: str) -> bool:
    """Whether ``name`` is a partial file whose writer was a process of this host that
    is gone (a name with no writer, or another host's, is never judged here)."""
    found = _WRITER.search(name)
    if found is None or found[1] != socket.gethostname():
        return False
    try:
        os.kill(int(found[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary file beside ``target`` to write to.

    On success it is fsynced and renamed over ``target``: a reader never sees
    half a file and a crash never leaves a torn one. On failure it is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.{writer()}", suffix=PARTIAL_SUFFIX
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
