"""The frozen teacher's outputs, computed once and reused every epoch.

Valid because otrt applies no random augmentation: a training input's teacher
features never change. The cache holds only the stages a term reads (and the
logits) for the inputs the run draws from: on the training device when they
fit ``max_memory_bytes``, else in ``.npy`` memory maps under a directory when
they fit ``max_disk_bytes``, else nowhere (the teacher then runs every step).
With ``pooled``, maps are kept in the form the OT term reads them with
``spatial="pool"``: one mean per channel, ``(N, C)`` instead of ``(N, C, H,
W)``, so a step neither gathers nor pools the teacher's maps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from otrt_core.models import StagedModel
from otrt_core.ot.features import spatial_mean


class TeacherCache:
    def __init__(self, features: dict[str, Tensor | np.ndarray], device: torch.device) -> None:
        self.features = features  # name -> (N, ...), a tensor or a read-only memory map
        self.device = device
        self.on_disk = any(isinstance(values, np.ndarray) for values in features.values())

    @classmethod
    def build(
        cls,
        teacher: StagedModel,
        inputs: Tensor,
        stages: set[str],
        device: torch.device,
        batch_size: int,
        max_memory_bytes: int,
        max_disk_bytes: int = 0,
        disk_dir: Path | None = None,
        pooled: bool = False,
    ) -> TeacherCache | None:
        """The cache, or None when the features of every input fit neither bound."""
        keep = sorted(stages | {"logits"})

        def forward(batch: Tensor) -> dict[str, Tensor]:
            out = teacher.forward_stages(batch.to(device))
            return {name: channel_means(out[name]) if pooled else out[name] for name in keep}

        with torch.no_grad():
            probe = forward(inputs[:1])
        size = len(inputs) * sum(probe[name][0].numel() * 4 for name in keep)  # float32
        if size <= max_memory_bytes:
            store = {
                name: torch.empty((len(inputs), *probe[name].shape[1:]), device=device)
                for name in keep
            }
        elif disk_dir is not None and size <= max_disk_bytes:
            disk_dir.mkdir(parents=True, exist_ok=True)
            store = {
                name: np.lib.format.open_memmap(
                    disk_dir / f"{name}.npy",
                    mode="w+",
                    dtype=np.float32,
                    shape=(len(inputs), *probe[name].shape[1:]),
                )
                for name in keep
            }
        else:
            return None
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                out = forward(inputs[start : start + batch_size])
                for name in keep:
                    values = out[name].float()
                    if isinstance(store[name], np.ndarray):
                        store[name][start : start + len(values)] = values.cpu().numpy()
                    else:
                        store[name][start : start + len(values)] = values
        return cls(store, device)

    def lookup(self, indices: Tensor) -> dict[str, Tensor]:
        """Teacher features of the inputs at ``indices`` of the inputs the cache was built on."""
        if not self.on_disk:
            indices = indices.to(self.device)
            return {name: values[indices] for name, values in self.features.items()}
        rows = indices.cpu().numpy()
        return {
            name: torch.from_numpy(np.ascontiguousarray(values[rows])).to(
                self.device, non_blocking=True
            )
            for name, values in self.features.items()
        }


def channel_means(x: Tensor) -> Tensor:
    """Maps ``(n, C, ...)`` as their per-channel means ``(n, C)``, as the OT term pools them;
    vectors as they are."""
    return x if x.dim() == 2 else spatial_mean(x, torch.float32)
