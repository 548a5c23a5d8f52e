"""A U-Net skeleton over 1, 2 or 3 axes: levels, resampling, skip connections, per-level attention.

The encoder-decoder with skip connections of Ronneberger et al. 2015 (U-Net, Fig. 1) in the form
diffusion models use (Ho et al. 2020, Appendix B; ADM, Dhariwal & Nichol 2021, Sec. 3): residual
blocks modulated by the timestep + pooled-text embedding (AdaGN, a FiLM layer, Perez et al. 2018),
a strided-conv downsampling between levels, nearest-neighbour + conv upsampling back, one skip per
encoder stage concatenated into the decoder, and attention layers at the levels a subclass picks.

:class:`UNet` holds the level/skip/resample logic; a modality subclasses it with ``dims`` (1 for
waveforms and 1-D latents ``[b c t]``, 2 for spectrograms ``[b c m t]``, 3 for video
``[b c f h w]``), a config class, and, where the defaults do not fit, the hooks that choose its
layers: :meth:`UNet.res_block`, :meth:`UNet.level_attention` (which attention at which level),
:meth:`UNet.attention_rope_theta` (rotary positions in the default attention layers),
:meth:`UNet.level_factor` (downsampling per axis between levels), :meth:`UNet.input_conv`,
:meth:`UNet.output_conv`, :meth:`UNet.input_channels`, :meth:`UNet.prepare_input` and
:meth:`UNet.finish_output` (e.g. a space-to-depth fold of the input and its inverse on the output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from .conditioning import TextConditioned, TextConditioningConfig
from .conv import Downsample, ResBlock, Upsample, conv_nd
from .modulation import group_norm
from .pretrained import ConfigModel
from .rope import RotaryEmbedding, grid_positions
from .transformer import TransformerBlock
from .utils import checkpoint, zero_module

__all__ = ["AxisAttention", "UNet", "UNetConfig", "UNetStage"]


class AxisAttention(nn.Module):
    """A residual transformer over some axes of a feature map ``[b c *s]``; the other axes fold into the batch.

    Tokens are the positions along ``axes`` (all axes by default), one sequence per position of the
    remaining axes: e.g. over ``(h, w)`` of ``[b c f h w]`` it is per-frame spatial attention, over
    ``(f,)`` per-pixel temporal attention (the factorised space-time attention of Ho et al. 2022,
    "Video Diffusion Models", Sec. 3), over ``(t,)`` of ``[b c t]`` plain 1-D attention. GroupNorm,
    linear in, :class:`TransformerBlock` (self-attention, cross-attention to ``context`` when
    ``context_dim`` is set, MLP), zero-initialised linear out: the spatial transformer of latent
    diffusion (Rombach et al. 2022, Sec. 3.3), which starts as the identity.

    ``rope_theta`` (None: off) rotates queries and keys of the self-attention by their position
    along ``axes`` (RoPE, Su et al. 2021, Eq. 34, one group of head channels per attended axis), so
    attention sees relative positions at any length. Subclasses add other position features
    through :meth:`init_positions` / :meth:`embed_positions`.
    """

    def __init__(
        self,
        dims: int,
        channels: int,
        head_dim: int,
        *,
        axes: tuple[int, ...] | None = None,
        context_dim: int | None = None,
        mlp_ratio: float = 4.0,
        groups: int = 32,
        rope_theta: float | None = None,
    ) -> None:
        super().__init__()
        axes = tuple(range(dims)) if axes is None else tuple(sorted(axes))
        if not axes or any(a < 0 or a >= dims for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"AxisAttention: axes must be distinct axes in [0, {dims}), got {axes}")
        self.axes = axes
        self._names = [f"s{i}" for i in range(dims)]  # the axes of x after the channel axis
        self._folded = [n for i, n in enumerate(self._names) if i not in axes]
        signal = "b c " + " ".join(self._names)
        tokens = f"({' '.join(['b', *self._folded])}) ({' '.join(self._names[a] for a in axes)}) c"
        self._to_tokens, self._from_tokens = f"{signal} -> {tokens}", f"{tokens} -> {signal}"
        self.norm = group_norm(channels, groups)
        self.proj_in = nn.Linear(channels, channels)
        self.init_positions(channels)
        self.block = TransformerBlock(
            channels, channels // head_dim, context_dim=context_dim, mlp_ratio=mlp_ratio, qk_norm=True
        )
        self.rope = (
            None if rope_theta is None else RotaryEmbedding(head_dim, n_axes=len(axes), theta=rope_theta)
        )
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def init_positions(self, channels: int) -> None:
        """Build position layers (called between ``proj_in`` and ``block``); none by default."""

    def embed_positions(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Add position features to the tokens ``y: [b' n c]`` of ``x: [b c *s]``; the identity by default."""
        return y

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [b c *s], context: [b l d], context_mask: [b l] -> [b c *s]."""
        sizes = dict(zip(self._names, x.shape[2:]))
        y = rearrange(self.norm(x), self._to_tokens)  # [b*folded n c]
        if context is not None and self.block.cross is not None and self._folded:
            r = math.prod([sizes[n] for n in self._folded])  # sequences per sample (list: compile traces it)
            context = repeat(context, "b l d -> (b r) l d", r=r)  # [b*r l d]
            if context_mask is not None:
                context_mask = repeat(context_mask, "b l -> (b r) l", r=r)  # [b*r l]
        y = self.embed_positions(self.proj_in(y), x)  # [b*folded n c]
        rope = None
        if self.rope is not None:
            grid = grid_positions(*(x.shape[2 + a] for a in self.axes), device=x.device)  # [n axes]
            rope = self.rope(grid)  # (cos, sin) [n dh/2]
        y = self.proj_out(self.block(y, context, context_mask, rope))  # [b*folded n c]
        return x + rearrange(y, self._from_tokens, **sizes)  # [b c *s]


class UNetStage(nn.ModuleList):
    """Layers applied in order, each given what it takes (ADM's ``TimestepEmbedSequential``):
    a :class:`ResBlock` the embedding, an :class:`AxisAttention` the text tokens, others ``x`` alone."""

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x: [b c *s], emb: [b e], context: [b l d], context_mask: [b l] -> [b c' *s']."""
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AxisAttention):
                x = layer(x, context, context_mask)
            else:  # Downsample, Upsample
                x = layer(x)
        return x


