"""Transformer blocks: pre-norm (self-attention, cross-attention, MLP) and the adaLN-Zero variant of DiT."""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .modulation import AdaLNModulation, modulate
from .rope import Rope
from .utils import zero_module

__all__ = ["AdaLNZeroBlock", "AdaLNZeroOut", "FeedForward", "TransformerBlock"]


class FeedForward(nn.Sequential):
    """Linear, GELU (tanh approximation), Linear: [b n dim] -> [b n dim], hidden width ``mult * dim``."""

    def __init__(self, dim: int, mult: float = 4.0) -> None:
        hidden = int(dim * mult)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class TransformerBlock(nn.Module):
    """Pre-LN block ``x + SA(LN x)``, ``x + CA(LN x, context)``, ``x + MLP(LN x)`` (Vaswani et al. 2017;
    pre-norm as Xiong et al. 2020). Cross-attention exists when ``context_dim`` is set and runs when
    a context is passed, so the same block serves conditional and unconditional calls."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        context_dim: int | None = None,
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(dim) if context_dim else None
        self.cross = Attention(dim, heads, context_dim=context_dim, qk_norm=qk_norm) if context_dim else None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_ratio)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        rope: Rope | None = None,
    ) -> torch.Tensor:
        """x: [b n dim], context: [b l context_dim], context_mask: [b l] bool -> [b n dim]."""
        x = x + self.attn(self.norm1(x), rope=rope)
        if self.cross is not None and context is not None:
            x = x + self.cross(self.norm2(x), context, context_mask)
        return x + self.ff(self.norm3(x))


class AdaLNZeroBlock(nn.Module):
    """DiT block with adaLN-Zero (Peebles & Xie 2023, Sec. 3.2, Fig. 3) plus cross-attention to text.

    Self-attention and MLP see ``LN(x) * (1 + scale) + shift`` and are gated, with all six
    modulation vectors regressed from the embedding by a zero-initialised layer. Cross-attention
    sits between them, pre-LN and ungated, as in PixArt-alpha (Chen et al. 2023, Sec. 2.3); its output
    projection starts at zero, so the whole block is the identity at init.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        emb_dim: int,
        *,
        context_dim: int | None = None,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
    ) -> None:
        super().__init__()
        self.modulation = AdaLNModulation(emb_dim, dim, 6)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6) if context_dim else None
        self.cross = Attention(dim, heads, context_dim=context_dim, qk_norm=qk_norm) if context_dim else None
        if self.cross is not None:
            zero_module(self.cross.to_out)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, mlp_ratio)

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        rope: Rope | None = None,
    ) -> torch.Tensor:
        """x: [b n dim], emb: [b emb_dim], context: [b l context_dim], context_mask: [b l] -> [b n dim]."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(emb)  # [b dim] each
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1), rope=rope)
        if self.cross is not None and context is not None:
            x = x + self.cross(self.norm2(x), context, context_mask)
        return x + gate2[:, None] * self.ff(modulate(self.norm3(x), shift2, scale2))


class AdaLNZeroOut(nn.Module):
    """DiT's final layer: ``Linear(LN(x) * (1 + scale) + shift)``, modulation and linear zero-initialised."""

    def __init__(self, dim: int, emb_dim: int, out_dim: int) -> None:
        super().__init__()
        self.modulation = AdaLNModulation(emb_dim, dim, 2)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = zero_module(nn.Linear(dim, out_dim))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: [b n dim], emb: [b emb_dim] -> [b n out_dim]."""
        shift, scale = self.modulation(emb)  # [b dim] each
        return self.linear(modulate(self.norm(x), shift, scale))
