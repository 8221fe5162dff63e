"""How a trainer runs as several ranks on one host (``training.gpus``): under torchrun.

Torch-free: the worker's parent process and the CLI build the command without
importing torch.
"""

from __future__ import annotations

import os
import sys


def torchrun(processes: int) -> list[str]:
    """The command prefix that runs ``python -m otrt …`` as ``processes`` ranks on this
    host (torchrun, standalone); plain ``python`` for one."""
    if processes <= 1:
        return [sys.executable]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, f"--nproc-per-node={processes}", "--no-python", sys.executable]


def under_torchrun() -> bool:
    """Whether this process is one of torchrun's ranks."""
    return "WORLD_SIZE" in os.environ
