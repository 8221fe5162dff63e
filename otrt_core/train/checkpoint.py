"""Atomic training checkpoints and safe weight loading.

Checkpoints hold only tensors and plain containers, so they load with
``torch.load(weights_only=True)``: no user-controlled unpickling, ever.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from otrt_core.atomic import atomic_path
from otrt_core.errors import UserError

CHECKPOINT_LOC = ("teacher", "checkpoint")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as temp:
        torch.save(state, temp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def save_weights(path: Path, model: nn.Module) -> None:
    """The model's state dict as safetensors (contiguous CPU copies)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp))


def read_weights(path: Path) -> dict[str, Tensor]:
    """A state dict from safetensors or a PyTorch file, never unpickling objects."""
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable or unsafe file is the user's input error
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(
            "the checkpoint is neither safetensors nor a PyTorch state dict of tensors "
            f"(pickled objects other than tensors are refused, never unpickled): {reason}",
            CHECKPOINT_LOC,
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # an otrt training checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError("the checkpoint is not a state dict of tensors", CHECKPOINT_LOC)
    return state


def check_fits(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Raises ``UserError`` naming the first mismatched tensors, if any."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(shape)})"
        for k, shape in expected.items()
        if k in state and state[k].shape != shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else ""))
    if unexpected:
        problems.append(
            f"unexpected {', '.join(unexpected[:5])}" + (" …" if len(unexpected) > 5 else "")
        )
    if wrong:
        problems.append(f"wrong shapes: {', '.join(wrong[:5])}" + (" …" if len(wrong) > 5 else ""))
    if problems:
        raise UserError("the weights do not fit the architecture: " + "; ".join(problems))
