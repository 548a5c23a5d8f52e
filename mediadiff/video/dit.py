"""Diffusion transformer over space-time patches (DiT, Peebles & Xie 2023) for video latents.

``[b c f h w]`` is cut into ``(pf, ph, pw)`` patches, one token each, positioned by a 3-D rotary
embedding over the (frame, row, column) patch grid (RoPE, Su et al. 2021, split across three
axes), so any grid size works without interpolating position tables. Each block is adaLN-Zero
self-attention and MLP with cross-attention to the text tokens in between (PixArt-alpha layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from mediadiff.nn import (
    AdaLNZeroBlock,
    AdaLNZeroOut,
    AttentionPool,
    ConfigModel,
    FixedStandardize,
    RotaryEmbedding,
    TimestepEmbedding,
    TokenAdapter,
    check_backbone_inputs,
    checkpoint,
    grid_positions,
    pool_context,
)

__all__ = ["PRESETS", "DiT", "DiTConfig"]


@dataclass(frozen=True)
class DiTConfig:
    in_channels: int = 8  # latent channels of the video autoencoder
    out_channels: int | None = None  # channels of the prediction; None: same as in_channels
    patch: tuple[int, int, int] = (1, 2, 2)  # (pf, ph, pw): patch size over frames, height, width
    width: int = 384  # token width
    depth: int = 12  # number of blocks
    heads: int = 6  # attention heads (head dim = width / heads, split across the 3 RoPE axes)
    mlp_ratio: float = 4.0  # MLP hidden width / width
    context_dim: int = 384  # text-encoder token width (384: all-MiniLM-L6-v2)
    qk_norm: bool = True  # RMSNorm on queries and keys (stable bf16 training)
    rope_axes_dims: tuple[int, int, int] | None = None  # head channels per (f, h, w) axis; None: even split
    rope_theta: float = 10000.0  # RoPE base period
    pooled_context_norm: bool = False  # standardise the pooled text by fitted buffers (nn.FixedStandardize)
    context_pool: str = "mean"  # text -> one vector: "mean" over tokens, or "attention" (nn.AttentionPool)
    context_pool_heads: int = 4  # learned queries of the attention pooling
    context_adapter_hidden: int = 0  # >0: a TokenAdapter (hidden width) on the text tokens first
    gradient_checkpointing: bool = False  # recompute each block in the backward pass to save memory

    def __post_init__(self) -> None:
        if self.context_pool not in ("mean", "attention"):
            raise ValueError(
                f"DiTConfig.context_pool must be 'mean' or 'attention', got {self.context_pool!r}"
            )
        if len(self.patch) != 3 or any(p < 1 for p in self.patch):
            raise ValueError(f"DiTConfig.patch must be three positive ints (pf, ph, pw), got {self.patch}")
        if self.width % self.heads:
            raise ValueError(f"DiTConfig: width {self.width} is not divisible by heads {self.heads}")


PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(width=64, depth=2, heads=4),  # for tests: head dim 16
    "S": DiTConfig(width=384, depth=12, heads=6),  # DiT-S sizes
    "B": DiTConfig(width=768, depth=12, heads=12),  # DiT-B sizes
}


class DiT(ConfigModel):
    """Space-time DiT: ``forward(x [b c f h w], t [b], context [b l d], context_mask [b l]) -> [b c' f h w]``.

    The conditioning vector is ``time_embed(t) + context_embed(pool_context(context))`` (pooled text
    in the adaLN path, as SD3 does); text tokens also enter every block by cross-attention. Each of
    f, h, w must be a multiple of the patch size along it. Build with ``DiT(DiTConfig(...))``,
    ``DiT(**fields)`` or ``DiT.from_preset("tiny" | "S" | "B", **overrides)``.
    """

    config_class = DiTConfig
    presets = PRESETS

    def __init__(self, config: DiTConfig | dict | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        pf, ph, pw = cfg.patch
        self.out_channels = cfg.out_channels or cfg.in_channels
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.patch_in = nn.Linear(cfg.in_channels * pf * ph * pw, cfg.width)
        self.time_embed = TimestepEmbedding(cfg.width)
        self.pooled_norm = FixedStandardize(cfg.context_dim) if cfg.pooled_context_norm else None
        self.context_adapter = (
            TokenAdapter(cfg.context_dim, cfg.context_adapter_hidden) if cfg.context_adapter_hidden else None
        )
        self.context_pool = (
            AttentionPool(cfg.context_dim, cfg.context_dim, cfg.context_pool_heads)
            if cfg.context_pool == "attention"
            else None
        )
        self.context_embed = nn.Sequential(
            nn.Linear(cfg.context_dim, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width)
        )
        self.rope = RotaryEmbedding(
            cfg.width // cfg.heads, n_axes=3, axes_dims=cfg.rope_axes_dims, theta=cfg.rope_theta
        )
        self.blocks = nn.ModuleList(
            AdaLNZeroBlock(
                cfg.width,
                cfg.heads,
                cfg.width,
                context_dim=cfg.context_dim,
                mlp_ratio=cfg.mlp_ratio,
                qk_norm=cfg.qk_norm,
            )
            for _ in range(cfg.depth)
        )
        self.out = AdaLNZeroOut(cfg.width, cfg.width, self.out_channels * pf * ph * pw)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [b c f h w], t: [b] in [0, 1], context: [b l context_dim], context_mask: [b l] bool -> [b c' f h w]."""
        cfg = self.config
        t, context_mask = check_backbone_inputs(
            "DiT", x, t, context, context_mask, ndim=5, channels=cfg.in_channels, context_dim=cfg.context_dim
        )
        pf, ph, pw = cfg.patch
        if any(s % p for s, p in zip(x.shape[2:], cfg.patch)):
            raise ValueError(
                f"DiT: frames, height, width {list(x.shape[2:])} must be multiples of the patch size {list(cfg.patch)}"
            )
        f, h, w = x.shape[2] // pf, x.shape[3] // ph, x.shape[4] // pw
        tokens = rearrange(x, "b c (f pf) (h ph) (w pw) -> b (f h w) (c pf ph pw)", pf=pf, ph=ph, pw=pw)
        tokens = self.patch_in(tokens)  # [b n width]
        rope = self.rope(grid_positions(f, h, w, device=x.device))  # (cos, sin) [n dh/2]
        emb = self.time_embed(t)  # [b width]
        if context is not None:
            if self.context_adapter is not None:
                context = self.context_adapter(context, context_mask)  # [b l d]
            pooled = pool_context(context, context_mask, self.context_pool, self.pooled_norm)  # [b d]
            emb = emb + self.context_embed(pooled)  # [b width]
        use_ckpt = self.gradient_checkpointing and self.training
        for block in self.blocks:
            tokens = checkpoint(
                block, tokens, emb, context, context_mask, rope, enabled=use_ckpt
            )  # [b n width]
        tokens = self.out(tokens, emb)  # [b n c'*pf*ph*pw]
        return rearrange(
            tokens, "b (f h w) (c pf ph pw) -> b c (f pf) (h ph) (w pw)", f=f, h=h, w=w, pf=pf, ph=ph, pw=pw
        )  # [b c' f h w]
