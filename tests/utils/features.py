"""Layer outputs that look like real ones, for OT tests."""

import torch


def relu_features(
    n: int,
    width: int,
    *,
    seed: int = 0,
    rank: int = 16,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(n, width) post-ReLU activations: correlated neurons, positive, far from zero.

    Real costs between such neurons sit in a narrow band well above zero, the
    hard case for entropic solvers (METHOD.md). Drawn on the CPU from ``seed``
    so that every device sees the same values.
    """
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, rank, generator=generator, dtype=torch.float64)
    mixing = torch.randn(rank, width, generator=generator, dtype=torch.float64) / rank**0.5
    offset = 0.5 + 0.3 * torch.randn(width, generator=generator, dtype=torch.float64)
    return torch.relu(latent @ mixing + offset).to(device=device, dtype=dtype)
