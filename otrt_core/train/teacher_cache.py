"""The frozen teacher's outputs, computed once and reused every epoch.

Without augmentation a training input's teacher features never change. With
it, the teacher must see the augmented view: the cache then keeps the
outputs of K augmented views per input, with each view's augmentation, and a
step draws one of the K views per input (as FKD does: Shen & Xing, "A Fast
Knowledge Distillation Framework for Visual Recognition", 2021), so the
student sees exactly the view whose outputs it is given. The cache holds only
the stages a term reads (and the logits) for the inputs the run draws from: on
the training device when they fit ``max_memory_bytes``, else in ``.npy``
memory maps under a directory when they fit ``max_disk_bytes``, else nowhere
(the teacher then runs every step, on the step's augmented batch).
With ``pooled``, maps are kept in the form the OT term reads them with
``spatial="pool"``: one mean per channel, ``(N, C)`` instead of ``(N, C, H,
W)``, so a step neither gathers nor pools the teacher's maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from otrt_core.data.registered import StreamedInputs

from otrt_core.models import StagedModel
from otrt_core.ot.features import spatial_mean
from otrt_core.train.augment import Augmenter, Params
from otrt_core.train.predict import input_batches


class TeacherCache:
    def __init__(
        self,
        features: dict[str, Tensor | np.ndarray],
        device: torch.device,
        view_params: Params | None = None,
    ) -> None:
        # name -> (K, N, ...): K views (1 without augmentation) of the N inputs, each a
        # tensor or a read-only memory map.
        self.features = features
        self.device = device
        self.view_params = view_params  # name -> (K, N, ...), the views' augmentations
        self.views = next(iter(features.values())).shape[0]
        self.on_disk = any(isinstance(values, np.ndarray) for values in features.values())
        self.shared = False  # read from a file another run wrote (:meth:`load`)

    @property
    def where(self) -> str:
        """What the ``start`` event says of it: ``memory``, ``disk`` or ``shared``."""
        return "shared" if self.shared else ("disk" if self.on_disk else "memory")

    def save(self, path: Path) -> None:
        """Writes an in-memory cache for other runs (atomically: a reader sees all or none)."""
        from otrt_core.train.checkpoint import save_checkpoint

        state = {"features": {name: values.cpu() for name, values in self.features.items()}}
        state["view_params"] = self.view_params
        save_checkpoint(path, state)

    @classmethod
    def load(cls, path: Path, device: torch.device) -> TeacherCache:
        """A cache :meth:`save` wrote, on ``device``."""
        from otrt_core.train.checkpoint import load_checkpoint

        state = load_checkpoint(path)
        features = {name: values.to(device) for name, values in state["features"].items()}
        cache = cls(features, device, state["view_params"])
        cache.shared = True
        return cache

    @classmethod
    def build(
        cls,
        teacher: StagedModel,
        inputs: Tensor | StreamedInputs,
        stages: set[str],
        device: torch.device,
        batch_size: int,
        max_memory_bytes: int,
        max_disk_bytes: int = 0,
        disk_dir: Path | None = None,
        pooled: bool = False,
        augmenter: Augmenter | None = None,
        view_params: list[Params] | None = None,
    ) -> TeacherCache | None:
        """The cache, or None when the features of every input fit neither bound.

        With an ``augmenter``, the teacher's outputs are kept for each of the views
        ``view_params`` describe (one dict of parameters for every input per view).
        """
        keep = sorted(stages | {"logits"})
        views = view_params or [None]

        def forward(batch: Tensor, params: Params | None) -> dict[str, Tensor]:
            batch = batch.to(device)
            if params is not None:
                batch = augmenter.apply(batch, params)
            out = teacher.forward_stages(batch)
            return {name: channel_means(out[name]) if pooled else out[name] for name in keep}

        with torch.no_grad():
            probe = forward(inputs[:1], _rows(views[0], slice(0, 1)))
        per_input = sum(probe[name][0].numel() * 4 for name in keep)  # float32
        size = len(views) * len(inputs) * per_input
        shapes = {name: (len(views), len(inputs), *probe[name].shape[1:]) for name in keep}
        if size <= max_memory_bytes:
            store = {name: torch.empty(shape, device=device) for name, shape in shapes.items()}
        elif disk_dir is not None and size <= max_disk_bytes:
            disk_dir.mkdir(parents=True, exist_ok=True)
            store = {
                name: np.lib.format.open_memmap(
                    disk_dir / f"{name}.npy", mode="w+", dtype=np.float32, shape=shape
                )
                for name, shape in shapes.items()
            }
        else:
            return None
        with torch.no_grad():
            for view, params in enumerate(views):
                start = 0
                for batch in input_batches(inputs, batch_size):  # streamed: by loader workers
                    rows, start = slice(start, start + len(batch)), start + len(batch)
                    out = forward(batch, _rows(params, rows))
                    for name in keep:
                        values = out[name].float()
                        if isinstance(store[name], np.ndarray):
                            store[name][view, rows] = values.cpu().numpy()
                        else:
                            store[name][view, rows] = values
        stacked = (
            {key: torch.stack([p[key] for p in view_params]) for key in view_params[0]}
            if view_params
            else None
        )
        return cls(store, device, stacked)

    def lookup(self, indices: Tensor, views: Tensor | None = None) -> dict[str, Tensor]:
        """Teacher features of the inputs at ``indices`` (of the inputs the cache was built
        on), each in its view ``views`` (view 0 when not given)."""
        if views is None:
            views = torch.zeros_like(indices)
        if not self.on_disk:
            indices, views = indices.to(self.device), views.to(self.device)
            return {name: values[views, indices] for name, values in self.features.items()}
        rows, chosen = indices.cpu().numpy(), views.cpu().numpy()
        return {
            name: torch.from_numpy(np.ascontiguousarray(values[chosen, rows])).to(
                self.device, non_blocking=True
            )
            for name, values in self.features.items()
        }

    def params(self, indices: Tensor, views: Tensor) -> Params:
        """The augmentations of the views ``views`` of the inputs at ``indices``."""
        indices, views = indices.cpu(), views.cpu()
        return {key: values[views, indices] for key, values in self.view_params.items()}


def _rows(params: Params | None, rows: slice) -> Params | None:
    return None if params is None else {key: value[rows] for key, value in params.items()}


def channel_means(x: Tensor) -> Tensor:
    """Maps ``(n, C, ...)`` as their per-channel means ``(n, C)``, as the OT term pools them;
    vectors as they are."""
    return x if x.dim() == 2 else spatial_mean(x, torch.float32)
