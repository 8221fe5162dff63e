"""The training engine: a resolved job spec in, a trained student out (docs/training.md)."""

from otrt_core.train.setup import Limits, SetupError
from otrt_core.train.trainer import CHECKPOINT, RunOptions, TrainingStopped, train

# Exit codes of `otrt train`, read by the service's executors.
EXIT_OK = 0
EXIT_INVALID = 2  # the spec or its inputs are wrong: retrying will not help
EXIT_STOPPED = 75  # stopped on request (SIGTERM) with a checkpoint: resume it
EXIT_MAX_RUNTIME = 124  # training.max_runtime_s ran out (a checkpoint is saved)

__all__ = [
    "CHECKPOINT",
    "EXIT_INVALID",
    "EXIT_MAX_RUNTIME",
    "EXIT_OK",
    "EXIT_STOPPED",
    "Limits",
    "RunOptions",
    "SetupError",
    "TrainingStopped",
    "train",
]
