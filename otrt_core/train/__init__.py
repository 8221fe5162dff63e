"""The training engine: a resolved job spec in, a trained student out (docs/training.md).

The engine's names are loaded on first use (PEP 562): a process that needs one
light module of the package (the upload inspector reading a checkpoint with
``otrt_core.train.checkpoint``) does not pay for importing the whole trainer.
"""

import importlib
from typing import Any

from otrt_core.protocol import (
    CHECKPOINT,
    EXIT_DIVERGED,
    EXIT_INVALID,
    EXIT_MAX_RUNTIME,
    EXIT_OK,
    EXIT_STOPPED,
)

_ENGINE = {
    "Limits": "otrt_core.train.setup",
    "StreamOptions": "otrt_core.train.setup",
    "Diverged": "otrt_core.train.trainer",
    "RunOptions": "otrt_core.train.trainer",
    "TrainingStopped": "otrt_core.train.trainer",
    "train": "otrt_core.train.trainer",
}

__all__ = [
    "CHECKPOINT",
    "EXIT_DIVERGED",
    "EXIT_INVALID",
    "EXIT_MAX_RUNTIME",
    "EXIT_OK",
    "EXIT_STOPPED",
    *_ENGINE,
]


def __getattr__(name: str) -> Any:
    if name not in _ENGINE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_ENGINE[name]), name)
