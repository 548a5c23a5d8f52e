"""A diffusion transformer over patches of a signal with any number of axes (DiT, Peebles & Xie 2023).

``x: [b c *s]`` (``[b c t]`` 1-D, ``[b c m t]`` 2-D, ``[b c f h w]`` 3-D) is cut into patches of
``patch[i]`` along each axis, one token each, positioned by a rotary embedding over the patch grid
with one group of head channels per axis (RoPE, Su et al. 2021, Eq. 34, split across the axes), so
any grid size works without interpolating position tables. Each block is adaLN-Zero self-attention
and MLP with cross-attention to the text tokens in between (PixArt-alpha layout, Chen et al. 2023).
Modalities configure it (``mediadiff.video.dit.DiT`` is its 3-D case) and never import each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .conditioning import TextConditioned, TextConditioningConfig
from .pretrained import ConfigModel
from .rope import RotaryEmbedding, grid_positions
from .transformer import AdaLNZeroBlock, AdaLNZeroOut
from .utils import checkpoint

__all__ = ["DiffusionTransformer", "DiffusionTransformerConfig", "patchify", "unpatchify"]


def _patch_patterns(n_axes: int) -> tuple[str, str]:
    """einops sides for ``n_axes`` patched axes: ``"b c (g0 p0) (g1 p1)"`` and ``"b (g0 g1) (c p0 p1)"``."""
    grid, patch = [f"g{i}" for i in range(n_axes)], [f"p{i}" for i in range(n_axes)]
    signal = "b c " + " ".join(f"({g} {p})" for g, p in zip(grid, patch))
    tokens = f"b ({' '.join(grid)}) (c {' '.join(patch)})"
    return signal, tokens


def patchify(x: torch.Tensor, patch: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Cut ``x: [b c *s]`` into non-overlapping patches -> (tokens [b n c*prod(patch)], grid).

    ``grid[i] = s[i] // patch[i]``; tokens run over the grid in row-major order, which is the order
    of :func:`~mediadiff.nn.rope.grid_positions`. Every ``s[i]`` must be a multiple of ``patch[i]``.
    """
    grid = tuple(s // p for s, p in zip(x.shape[2:], patch))
    signal, tokens = _patch_patterns(len(patch))
    sizes = {f"p{i}": p for i, p in enumerate(patch)}
    return rearrange(x, f"{signal} -> {tokens}", **sizes), grid  # [b n c*prod(patch)]


def unpatchify(tokens: torch.Tensor, grid: tuple[int, ...], patch: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`patchify`: tokens [b n c*prod(patch)] over ``grid`` -> [b c *(grid * patch)]."""
    signal, flat = _patch_patterns(len(patch))
    sizes = {f"g{i}": g for i, g in enumerate(grid)} | {f"p{i}": p for i, p in enumerate(patch)}
    return rearrange(tokens, f"{flat} -> {signal}", **sizes)  # [b c *s]


@dataclass(frozen=True)
class DiffusionTransformerConfig(TextConditioningConfig):
    """A :class:`DiffusionTransformer`'s fields, after the text fields of :class:`TextConditioningConfig`."""

    in_channels: int = 8  # channels of x (e.g. the latent channels of an autoencoder)
    out_channels: int | None = None  # channels of the prediction; None: same as in_channels
    patch: tuple[int, ...] = (2,)  # patch size along each axis of x after the channel axis
    width: int = 384  # token width
    depth: int = 12  # number of blocks
    heads: int = 6  # attention heads (head dim = width / heads, split across the RoPE axes)
    mlp_ratio: float = 4.0  # MLP hidden width / width
    qk_norm: bool = True  # RMSNorm on queries and keys (stable bf16 training)
    rope_axes_dims: tuple[int, ...] | None = None  # head channels per patch axis; None: even split
    rope_theta: float = 10000.0  # RoPE base period
    gradient_checkpointing: bool = False  # recompute each block in the backward pass to save memory

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if len(self.patch) < 1 or any(p < 1 for p in self.patch):
            raise ValueError(f"{name}.patch must be positive ints, one per axis, got {self.patch}")
        if self.rope_axes_dims is not None and len(self.rope_axes_dims) != len(self.patch):
            raise ValueError(
                f"{name}.rope_axes_dims needs one entry per patch axis ({len(self.patch)}), got {self.rope_axes_dims}"
            )
        if self.width % self.heads:
            raise ValueError(f"{name}: width {self.width} is not divisible by heads {self.heads}")


class DiffusionTransformer(ConfigModel, TextConditioned):
    """DiT over ``len(config.patch)`` axes: ``forward(x [b c *s], t [b], context [b l d], context_mask [b l]) -> [b c' *s]``.

    The conditioning vector is ``time_embed(t) + context_embed(pool_context(context))``
    (:class:`~mediadiff.nn.conditioning.TextConditioned`); text tokens also enter every block by
    cross-attention. Each axis of ``s`` must be a multiple of the patch size along it
    (:meth:`size_multiples`). A modality subclasses it with its own config class and presets.
    """

    config_class = DiffusionTransformerConfig
    multiples_of = "the patch size"

    def __init__(self, config: DiffusionTransformerConfig | dict | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        patch_dim = math.prod(cfg.patch)  # values per patch and channel
        self.out_channels = cfg.out_channels or cfg.in_channels
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.patch_in = nn.Linear(cfg.in_channels * patch_dim, cfg.width)
        self.init_conditioning(cfg.width, cfg)
        self.rope = RotaryEmbedding(
            cfg.width // cfg.heads, n_axes=len(cfg.patch), axes_dims=cfg.rope_axes_dims, theta=cfg.rope_theta
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
        self.out = AdaLNZeroOut(cfg.width, cfg.width, self.out_channels * patch_dim)

    def size_multiples(self) -> tuple[int, ...]:
        """What each axis of x after the channel axis must be a multiple of: the patch size along it."""
        return tuple(self.config.patch)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [b c *s], t: [b] in [0, 1], context: [b l context_dim], context_mask: [b l] bool -> [b c' *s]."""
        cfg = self.config
        t, context_mask = self.check_inputs(x, t, context, context_mask)
        tokens, grid = patchify(x, cfg.patch)  # [b n c*prod(patch)]
        tokens = self.patch_in(tokens)  # [b n width]
        rope = self.rope(grid_positions(*grid, device=x.device))  # (cos, sin) [n dh/2]
        emb, context = self.condition(t, context, context_mask)  # [b width], [b l d]
        use_ckpt = self.gradient_checkpointing and self.training
        for block in self.blocks:
            tokens = checkpoint(
                block, tokens, emb, context, context_mask, rope, enabled=use_ckpt
            )  # [b n width]
        tokens = self.out(tokens, emb)  # [b n c'*prod(patch)]
        return unpatchify(tokens, grid, cfg.patch)  # [b c' *s]