@dataclass(frozen=True)
class UNetConfig(TextConditioningConfig):
    """A :class:`UNet`'s fields, after the text fields of :class:`TextConditioningConfig`. A modality's
    config subclasses it, adds its own fields and names its per-level flags in ``level_flags``."""

    level_flags: ClassVar[tuple[str, ...]] = ("attention_levels",)  # tuples with one flag per level
    in_channels: int = (
        1  # channels of x (1: a waveform or a spectrogram; the latent channels of an autoencoder)
    )
    out_channels: int | None = None  # channels of the prediction; None: same as in_channels
    channels: int = 64  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 4)  # width of each level = channels * mult
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attention_levels: tuple[bool, ...] = (False, True, True)  # self- + cross-attention over all positions
    head_dim: int = 32  # channels per attention head
    mlp_ratio: float = 4.0  # hidden width of attention blocks' MLP / width
    norm_groups: int = 32  # GroupNorm groups (gcd with the channel count)
    dropout: float = 0.0  # dropout inside residual blocks
    gradient_checkpointing: bool = False  # recompute each stage in the backward pass to save memory

    def __post_init__(self) -> None:
        super().__post_init__()
        name, levels = type(self).__name__, len(self.channel_mult)
        if levels < 1 or any(m < 1 for m in self.channel_mult):
            raise ValueError(f"{name}.channel_mult must be positive ints, got {self.channel_mult}")
        for flags in self.level_flags:
            if len(getattr(self, flags)) != levels:
                raise ValueError(
                    f"{name}.{flags} needs one flag per level ({levels}), got {getattr(self, flags)}"
                )
        for mult in self.channel_mult:
            if (self.channels * mult) % self.head_dim:
                raise ValueError(
                    f"{name}: level width {self.channels * mult} is not divisible by head_dim {self.head_dim}"
                )


