"""A factorised space-time U-Net for video diffusion (pixel space or latents): the 3-D configuration
of :class:`mediadiff.nn.unet.UNet`.

Layout ``[b c f h w]``. Every residual block runs a 2-D spatial then a 1-D temporal convolution
(Make-A-Video, Singer et al. 2022, Sec. 3.2; Video Diffusion Models, Ho et al. 2022, Sec. 3), with
the timestep and pooled text injected by AdaGN (Dhariwal & Nichol 2021, Sec. 3). At the lower
resolutions it adds per-frame spatial self-attention with cross-attention to text tokens, and
per-pixel temporal self-attention over frames with frame-index position embeddings. The U-Net
downsamples space only, so any frame count works; height and width must divide by
``2 ** (len(channel_mult) - 1)``. The levels, skips and resampling are the skeleton's; this file
chooses the factorised convolutions, the space/time attention per level and the coordinate channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from mediadiff.nn import (
    FactorizedConv3d,
    ResBlock,
    sinusoidal_embedding,
    zero_module,
)
from mediadiff.nn.unet import AxisAttention, UNet, UNetConfig

__all__ = ["PRESETS", "SpatialAttention", "TemporalAttention", "UNet3D", "UNet3DConfig", "space_time_coords"]


@dataclass(frozen=True)
class UNet3DConfig(UNetConfig):
    """:class:`~mediadiff.nn.unet.UNetConfig` over (frames, height, width), plus the temporal layers and
    coordinate channels of video; the shared fields (widths, levels, text conditioning) are documented there."""

    level_flags: ClassVar[tuple[str, ...]] = ("attention_levels", "temporal_attention_levels")
    in_channels: int = 3  # channels of x: 3 for RGB pixels, the latent channels of a video autoencoder
    channel_mult: tuple[int, ...] = (1, 2, 4)  # width of each level = channels * mult; space halves per level
    attention_levels: tuple[bool, ...] = (False, True, True)  # spatial self- + cross-attention per level
    temporal_attention_levels: tuple[bool, ...] = (False, True, True)  # temporal self-attention per level
    temporal_kernel_size: int = 3  # kernel of the 1-D temporal convolutions
    coord_channels: bool = (
        False  # append (frame, row, column) coordinates in [-1, 1] to the input (CoordConv)
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


class SpatialAttention(AxisAttention):
    """Per-frame attention: tokens are the ``h*w`` pixels of each frame; self-attention, cross-attention to
    the text tokens, MLP (the spatial transformer of latent diffusion, Rombach et al. 2022, Sec. 3.3).
    Residual, with a zero-initialised output projection."""

    def __init__(self, channels: int, head_dim: int, context_dim: int, mlp_ratio: float, groups: int) -> None:
        super().__init__(
            3, channels, head_dim, axes=(1, 2), context_dim=context_dim, mlp_ratio=mlp_ratio, groups=groups
        )


class TemporalAttention(AxisAttention):
    """Per-pixel attention over frames (Ho et al. 2022, "Video Diffusion Models", Sec. 3), with a frame-index
    embedding: sin-cos features of the frame index through a learned linear layer, added to the tokens,
    so any number of frames works. Residual, with a zero-initialised output projection."""

    def __init__(self, channels: int, head_dim: int, mlp_ratio: float, groups: int) -> None:
        super().__init__(3, channels, head_dim, axes=(0,), mlp_ratio=mlp_ratio, groups=groups)

    def init_positions(self, channels: int) -> None:
        self.frame_embed = nn.Linear(channels, channels)

    def embed_positions(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y: [b*h*w f c] tokens of x: [b c f h w] -> [b*h*w f c] plus the frame-index embedding."""
        _, c, f = x.shape[:3]
        frames = sinusoidal_embedding(torch.arange(f, device=x.device), c).to(y.dtype)  # [f c]
        return y + self.frame_embed(frames)  # [b*h*w f c]


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


class UNet3D(UNet):
    """Factorised space-time U-Net: ``forward(x [b c f h w], t [b], context [b l d], context_mask [b l]) -> [b c' f h w]``.

    The embedding ``time_embed(t) + context_embed(pool_context(context))`` modulates every residual
    block (AdaGN); without a context the model runs unconditionally (time embedding only, no
    cross-attention). Build with ``UNet3D(UNet3DConfig(...))``, ``UNet3D(**fields)`` or
    ``UNet3D.from_preset("tiny" | "S" | "B", **overrides)``.
    """

    dims = 3
    config_class = UNet3DConfig
    presets = PRESETS

    def input_channels(self) -> int:
        return self.config.in_channels + (3 if self.config.coord_channels else 0)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """x: [b c f h w] -> [b c+3 f h w] with coordinate channels if ``coord_channels``, else x."""
        if self.config.coord_channels:
            return torch.cat([x, space_time_coords(x)], dim=1)  # [b c+3 f h w]
        return x

    def input_conv(self, in_channels: int, out_channels: int) -> nn.Module:
        return FactorizedConv3d(
            in_channels, out_channels, temporal_kernel_size=self.config.temporal_kernel_size
        )

    def output_conv(self, in_channels: int, out_channels: int) -> nn.Module:
        return zero_module(nn.Conv3d(in_channels, out_channels, (1, 3, 3), padding=(0, 1, 1)))  # per frame

    def res_block(self, in_channels: int, out_channels: int, emb_dim: int) -> nn.Module:
        cfg = self.config
        return ResBlock(
            3,
            in_channels,
            out_channels,
            emb_dim,
            dropout=cfg.dropout,
            groups=cfg.norm_groups,
            factorized=True,
            temporal_kernel_size=cfg.temporal_kernel_size,
        )

    def level_attention(self, width: int, level: int) -> list[nn.Module]:
        cfg = self.config
        layers: list[nn.Module] = []
        if cfg.attention_levels[level]:
            layers.append(
                SpatialAttention(width, cfg.head_dim, cfg.context_dim, cfg.mlp_ratio, cfg.norm_groups)
            )
        if cfg.temporal_attention_levels[level]:
            layers.append(TemporalAttention(width, cfg.head_dim, cfg.mlp_ratio, cfg.norm_groups))
        return layers

    def level_factor(self, level: int) -> tuple[int, ...]:
        return (1, 2, 2)  # space halves per level, time is kept

    @property
    def downsample_factor(self) -> int:
        """Height and width must be multiples of this (``size_multiples()`` is ``(1, k, k)``)."""
        return 2 ** (len(self.config.channel_mult) - 1)
