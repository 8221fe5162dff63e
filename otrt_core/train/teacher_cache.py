"""The frozen teacher's outputs, computed once and reused every epoch.

Valid because otrt applies no random augmentation: a training input's teacher
features never change. The cache holds only the stages a term reads (and the
logits), for the labeled and unlabeled training inputs, on the training device
when it fits ``max_bytes``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from otrt_core.models import StagedModel

DEFAULT_MAX_BYTES = 1 << 30


class TeacherCache:
    def __init__(self, features: dict[str, Tensor]) -> None:
        self.features = features  # name -> (N_train + N_unlabeled, ...)

    @classmethod
    def build(
        cls,
        teacher: StagedModel,
        inputs: Tensor,
        stages: set[str],
        device: torch.device,
        batch_size: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> TeacherCache | None:
        """The cache, or None when the stages of every input would exceed ``max_bytes``."""
        keep = stages | {"logits"}
        with torch.no_grad():
            probe = teacher.forward_stages(inputs[:1].to(device))
        per_input = sum(probe[name].numel() * probe[name].element_size() for name in keep)
        if per_input * len(inputs) > max_bytes:
            return None
        chunks: dict[str, list[Tensor]] = {name: [] for name in keep}
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                out = teacher.forward_stages(inputs[start : start + batch_size].to(device))
                for name in keep:
                    chunks[name].append(out[name])
        return cls({name: torch.cat(parts) for name, parts in chunks.items()})

    def lookup(self, indices: Tensor) -> dict[str, Tensor]:
        """Teacher features of the inputs at ``indices`` of the inputs the cache was built on."""
        return {name: values[indices] for name, values in self.features.items()}
