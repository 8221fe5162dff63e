"""A run's training batches: one interface, two sources.

Each batch is a :class:`Batch`: the inputs on the device (normalized), the
labels of its labeled rows, and the row each input is (the labeled rows, then
the unlabeled ones, in one index space: what the teacher cache and the device
augmentations are keyed by). A :class:`BatchSource` gives an epoch's batches
from any batch on, in an order that is a function of (seed, epoch) alone:

- :class:`GatheredBatches`: inputs held in memory, gathered by row
  (:class:`BatchGatherer`), with an unlabeled batch drawn from the pool;
- :class:`StreamedBatches`: a registered dataset's loader
  (``otrt_core.data.registered.TrainStream``), decoded by its workers.

Gathering a batch of rows onto the training device without stalling it:

- Data already on the device (the usual case, ``Limits.device_data``): index it there.
- Data on the host, training on CUDA: the rows are gathered into one of two
  pinned staging buffers and copied with ``non_blocking=True``, so the copy is
  a DMA that overlaps the device's work. A CUDA event per buffer keeps a buffer
  from being refilled while its previous copy is still in flight (the host
  waits only if it runs two batches ahead of the device).
- On the CPU: plain indexing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch
from torch import Tensor

from otrt_core.data.streamed import to_device
from otrt_core.train.distributed import Group, share

if TYPE_CHECKING:
    from otrt_core.data.registered import PoolStream, TrainStream


class Batch(NamedTuple):
    inputs: Tensor  # on the device: the labeled rows, then the unlabeled ones
    labels: Tensor  # of the labeled rows (the first ``len(labels)`` inputs)
    rows: Tensor  # each input's row: labeled ones from 0, the pool's after them


class BatchSource(Protocol):
    def epoch(self, epoch: int, start: int, group: Group) -> Iterator[Batch]:
        """The batches of ``epoch`` from batch ``start`` on: this rank's share of each."""
        ...


@dataclass
class GatheredBatches:
    """Batches of inputs held in memory (on the device when they fit): each epoch's order a
    permutation seeded by (seed, epoch); with a pool, each batch also draws
    ``pool_batch`` of its rows, seeded by (seed, epoch, batch)."""

    gather_inputs: BatchGatherer  # labeled inputs, then the pool's
    gather_labels: BatchGatherer
    labeled: int
    pool: int  # unlabeled rows after the labeled ones (0: none drawn)
    pool_batch: int
    batch_size: int
    steps: int
    seed: int

    def epoch(self, epoch: int, start: int, group: Group) -> Iterator[Batch]:
        device = self.gather_inputs.source.device
        order = torch.randperm(self.labeled, generator=seeded(self.seed, epoch)).to(device)
        for batch in range(start, self.steps):
            labeled = share(order[batch * self.batch_size : (batch + 1) * self.batch_size], group)
            rows = labeled
            if self.pool:
                drawn = torch.randint(
                    self.pool, (self.pool_batch,), generator=seeded(self.seed, epoch, batch)
                )
                rows = torch.cat([labeled, share(drawn, group).to(device) + self.labeled])
            yield Batch(self.gather_inputs(rows), self.gather_labels(labeled), rows)


@dataclass
class StreamedBatches:
    """Batches from a registered dataset's loader: ``uint8`` copied without blocking and
    normalized on the device."""

    stream: TrainStream
    mean: Tensor
    std: Tensor
    device: torch.device
    batch_size: int
    steps: int
    pool: PoolStream | None = None  # a streamed registered pool: its draws join each batch
    pool_batch: int = 0

    def epoch(self, epoch: int, start: int, group: Group) -> Iterator[Batch]:
        mean, std = self.mean.to(self.device), self.std.to(self.device)  # once an epoch
        rank, world = group.rank, group.world
        labeled = self.stream.epoch(epoch, start, self.batch_size, rank, world)
        if self.pool is None:
            draws = itertools.repeat(None)
        else:
            draws = self.pool.epoch(epoch, start, self.steps, self.pool_batch, rank, world)
        for (x, y, rows), drawn in zip(labeled, draws, strict=False):  # draws: as many
            if drawn is not None:  # the pool's rows come after the labeled ones
                x, rows = (
                    torch.cat([x, drawn[0]]),
                    torch.cat([rows, drawn[2] + len(self.stream.part.rows)]),
                )
            yield Batch(
                to_device(x, self.device, mean, std),
                y.to(self.device, non_blocking=True),
                rows.to(self.device, non_blocking=True),
            )


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
