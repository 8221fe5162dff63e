"""Data-parallel training over several processes: torchrun's ranks, DDP, one voice.

A job with ``training.gpus: N`` runs its trainer under torchrun, one process
(rank) per device; on the CPU, N processes on the gloo backend. Every rank
builds the same run from the same spec and seed, then:

- rank ``r`` trains on the ``r``-th share of each global batch (the batch of
  ``training.batch_size`` drawn from the ``(seed, epoch)`` order, sliced
  ``r::N``), and DDP averages the gradients, so that a step is the step one
  process takes on the whole batch, up to float rounding, per-rank batch-norm
  statistics and per-rank augmentation draws;
- every regularizer, the OT term included, sees the rank's share of the batch:
  features are not gathered across ranks (docs/training.md says what that does);
- rank 0 alone speaks and writes: progress lines, checkpoints, outputs; the
  epoch's record (validation included) is rank 0's, sent to every rank, so that
  best-epoch selection and early stopping agree;
- a stop (SIGTERM, stdin closed, ``max_runtime_s``) is agreed on every
  :data:`STOP_EVERY` steps by one all-reduce, so that every rank stops after
  the same batch and rank 0's checkpoint holds everyone's state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

STOP_EVERY = 8  # steps between agreements on stopping (each one is a host sync)


@dataclass(frozen=True)
class Group:
    """This process's place among the ranks of one run."""

    rank: int = 0
    world: int = 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


def join(device: str) -> tuple[Group, str]:
    """Joins torchrun's process group when launched by it (``WORLD_SIZE`` > 1): NCCL on
    CUDA devices, gloo on the CPU. Returns the group and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    on_cuda = device != "cpu" and torch.cuda.is_available()
    if on_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if on_cuda else "gloo")
    return Group(rank, world), f"cuda:{local_rank}" if on_cuda else "cpu"


def leave(group: Group) -> None:
    if group.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


class Stages(nn.Module):
    """The student's stages as the module DDP wraps, with the term's parameters (a
    FitNets regressor, say) inside it too, so that their gradients are averaged as well."""

    def __init__(self, student: nn.Module, term: nn.Module) -> None:
        super().__init__()
        self.student, self.term = student, term

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.student.forward_stages(x)


def data_parallel(student: nn.Module, term: nn.Module, device: torch.device) -> nn.Module:
    """DDP over the student and the term (parameters broadcast from rank 0 now)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(Stages(student, term), device_ids=ids)


def share(indices: Tensor, group: Group) -> Tensor:
    """This rank's share of a global batch's indices (every ``world``-th one), from the
    batch cycled to at least ``world`` rows (:func:`at_least`)."""
    if group.world == 1:
        return indices
    return indices[at_least(len(indices), group.world, indices.device)][group.rank :: group.world]


def at_least(count: int, world: int, device: torch.device | None = None) -> Tensor:
    """Positions ``0..count-1``, cycled to ``world`` when ``count`` is smaller: a last
    batch shorter than the ranks gives every rank a row (as DistributedSampler pads),
    where an empty share would make a NaN loss."""
    return torch.arange(max(count, world), device=device) % max(count, 1)


def summed(values: Tensor, group: Group) -> Tensor:
    """``values`` summed over the ranks (a copy; ``values`` itself is untouched)."""
    total = values.clone()
    if group.world > 1:
        dist.all_reduce(total)
    return total


def agreed_stop(reason: str | None, group: Group, device: torch.device) -> str | None:
    """Every rank's view of whether to stop now: a signal anywhere beats the clock."""
    if group.world == 1:
        return reason
    code = torch.tensor([{"signal": 2, "max_runtime": 1}.get(reason, 0)], device=device)
    dist.all_reduce(code, op=dist.ReduceOp.MAX)
    return {2: "signal", 1: "max_runtime"}.get(int(code.item()))


def from_leader(value: Any, group: Group) -> Any:
    """Rank 0's ``value`` on every rank."""
    if group.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
