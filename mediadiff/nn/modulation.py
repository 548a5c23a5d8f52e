"""Conditioning by scale and shift: adaLN(-Zero) for token sequences, AdaGN for feature maps."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mediadiff.diffusion.objectives import append_dims

from .utils import zero_module

__all__ = ["AdaGroupNorm", "AdaLNModulation", "group_norm", "modulate"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` with x: [b n d] and shift/scale: [b d] (DiT, Peebles & Xie 2023, Sec. 3.2)."""
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])  # [b n d]


class AdaLNModulation(nn.Module):
    """``emb: [b e] -> chunks`` of ``[b dim]`` modulation parameters: SiLU, Linear, zero-initialised.

    With ``chunks = 6`` (shift, scale, gate for attention and MLP) it is DiT's adaLN-Zero: gates start
    at zero, so every residual branch, and hence the whole block, starts as the identity.
    """

    def __init__(self, emb_dim: int, dim: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.proj = zero_module(nn.Linear(emb_dim, chunks * dim))

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """emb: [b e] -> ``chunks`` tensors of [b dim]."""
        return self.proj(F.silu(emb)).chunk(self.chunks, dim=-1)


def group_norm(channels: int, groups: int = 32, *, affine: bool = True) -> nn.GroupNorm:
    """GroupNorm with ``gcd(groups, channels)`` groups, so any channel count works (ADM uses 32)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-5, affine=affine)


class AdaGroupNorm(nn.Module):
    """GroupNorm whose scale and shift come from an embedding (ADM's AdaGN, Dhariwal & Nichol 2021, Sec. 3).

    ``AdaGN(h, y) = GroupNorm(h) * (1 + y_s) + y_b`` with ``(y_s, y_b) = Linear(SiLU(emb))``; works for
    feature maps of any rank ``[b c ...]``.
    """

    def __init__(self, channels: int, emb_dim: int, groups: int = 32) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups, affine=False)
        self.proj = nn.Linear(emb_dim, 2 * channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: [b c ...], emb: [b e] -> [b c ...]."""
        scale, shift = self.proj(F.silu(emb)).chunk(2, dim=-1)  # [b c] each
        return torch.addcmul(append_dims(shift, x.ndim), self.norm(x), 1 + append_dims(scale, x.ndim))
