"""A factorised space-time U-Net for video diffusion (pixel space or latents).

Layout ``[b c f h w]``. Every residual block runs a 2-D spatial then a 1-D temporal convolution
(Make-A-Video, Singer et al. 2022, Sec. 3.2; Video Diffusion Models, Ho et al. 2022, Sec. 3), with
the timestep and pooled text injected by AdaGN (Dhariwal & Nichol 2021, Sec. 3). At the lower
resolutions it adds per-frame spatial self-attention with cross-attention to text tokens, and
per-pixel temporal self-attention over frames with frame-index position embeddings. The U-Net
downsamples space only, so any frame count works; height and width must divide by
``2 ** (len(channel_mult) - 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from mediadiff.nn import (
    AttentionPool,
    ConfigModel,
    Downsample,
    FactorizedConv3d,
    FixedStandardize,
    ResBlock,
    TimestepEmbedding,
    TokenAdapter,
    TransformerBlock,
    Upsample,
    check_backbone_inputs,
    checkpoint,
    group_norm,
    pool_context,
    sinusoidal_embedding,
    zero_module,
)

__all__ = ["PRESETS", "SpatialAttention", "TemporalAttention", "UNet3D", "UNet3DConfig", "space_time_coords"]


@dataclass(frozen=True)
class UNet3DConfig:
    in_channels: int = 3  # channels of x: 3 for RGB pixels, the latent channels of a video autoencoder
    out_channels: int | None = None  # channels of the prediction; None: same as in_channels
    channels: int = 64  # width of the first level
    channel_mult: tuple[int, ...] = (1, 2, 4)  # width of each level = channels * mult; space halves per level
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attention_levels: tuple[bool, ...] = (False, True, True)  # spatial self- + cross-attention per level
    temporal_attention_levels: tuple[bool, ...] = (False, True, True)  # temporal self-attention per level
    head_dim: int = 32  # channels per attention head
    context_dim: int = 384  # text-encoder token width (384: all-MiniLM-L6-v2)
    mlp_ratio: float = 4.0  # hidden width of attention blocks' MLP / width
    norm_groups: int = 32  # GroupNorm groups (gcd with the channel count)
    temporal_kernel_size: int = 3  # kernel of the 1-D temporal convolutions
    dropout: float = 0.0  # dropout inside residual blocks
    pooled_context_norm: bool = False  # standardise the pooled text by fitted buffers (nn.FixedStandardize)
    context_pool: str = "mean"  # text -> one vector: "mean" over tokens, or "attention" (nn.AttentionPool)
    context_pool_heads: int = 4  # learned queries of the attention pooling
    context_adapter_hidden: int = 0  # >0: a TokenAdapter (hidden width) on the text tokens first
    coord_channels: bool = (
        False  # append (frame, row, column) coordinates in [-1, 1] to the input (CoordConv)
    )
    gradient_checkpointing: bool = False  # recompute each stage in the backward pass to save memory

    def __post_init__(self) -> None:
        if self.context_pool not in ("mean", "attention"):
            raise ValueError(
                f"UNet3DConfig.context_pool must be 'mean' or 'attention', got {self.context_pool!r}"
            )
        levels = len(self.channel_mult)
        if levels < 1 or any(m < 1 for m in self.channel_mult):
            raise ValueError(f"UNet3DConfig.channel_mult must be positive ints, got {self.channel_mult}")
        for name in ("attention_levels", "temporal_attention_levels"):
            if len(getattr(self, name)) != levels:
                raise ValueError(
                    f"UNet3DConfig.{name} needs one flag per level ({levels}), got {getattr(self, name)}"
                )
        for mult in self.channel_mult:
            if (self.channels * mult) % self.head_dim:
                raise ValueError(
                    f"UNet3DConfig: level width {self.channels * mult} is not divisible by head_dim {self.head_dim}"
                )


PRESETS: dict[str, UNet3DConfig] = {
    # for tests: two levels, one block each, attention at the low level
    "tiny": UNet3DConfig(
        channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(False, True),
        temporal_attention_levels=(False, True),
        head_dim=8,
        norm_groups=8,
    ),
    "S": UNet3DConfig(),
    "B": UNet3DConfig(
        channels=128,
        channel_mult=(1, 2, 3, 4),
        attention_levels=(False, True, True, True),
        temporal_attention_levels=(False, True, True, True),
        head_dim=64,
    ),
}


class SpatialAttention(nn.Module):
    """Per-frame attention: tokens are the ``h*w`` pixels of each frame; self-attention, cross-attention to
    the text tokens, MLP (the spatial transformer of latent diffusion, Rombach et al. 2022, Sec. 3.3).
    Residual, with a zero-initialised output projection."""

    def __init__(self, channels: int, head_dim: int, context_dim: int, mlp_ratio: float, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.proj_in = nn.Linear(channels, channels)
        self.block = TransformerBlock(
            channels, channels // head_dim, context_dim=context_dim, mlp_ratio=mlp_ratio, qk_norm=True
        )
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [b c f h w], context: [b l d], context_mask: [b l] -> [b c f h w]."""
        b, _, f, h, w = x.shape
        y = rearrange(self.norm(x), "b c f h w -> (b f) (h w) c")  # [b*f h*w c]
        if context is not None:
            context = repeat(context, "b l d -> (b f) l d", f=f)  # [b*f l d]
            if context_mask is not None:
                context_mask = repeat(context_mask, "b l -> (b f) l", f=f)  # [b*f l]
        y = self.proj_out(self.block(self.proj_in(y), context, context_mask))  # [b*f h*w c]
        return x + rearrange(y, "(b f) (h w) c -> b c f h w", b=b, h=h, w=w)


