"""What every zoo model declares: its input shape and its named feature stages."""

from __future__ import annotations

from torch import Tensor, nn


class StagedModel(nn.Module):
    """A classifier whose intermediate representations have names.

    ``forward_stages(x)`` returns every stage output keyed by name, in order
    (``stage1``, ``stage2``, ..., ``penultimate``), then ``logits``, so that
    layer pairs of the OT regularizer are named rather than hooked by hand.
    ``forward(x)`` returns the logits alone.
    """

    input_shape: tuple[int, ...]
    stage_names: tuple[str, ...]
    # State-dict prefix of the classifier: replaced by transfer, kept out of L2-SP's anchor.
    head_prefix: str = "head."

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)["logits"]

    def is_head(self, parameter_name: str) -> bool:
        return parameter_name.startswith(self.head_prefix)
