"""The training engine: a resolved job spec in, a trained student out (docs/training.md)."""

from otrt_core.protocol import (
    CHECKPOINT,
    EXIT_DIVERGED,
    EXIT_INVALID,
    EXIT_MAX_RUNTIME,
    EXIT_OK,
    EXIT_STOPPED,
)
from otrt_core.train.setup import Limits
from otrt_core.train.trainer import Diverged, RunOptions, TrainingStopped, train

__all__ = [
    "CHECKPOINT",
    "EXIT_DIVERGED",
    "EXIT_INVALID",
    "EXIT_MAX_RUNTIME",
    "EXIT_OK",
    "EXIT_STOPPED",
    "Diverged",
    "Limits",
    "RunOptions",
    "TrainingStopped",
    "train",
]
