"""Fixed standardisation of the pooled text embedding, fitted once on the training captions.

A sentence encoder's pooled vectors share a large common component and differ little between
antonyms: over Shapes captions, all-MiniLM-L6-v2's mean-pooled "a red square moving left" and
"... moving right" have cosine 0.979, and the direction words explain 5x less variance than the
colour words. Centring and scaling each feature (LeCun et al. 1998, "Efficient BackProp",
Sec. 4.3) removes the common component: a linear probe from these vectors to the direction, trained
with Adam at 3e-4, reached 100% after 400 steps on standardised vectors and 93.5% on raw ones.

Measured on the Shapes recipes it did *not* help the backbones: direction stayed at chance with or
without it (DiT 29% at 1200 steps either way; UNet3D 29% at 800 against 25%), because the backbones
ignored the direction words for another reason (training noise levels; see the Shapes recipes'
``--t-sampler``). Rerun with uniform t for longer, the UNet3D was still at 38/38/25/29% direction at
steps 1000/1200/1400/1600 (24-clip periodic evaluation), while the same U-Net fed clean class tokens
(``recipes/video/probe_class_tokens.py``) reached 79% by step 1000. It stays available
(``pooled_context_norm=True``, recipes' ``--pooled-norm``), off by default.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FixedStandardize"]


class FixedStandardize(nn.Module):
    """``(x - mean) / std`` per feature with buffers (saved with the weights, never trained).

    The identity until :meth:`fit` sets the statistics from a sample ``[n d]``.
    """

    def __init__(self, dim: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        """Set mean and std from ``x: [n d]`` (n >= 2)."""
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0] or x.shape[0] < 2:
            raise ValueError(
                f"FixedStandardize.fit: need [n >= 2, {self.mean.shape[0]}], got {tuple(x.shape)}"
            )
        self.mean.copy_(x.double().mean(0).float())
        self.std.copy_(x.double().std(0).float().clamp(min=self.eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [... d] -> [... d]."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
