"""Warm inspector children: long-lived processes that parse untrusted files for the API.

A child (``python -m otrt_core.jobs.inspection``) imports torch once and
then answers one request per line on its stdin with one JSON verdict line, so a
submission that needs a model built (does this teacher fit that architecture?)
costs a build, not an interpreter start and a torch import (seconds under
load). Its limits are the cold child's:

- memory: the child's data segment is capped (``RLIMIT_DATA``) when it starts;
  a request that runs out of it answers ``too_large`` (or kills the child);
- time: the parent waits at most ``wall_seconds`` for each verdict, then kills
  the child and starts another for the next request;
- a child that has answered :data:`REQUESTS_PER_CHILD` requests, failed one, or
  died is replaced, so no state builds up from one file to the next.

Requests take a free child from a small pool (:data:`CHILDREN`: one started with
the API, another only when two requests overlap; the most recently used child
goes first); a request waits while all are busy. When the API exits, the
children read the end of their stdin and exit too.
"""

from __future__ import annotations

import json
import logging
import queue
import resource
import select
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("otrt.inspection")

CHILDREN = 2
REQUESTS_PER_CHILD = 200


@dataclass(frozen=True)
class ChildLimits:
    data_bytes: int  # the child's data segment
    wall_seconds: float  # per request, enforced by the parent


class Child:
    """One warm inspector process."""

    def __init__(self, limits: ChildLimits) -> None:
        def limit_child() -> None:
            resource.setrlimit(resource.RLIMIT_DATA, (limits.data_bytes, limits.data_bytes))

        self.limits, self.answered = limits, 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otrt_core.jobs.inspection"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=limit_child,
        )

    def ask(self, arguments: list[str]) -> dict[str, Any] | None:
        """The child's verdict on ``arguments``; one that says so when it ran out of time
        (the child is killed); None when the child is dead (:meth:`died`)."""
        try:
            self.process.stdin.write(json.dumps(arguments) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        ready, _, _ = select.select([self.process.stdout], [], [], self.limits.wall_seconds)
        if not ready:
            self.kill()
            return {"error": "the upload could not be inspected in time"}
        line = self.process.stdout.readline()
        if not line:  # dead: killed by the kernel for memory, say
            return None
        self.answered += 1
        return json.loads(line)

    def died(self) -> dict[str, Any]:
        """The verdict on the request a child died on."""
        code = self.process.wait()
        log.warning("an inspector child ended with exit code %s", code)
        if code < 0:  # killed by a signal: out of memory
            return {"error": "reading the upload needs more memory than allowed", "too_large": True}
        return {"error": "the upload could not be read"}

    @property
    def usable(self) -> bool:
        return self.process.poll() is None and self.answered < REQUESTS_PER_CHILD

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class Inspectors:
    """A pool of warm children with the same limits."""

    def __init__(self, limits: ChildLimits, size: int = CHILDREN) -> None:
        self.limits = limits
        self.idle: queue.LifoQueue[Child | None] = queue.LifoQueue()  # warm ones on top
        for _ in range(size):
            self.idle.put(None)  # a slot: its child starts when first needed

    def start_one(self) -> None:
        """Starts a child now (it imports torch meanwhile), so that the first request
        does not wait for it."""
        child = self.idle.get()
        self.idle.put(child if child is not None else Child(self.limits))

    def ask(self, arguments: list[str]) -> dict[str, Any]:
        """A free child's verdict on ``arguments`` (waiting for one while all are busy)."""
        child = self.idle.get()
        try:
            if child is None or not child.usable:
                if child is not None:
                    child.kill()
                child = Child(self.limits)
            verdict = child.ask(arguments)
            if verdict is None and child.answered:  # it died between requests: not this one's
                child.kill()
                child = Child(self.limits)
                verdict = child.ask(arguments)
            if verdict is None:
                verdict = child.died()
            if "error" in verdict:  # what failed may have left the child unwell
                child.kill()
                child = None
            return verdict
        finally:
            self.idle.put(child)


_pools: dict[ChildLimits, Inspectors] = {}
_pools_lock = threading.Lock()


def inspectors(limits: ChildLimits) -> Inspectors:
    """The process's pool for ``limits`` (one per distinct limits)."""
    with _pools_lock:
        if limits not in _pools:
            _pools[limits] = Inspectors(limits)
        return _pools[limits]
