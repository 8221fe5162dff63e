"""Gathering a batch of rows onto the training device without stalling it.

- Data already on the device (the usual case, ``Limits.device_data``): index it there.
- Data on the host, training on CUDA: the rows are gathered into one of two
  pinned staging buffers and copied with ``non_blocking=True``, so the copy is
  a DMA that overlaps the device's work. A CUDA event per buffer keeps a buffer
  from being refilled while its previous copy is still in flight (the host
  waits only if it runs two batches ahead of the device).
- On the CPU: plain indexing.
"""

from __future__ import annotations

import torch
from torch import Tensor


class BatchGatherer:
    def __init__(self, source: Tensor, device: torch.device, max_rows: int) -> None:
        self.source, self.device = source, device
        self.staged = source.device.type == "cpu" and device.type == "cuda"
        if self.staged:
            shape = (max_rows, *source.shape[1:])
            self.buffers = [torch.empty(shape, dtype=source.dtype).pin_memory() for _ in range(2)]
            self.copied: list[torch.cuda.Event | None] = [None, None]
            self.turn = 0

    def __call__(self, indices: Tensor) -> Tensor:
        if not self.staged:
            return self.source[indices.to(self.source.device)].to(self.device)
        slot = self.turn
        self.turn = 1 - slot
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # its last copy has left the buffer
        staging = self.buffers[slot][: len(indices)]
        torch.index_select(self.source, 0, indices.cpu(), out=staging)
        batch = staging.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.copied[slot] = event
        return batch


def seeded(*seeds: int) -> torch.Generator:
    """A CPU generator determined by ``seeds``: batch order needs no saved RNG state."""
    value = 0
    for seed in seeds:
        value = (value * 1_000_003 + seed) % (2**63 - 1)
    return torch.Generator().manual_seed(value)
