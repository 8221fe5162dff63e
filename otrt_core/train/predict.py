"""A model's logits on a set of inputs, a batch at a time, in eval mode."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, device: torch.device, batch_size: int) -> Tensor:
    """``model``'s float32 logits on ``x`` ``(N, ...)``, on ``device``; the model's
    train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    logits = [model(x[i : i + batch_size].to(device)).float() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(logits)
