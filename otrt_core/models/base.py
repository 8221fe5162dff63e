"""What every model declares: its input shape, its named feature stages, its input view."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class StagedModel(nn.Module):
    """A classifier whose intermediate representations have names.

    ``forward_stages(x)`` returns every stage output keyed by name, in order
    (``stage1``, ``stage2``, ..., ``penultimate``), then ``logits``, so that
    layer pairs of the OT regularizer are named rather than hooked by hand.
    ``forward(x)`` returns the logits alone.

    ``x`` is a batch of the job's dataset as the trainer holds it (normalized
    with the dataset's statistics). A model that expects other inputs (another
    size, channel count or normalization: a job's ``input``) carries an
    ``input_view`` that maps the batch to what it expects; it has no
    parameters, so it adds nothing to the model's state dict. Sources
    implement ``stage_outputs`` on inputs already in the model's own view.
    """

    input_shape: tuple[int, ...]  # of the batches forward_stages takes
    stage_names: tuple[str, ...]
    # State-dict prefix of the classifier: replaced by transfer, kept out of L2-SP's anchor.
    head_prefix: str = "head."

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        # A submodule when set (no class default: nn.Module would never see it).
        view = self._modules.get("input_view")
        return self.stage_outputs(x if view is None else view(x))

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def keep(self, names: Sequence[str]) -> StagedModel:
        """Makes ``forward_stages`` return the layers ``names`` too. A zoo model returns
        every stage anyway; models with many layers (graphs, timm) return those asked for."""
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)["logits"]

    def is_head(self, parameter_name: str) -> bool:
        return parameter_name.startswith(self.head_prefix)