class UNet(ConfigModel, TextConditioned):
    """U-Net skeleton: ``forward(x [b c *s], t [b], context [b l d], context_mask [b l]) -> [b c' *s]``.

    A subclass sets ``dims``, ``config_class`` (:class:`UNetConfig` or a subclass of it) and
    ``presets``. Level ``i`` has width ``channels * channel_mult[i]``; between levels ``i`` and
    ``i + 1`` the signal is downsampled by :meth:`level_factor` ``(i)`` per axis (and upsampled by
    it on the way back), so every axis must be a multiple of :meth:`size_multiples`. Every encoder
    stage's output is a skip, concatenated into the decoder stage at the same resolution. The
    embedding ``time_embed(t) + context_embed(pool_context(context))``
    (:class:`~mediadiff.nn.conditioning.TextConditioned`) modulates every residual block; without
    a context the model runs unconditionally (time embedding only, no cross-attention).
    """

    dims: ClassVar[int] = 0  # number of axes of x after the channel axis: 1, 2 or 3
    config_class = UNetConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        if self.dims not in (1, 2, 3):
            raise TypeError(f"{type(self).__name__}: a UNet subclass sets dims = 1, 2 or 3, got {self.dims}")
        cfg = self.config
        ch = cfg.channels
        emb_dim = 4 * ch
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.init_conditioning(emb_dim, cfg)
        widths = [ch * m for m in cfg.channel_mult]
        last = len(widths) - 1
        self.conv_in = self.input_conv(self.input_channels(), ch)
        self.down = nn.ModuleList()
        skips = [ch]
        cur = ch
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                self.down.append(
                    UNetStage([self.res_block(cur, width, emb_dim), *self.level_attention(width, level)])
                )
                cur = width
                skips.append(cur)
            if level != last:
                self.down.append(UNetStage([Downsample(self.dims, cur, factor=self.level_factor(level))]))
                skips.append(cur)
        self.mid = UNetStage(
            [
                self.res_block(cur, cur, emb_dim),
                *self.level_attention(cur, last),
                self.res_block(cur, cur, emb_dim),
            ]
        )
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            for i in range(cfg.num_res_blocks + 1):
                layers = [
                    self.res_block(cur + skips.pop(), width, emb_dim),
                    *self.level_attention(width, level),
                ]
                cur = width
                if level != 0 and i == cfg.num_res_blocks:
                    layers.append(Upsample(self.dims, cur, factor=self.level_factor(level - 1)))
                self.up.append(UNetStage(layers))
        self.norm_out = group_norm(cur, cfg.norm_groups)
        self.conv_out = self.output_conv(cur, cfg.out_channels or cfg.in_channels)

    # --- hooks: what a modality chooses -------------------------------------------------------

    def input_channels(self) -> int:
        """Channels ``conv_in`` takes: ``in_channels``, plus any that :meth:`prepare_input` appends."""
        return self.config.in_channels

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """x: [b c *s] -> what ``conv_in`` reads; x itself by default."""
        return x

    def finish_output(self, y: torch.Tensor) -> torch.Tensor:
        """What ``conv_out`` wrote -> the prediction (the inverse of :meth:`prepare_input`'s reshaping); y by default."""
        return y

    def input_conv(self, in_channels: int, out_channels: int) -> nn.Module:
        """The first convolution: ``conv_nd(dims, ..., 3, padding=1)`` by default."""
        return conv_nd(self.dims, in_channels, out_channels, 3, padding=1)

    def output_conv(self, in_channels: int, out_channels: int) -> nn.Module:
        """The last convolution, zero-initialised so the model starts at a zero prediction."""
        return zero_module(conv_nd(self.dims, in_channels, out_channels, 3, padding=1))

    def res_block(self, in_channels: int, out_channels: int, emb_dim: int) -> nn.Module:
        """A residual block modulated by the embedding (a :class:`ResBlock`, or a subclass of it)."""
        cfg = self.config
        return ResBlock(
            self.dims, in_channels, out_channels, emb_dim, dropout=cfg.dropout, groups=cfg.norm_groups
        )

    def level_attention(self, width: int, level: int) -> list[nn.Module]:
        """The attention layers after each residual block of ``level`` (:class:`AxisAttention` or
        subclasses); by default self- + cross-attention over all positions where ``attention_levels``."""
        cfg = self.config
        if not cfg.attention_levels[level]:
            return []
        return [
            AxisAttention(
                self.dims,
                width,
                cfg.head_dim,
                context_dim=cfg.context_dim,
                mlp_ratio=cfg.mlp_ratio,
                groups=cfg.norm_groups,
                rope_theta=self.attention_rope_theta(),
            )
        ]

    def attention_rope_theta(self) -> float | None:
        """RoPE base period of the default attention layers (rotary positions over the axes they attend
        along, :class:`AxisAttention`); None (the default): no positions beyond what the convs give."""
        return None

    def level_factor(self, level: int) -> tuple[int, ...]:
        """Downsampling factor per axis from ``level`` to ``level + 1``; 2 on every axis by default."""
        return (2,) * self.dims

    # --- the skeleton --------------------------------------------------------------------------

    def size_multiples(self) -> tuple[int, ...]:
        """What each axis of x after the channel axis must be a multiple of: the product of the
        downsampling factors along it."""
        levels = len(self.config.channel_mult)
        factors = [self.level_factor(level) for level in range(levels - 1)]
        # lists, not generators, inside math.prod: torch.compile traces those
        return tuple(math.prod([f[axis] for f in factors]) for axis in range(self.dims))

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [b c *s], t: [b] in [0, 1], context: [b l context_dim], context_mask: [b l] bool -> [b c' *s]."""
        t, context_mask = self.check_inputs(x, t, context, context_mask)
        emb, context = self.condition(t, context, context_mask)  # [b e], [b l d]
        use_ckpt = self.gradient_checkpointing and self.training
        h = self.conv_in(self.prepare_input(x))  # [b ch *s]
        hs = [h]
        for stage in self.down:
            h = checkpoint(stage, h, emb, context, context_mask, enabled=use_ckpt)  # [b c_l *s_l]
            hs.append(h)
        h = checkpoint(self.mid, h, emb, context, context_mask, enabled=use_ckpt)
        for stage in self.up:
            h = torch.cat([h, hs.pop()], dim=1)  # [b c+c_skip *s_l]
            h = checkpoint(stage, h, emb, context, context_mask, enabled=use_ckpt)
        return self.finish_output(self.conv_out(F.silu(self.norm_out(h))))  # [b c' *s]
