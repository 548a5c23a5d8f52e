"""Audio U-Nets: ``UNet1D`` over waveforms and 1-D latents ``[b c t]``, ``UNet2D`` over log-mel
spectrograms ``[b c m t]``; both the configurations of :class:`mediadiff.nn.unet.UNet`.

The skeleton gives the levels, skips, resampling and AdaGN residual blocks (Ronneberger et al. 2015;
Dhariwal & Nichol 2021, Sec. 3) and the text conditioning; these files choose only what sound
needs:

- the downsampling factor between levels, per axis (``down_factors``): large first strides make
  the long top levels of a waveform cheap (audio-diffusion-pytorch's 1-D U-Net, Schneider et al.
  2023, "Moûsai", uses factors 4, 4, 4, 2, ...); on a spectrogram, (mel, time) pairs that keep the
  mel axis divisible (128 bins, the default log-mel);
- ``UNet1D``'s input patch: ``patch`` consecutive samples folded into channels before the first
  convolution and unfolded after the last (a 1-D pixel-unshuffle, Shi et al. 2016; the
  ``patch_size`` of audio-diffusion-pytorch), so a 16384-sample top level runs at 16384 / patch
  positions;
- rotary positions (RoPE, Su et al. 2021) in the self-attention of the low-resolution levels, over
  t in 1-D and over (m, t) in 2-D, so any length works without position tables; each attention
  layer also cross-attends to the text tokens (latent diffusion's spatial transformer, Rombach
  et al. 2022, Sec. 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from mediadiff.nn.unet import UNet, UNetConfig

__all__ = ["UNet1D", "UNet1DConfig", "UNet2D", "UNet2DConfig"]


def _check_factors(config: UNetConfig, factors: tuple | None, axes: int) -> None:
    """``factors``: None or one positive per-axis entry (an int in 1-D, a pair in 2-D) per level transition."""
    if factors is None:
        return
    name, transitions = type(config).__name__, len(config.channel_mult) - 1
    entries = [(f,) if axes == 1 else f for f in factors]
    if len(factors) != transitions or any(
        not isinstance(e, tuple) or len(e) != axes or any(not isinstance(s, int) or s < 1 for s in e)
        for e in entries
    ):
        what = "positive int" if axes == 1 else f"tuple of {axes} positive ints"
        raise ValueError(
            f"{name}.down_factors needs one {what} per level transition "
            f"({transitions} for {len(config.channel_mult)} levels), got {factors}"
        )


@dataclass(frozen=True)
class UNet1DConfig(UNetConfig):
    """:class:`~mediadiff.nn.unet.UNetConfig` over one axis (waveform samples or latent frames) plus the
    input patch, the per-level strides and the RoPE period; the shared fields are documented there.

    ``in_channels`` defaults to a mono waveform, and the presets fold 16 samples per position (1024
    positions for one second at 16 kHz); for 1-D latents set ``in_channels`` to the autoencoder's
    latent channels and ``patch=1``.
    """

    in_channels: int = 1  # channels of x: 1 mono / 2 stereo waveform, or the latent channels (e.g. 16, 64)
    patch: int = 1  # samples folded into channels before conv_in (and unfolded after conv_out)
    down_factors: tuple[int, ...] | None = None  # stride between consecutive levels; None: 2 each
    rope_theta: float | None = 10000.0  # RoPE base period in the attention layers; None: no positions

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.patch, int) or self.patch < 1:
            raise ValueError(f"UNet1DConfig.patch must be a positive int, got {self.patch!r}")
        _check_factors(self, self.down_factors, 1)


@dataclass(frozen=True)
class UNet2DConfig(UNetConfig):
    """:class:`~mediadiff.nn.unet.UNetConfig` over (mel bins, frames) plus per-level (mel, time) factors and
    the RoPE period; the shared fields are documented there. The defaults are a log-mel spectrogram
    ``[b 1 m t]``."""

    in_channels: int = 1  # channels of x: 1 for a log-mel spectrogram
    down_factors: tuple[tuple[int, int], ...] | None = None  # (mel, time) per level transition; None: (2, 2)
    rope_theta: float | None = 10000.0  # RoPE base period in the attention layers; None: no positions

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_factors(self, self.down_factors, 2)


UNET1D_PRESETS: dict[str, UNet1DConfig] = {
    # for tests: two levels, one block each, attention at the low level; multiples of 16 * 2 samples
    "tiny": UNet1DConfig(
        channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(False, True),
        head_dim=8,
        norm_groups=8,
        patch=16,
    ),
    # 16384 samples (1.02 s at 16 kHz) -> 1024 positions after the patch, 128 at the lowest level;
    # attention at 256 and 128 positions; lengths a multiple of 16 * 8 = 128 samples
    "S": UNet1DConfig(
        channels=64,
        channel_mult=(1, 2, 4, 4),
        attention_levels=(False, False, True, True),
        head_dim=64,
        patch=16,
    ),
    # twice the width, one more level: 1024 -> 64 positions, attention at 128 and 64; multiples of 16 * 16 = 256
    "B": UNet1DConfig(
        channels=128,
        channel_mult=(1, 1, 2, 3, 4),
        attention_levels=(False, False, False, True, True),
        head_dim=64,
        patch=16,
    ),
}

UNET2D_PRESETS: dict[str, UNet2DConfig] = {
    # for tests: two levels, one block each, attention at the low level; multiples of (2, 2)
    "tiny": UNet2DConfig(
        channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(False, True),
        head_dim=8,
        norm_groups=8,
    ),
    # 128 x 64 log-mel (16384 samples at hop 256) -> 64 x 32 -> 32 x 16, attention at the lowest
    # level (512 tokens); mel bins and frames multiples of 4
    "S": UNet2DConfig(
        channels=64,
        channel_mult=(1, 2, 4),
        attention_levels=(False, False, True),
        head_dim=64,
    ),
    # 128 x 64 -> ... -> 16 x 8, attention at 32 x 16 and 16 x 8;
    # mel bins and frames multiples of 8
    "B": UNet2DConfig(
        channels=128,
        channel_mult=(1, 2, 3, 4),
        attention_levels=(False, False, True, True),
        head_dim=64,
    ),
}


class UNet1D(UNet):
    """1-D U-Net: ``forward(x [b c t], t [b], context [b l d], context_mask [b l]) -> [b c' t]``.

    For waveforms (``in_channels`` 1 or 2, with an input ``patch``) and 1-D latents (``in_channels``
    the latent channels, ``patch=1``). ``t`` (the length) must be a multiple of
    :meth:`size_multiples`: ``patch`` times the product of ``down_factors``. Build with
    ``UNet1D(UNet1DConfig(...))``, ``UNet1D(**fields)`` or ``UNet1D.from_preset("tiny" | "S" | "B", **overrides)``.
    """

    dims = 1
    config_class = UNet1DConfig
    presets = UNET1D_PRESETS
    multiples_of = "the input patch times the downsampling factors"

    def input_channels(self) -> int:
        return self.config.in_channels * self.config.patch

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """x: [b c t] -> [b c*patch t/patch]: each patch of samples becomes the channels of one position."""
        return rearrange(x, "b c (t p) -> b (c p) t", p=self.config.patch)  # [b c*p t/p]

    def output_conv(self, in_channels: int, out_channels: int) -> nn.Module:
        return super().output_conv(in_channels, out_channels * self.config.patch)

    def finish_output(self, y: torch.Tensor) -> torch.Tensor:
        """y: [b c'*patch t/patch] -> [b c' t], the inverse of :meth:`prepare_input`."""
        return rearrange(y, "b (c p) t -> b c (t p)", p=self.config.patch)  # [b c' t]

    def level_factor(self, level: int) -> tuple[int, ...]:
        factors = self.config.down_factors
        return (2,) if factors is None else (factors[level],)

    def attention_rope_theta(self) -> float | None:
        return self.config.rope_theta

    def size_multiples(self) -> tuple[int, ...]:
        """What t must be a multiple of: ``patch`` times the product of the strides."""
        return (self.config.patch * super().size_multiples()[0],)


class UNet2D(UNet):
    """Spectrogram U-Net: ``forward(x [b c m t], t [b], context [b l d], context_mask [b l]) -> [b c' m t]``.

    Convolutions over (mel, time), downsampled by ``down_factors[i]`` = (mel, time) between levels
    ``i`` and ``i + 1`` (2 on both by default); m and t must be multiples of :meth:`size_multiples`.
    Attention at the levels of ``attention_levels`` runs over all (m, t) positions with 2-D RoPE.
    Build with ``UNet2D(UNet2DConfig(...))``, ``UNet2D(**fields)`` or ``UNet2D.from_preset("tiny" | "S" | "B")``.
    """

    dims = 2
    config_class = UNet2DConfig
    presets = UNET2D_PRESETS

    def level_factor(self, level: int) -> tuple[int, ...]:
        factors = self.config.down_factors
        return (2, 2) if factors is None else tuple(factors[level])

    def attention_rope_theta(self) -> float | None:
        return self.config.rope_theta