class TemporalAttention(nn.Module):
    """Per-pixel attention over frames (Ho et al. 2022, "Video Diffusion Models", Sec. 3), with a frame-index
    embedding: sin-cos features of the frame index through a learned linear layer, added to the tokens,
    so any number of frames works. Residual, with a zero-initialised output projection."""

    def __init__(self, channels: int, head_dim: int, mlp_ratio: float, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.proj_in = nn.Linear(channels, channels)
        self.frame_embed = nn.Linear(channels, channels)
        self.block = TransformerBlock(channels, channels // head_dim, mlp_ratio=mlp_ratio, qk_norm=True)
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [b c f h w] -> [b c f h w]."""
        _, c, f, h, w = x.shape
        y = rearrange(self.norm(x), "b c f h w -> (b h w) f c")  # [b*h*w f c]
        frames = sinusoidal_embedding(torch.arange(f, device=x.device), c).to(y.dtype)  # [f c]
        y = self.proj_in(y) + self.frame_embed(frames)  # [b*h*w f c]
        y = self.proj_out(self.block(y))  # [b*h*w f c]
        return x + rearrange(y, "(b h w) f c -> b c f h w", h=h, w=w)


def space_time_coords(x: torch.Tensor) -> torch.Tensor:
    """Coordinate channels for ``x: [b c f h w]``: frame, row and column positions, each spread over
    [-1, 1] across the clip and the frame -> ``[b 3 f h w]`` in x's dtype (CoordConv, Liu et al. 2018).

    A convolution is translation-equivariant and its only cue to absolute position is the zero
    padding at the borders; these channels give every layer where and when a pixel is, which is
    what "a red square moving right" needs at high noise: the clip's expected first frame holds the
    object on the left and its last on the right. Normalised by the clip and frame size, so the
    coordinates mean the same at any frame count and resolution.
    """
    b, _, f, h, w = x.shape
    axes = [torch.linspace(-1.0, 1.0, n, device=x.device, dtype=x.dtype) for n in (f, h, w)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # [3 f h w]
    return grid.expand(b, -1, -1, -1, -1)  # [b 3 f h w]


class _Stage(nn.ModuleList):
    """Layers applied in order, each given what it takes (ADM's ``TimestepEmbedSequential``)."""

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialAttention):
                x = layer(x, context, context_mask)
            else:  # TemporalAttention, Downsample, Upsample
                x = layer(x)
        return x


class UNet3D(ConfigModel):
    """Factorised space-time U-Net: ``forward(x [b c f h w], t [b], context [b l d], context_mask [b l]) -> [b c' f h w]``.

    The embedding ``time_embed(t) + context_embed(pool_context(context))`` modulates every residual
    block (AdaGN); without a context the model runs unconditionally (time embedding only, no
    cross-attention). Build with ``UNet3D(UNet3DConfig(...))``, ``UNet3D(**fields)`` or
    ``UNet3D.from_preset("tiny" | "S" | "B", **overrides)``.
    """

    config_class = UNet3DConfig
    presets = PRESETS

    def __init__(self, config: UNet3DConfig | dict | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        ch = cfg.channels
        emb_dim = 4 * ch
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.time_embed = TimestepEmbedding(emb_dim)
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
            nn.Linear(cfg.context_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(
                3,
                cin,
                cout,
                emb_dim,
                dropout=cfg.dropout,
                groups=cfg.norm_groups,
                factorized=True,
                temporal_kernel_size=cfg.temporal_kernel_size,
            )

        def attn(width: int, level: int) -> list[nn.Module]:
            layers: list[nn.Module] = []
            if cfg.attention_levels[level]:
                layers.append(
                    SpatialAttention(width, cfg.head_dim, cfg.context_dim, cfg.mlp_ratio, cfg.norm_groups)
                )
            if cfg.temporal_attention_levels[level]:
                layers.append(TemporalAttention(width, cfg.head_dim, cfg.mlp_ratio, cfg.norm_groups))
            return layers

        widths = [ch * m for m in cfg.channel_mult]
        last = len(widths) - 1
        in_ch = cfg.in_channels + (3 if cfg.coord_channels else 0)
        self.conv_in = FactorizedConv3d(in_ch, ch, temporal_kernel_size=cfg.temporal_kernel_size)
        self.down = nn.ModuleList()
        skips = [ch]
        cur = ch
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                self.down.append(_Stage([res(cur, width), *attn(width, level)]))
                cur = width
                skips.append(cur)
            if level != last:
                self.down.append(_Stage([Downsample(3, cur, factor=(1, 2, 2))]))
                skips.append(cur)
        self.mid = _Stage([res(cur, cur), *attn(cur, last), res(cur, cur)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(cur + skips.pop(), width), *attn(width, level)]
                cur = width
                if level != 0 and i == cfg.num_res_blocks:
                    layers.append(Upsample(3, cur, factor=(1, 2, 2)))
                self.up.append(_Stage(layers))
        self.norm_out = group_norm(cur, cfg.norm_groups)
        self.conv_out = zero_module(
            nn.Conv3d(cur, cfg.out_channels or cfg.in_channels, (1, 3, 3), padding=(0, 1, 1))
        )

    @property
    def downsample_factor(self) -> int:
        """Height and width must be multiples of this."""
        return 2 ** (len(self.config.channel_mult) - 1)

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
            "UNet3D",
            x,
            t,
            context,
            context_mask,
            ndim=5,
            channels=cfg.in_channels,
            context_dim=cfg.context_dim,
        )
        k = self.downsample_factor
        if x.shape[3] % k or x.shape[4] % k:
            raise ValueError(
                f"UNet3D: height and width must be multiples of {k} (2 ** (levels - 1)), got {list(x.shape[3:])}"
            )
        emb = self.time_embed(t)  # [b e]
        if context is not None:
            if self.context_adapter is not None:
                context = self.context_adapter(context, context_mask)  # [b l d]
            pooled = pool_context(context, context_mask, self.context_pool, self.pooled_norm)  # [b d]
            emb = emb + self.context_embed(pooled)  # [b e]
        use_ckpt = self.gradient_checkpointing and self.training
        if cfg.coord_channels:
            x = torch.cat([x, space_time_coords(x)], dim=1)  # [b c+3 f h w]
        h = self.conv_in(x)  # [b ch f h w]
        hs = [h]
        for stage in self.down:
            h = checkpoint(stage, h, emb, context, context_mask, enabled=use_ckpt)  # [b c_l f h_l w_l]
            hs.append(h)
        h = checkpoint(self.mid, h, emb, context, context_mask, enabled=use_ckpt)
        for stage in self.up:
            h = torch.cat([h, hs.pop()], dim=1)  # [b c+c_skip f h_l w_l]
            h = checkpoint(stage, h, emb, context, context_mask, enabled=use_ckpt)
        return self.conv_out(F.silu(self.norm_out(h)))  # [b c' f h w]
