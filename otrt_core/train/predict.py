"""A model's logits on a set of inputs, a batch at a time, in eval mode."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, device: torch.device, batch_size: int) -> Tensor:
    """``model``'s float32 logits on ``x`` ``(N, ...)``, on ``device``; the model's
    train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    logits = [model(inputs.to(device)).float() for inputs in input_batches(x, batch_size)]
    model.train(was_training)
    return torch.cat(logits)


def input_batches(x, batch_size: int) -> Iterator[Tensor]:
    """``x`` a batch at a time, in order: slices of a tensor, or a streamed split's own
    batches (``StreamedInputs.batches``: decoded by its loader workers)."""
    if hasattr(x, "batches"):
        yield from x.batches(batch_size)
        return
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]
