"""Why a worker stops a trainer (or a converter) before it ends on its own."""

from __future__ import annotations

from enum import StrEnum

from otrt_core import protocol


class StopReason(StrEnum):
    CANCEL = "cancel"  # the user cancelled the job
    SHUTDOWN = "shutdown"  # the worker is stopping: checkpoint and requeue
    LEASE_LOST = "lease_lost"  # another executor owns the job now
    TIME_LIMIT = protocol.TIME_LIMIT  # the attempt outlived max_runtime_s and its grace
    PRUNED = "pruned"  # the job's sweep stopped it early (ASHA)
