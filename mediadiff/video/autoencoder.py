"""Video autoencoders: a causal 3-D convolutional VAE and an identity (pixel-space) autoencoder.

Both share one interface (DESIGN.md, "Autoencoders"):

- ``encode(x) -> z``: ``x`` is ``[b c f h w]`` in ``[-1, 1]``; ``z`` is already normalised with the
  ``latent_shift`` / ``latent_scale`` stored in the config, so latents come out near zero mean and
  unit variance;
- ``decode(z) -> x`` inverts it;
- ``latent_shape(input_shape)`` gives the shape ``encode`` returns without running it.

The VAE is *causal in time* (as in MAGVIT-v2, Yu et al. 2024, and CogVideoX, Yang et al. 2024): the
first frame is encoded alone and each later latent frame summarises the next ``temporal_ratio`` frames,
seeing no future frame: ``1 + k * rt`` frames become ``1 + k`` latent frames. Time is compressed by a
causal *temporal patchify* (frame 0 replicated into its own group of ``temporal_patch`` frames, later
groups folded into channels, like the spatial pixel-unshuffle of ``patch_size``) and, optionally, by
strided causal convolutions; every temporal convolution pads only on the past side (replicating the
first frame). Normalisation is per position (RMS over channels), never across time, so nothing leaks
between frames either.

Architecture: ``patchify -> conv-norm-SiLU -> (stride-2 conv-norm-SiLU) x levels-1 -> conv -> (mean,
logvar)``, and the mirror image with nearest-neighbour up-sampling (and depth-to-time for strided time)
in the decoder. Deliberately shallow; see :class:`ConvNormAct`.

Causality lets :meth:`CausalVideoVAE.decode` run over latent frames in chunks: each causal convolution
keeps the last ``kernel_t - 1`` frames it has seen as state, so chunked output equals the whole-clip
output and peak memory stays flat as the clip grows.

The posterior is a diagonal Gaussian and training adds a small KL term (Kingma & Welling 2014,
Eq. 10); see ``recipes/video/train_vae.py``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mediadiff.nn.autoencoder import (
    DiagonalGaussian,
    IdentityAutoencoder,
    LatentAutoencoder,
    check_latent_stats,
    load_model_folder,
)

__all__ = [
    "SHAPES_VAE_DIR",
    "CausalVideoVAE",
    "DiagonalGaussian",
    "IdentityAutoencoder",
    "VideoAutoencoderConfig",
    "load_autoencoder",
]

# The VAE that recipes/video/train_vae.py trained on Shapes (64x64, 1 + 4k frames), shipped in the package.
SHAPES_VAE_DIR = Path(__file__).resolve().parents[1] / "weights" / "video_vae_shapes"


@dataclass
class VideoAutoencoderConfig:
    """Architecture and latent normalisation of :class:`CausalVideoVAE`."""

    in_channels: int = 3  # video channels (RGB)
    latent_channels: int = 8  # channels of z
    channels: tuple[int, ...] = (64, 128)  # width at each level; one level per down/up-sampling stage + 1
    blocks_per_level: int = 0  # extra conv-norm-SiLU blocks per level (deeper trained much slower on Shapes)
    patch_size: int = 2  # pixel (un)shuffle at the edges: the first spatial factor, at no conv cost
    spatial_ratio: int = 4  # h, w -> h / spatial_ratio; patch_size * 2**k
    temporal_patch: int = 4  # frames folded into channels at the edges (causally: frame 0 alone, then groups)
    temporal_ratio: int = 4  # 1 + k * rt frames -> 1 + k latent frames; temporal_patch * 2**k
    latent_shift: list[float] = field(default_factory=list)  # per latent channel; empty = zeros
    latent_scale: list[float] = field(default_factory=list)  # per latent channel; empty = ones

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        spatial_steps = _log2(self.spatial_ratio // self.patch_size, "spatial_ratio / patch_size")
        if self.patch_size * 2**spatial_steps != self.spatial_ratio:
            raise ValueError(
                f"spatial_ratio ({self.spatial_ratio}) must be patch_size ({self.patch_size}) times a power of 2"
            )
        if self.temporal_patch < 1 or self.temporal_ratio % self.temporal_patch:
            raise ValueError(
                f"temporal_ratio ({self.temporal_ratio}) must be a multiple of temporal_patch ({self.temporal_patch})"
            )
        temporal_steps = _log2(self.temporal_ratio // self.temporal_patch, "temporal_ratio / temporal_patch")
        levels = max(spatial_steps, temporal_steps) + 1
        if len(self.channels) != levels:
            raise ValueError(
                f"channels needs {levels} entries for spatial_ratio={self.spatial_ratio}, "
                f"patch_size={self.patch_size}, temporal_ratio={self.temporal_ratio}, "
                f"temporal_patch={self.temporal_patch}; got {self.channels}"
            )
        check_latent_stats(self)

    @property
    def spatial_steps(self) -> int:
        """Number of 2x spatial down-sampling stages after the patchify."""
        return _log2(self.spatial_ratio // self.patch_size, "spatial_ratio / patch_size")

    @property
    def temporal_steps(self) -> int:
        """Number of 2x causal temporal down-sampling stages after the temporal patchify."""
        return _log2(self.temporal_ratio // self.temporal_patch, "temporal_ratio / temporal_patch")


def _log2(n: int, name: str) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"{name} must be a power of 2, got {n}")
    return int(math.log2(n))


# ----------------------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    """RMS normalisation over channels at each ``(f, h, w)`` position (Zhang & Sennrich 2019).

    Position-wise, so it never mixes frames: keeps the network causal and chunk-exact.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [b c f h w]
        rms = x.float().pow(2).mean(dim=1, keepdim=True).add(self.eps).rsqrt()  # [b 1 f h w]
        return (x.float() * rms).to(x.dtype) * self.weight


class CausalConv3d(nn.Module):
    """3-D convolution padded only on the past side in time (the first frame is replicated).

    ``state`` (a dict shared by all layers of one decoding pass) carries the last ``kernel_t - 1``
    input frames from the previous chunk, so calling it on consecutive chunks of a clip gives exactly the
    result of one call on the whole clip. Output frame ``j`` sees input frames ``j*st - kt + 1 ... j*st``.
    """

    def __init__(
        self, cin: int, cout: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1)
    ) -> None:
        super().__init__()
        self.kernel_t = kernel
        self.stride_t = stride[0]
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2))

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        # x: [b c f h w]
        pad = self.kernel_t - 1
        past = None if state is None else state.get(self)
        if past is None:
            past = x[:, :, :1].expand(-1, -1, pad, -1, -1)  # [b c kt-1 h w] replicate the first frame
        x = torch.cat([past, x], dim=2)  # [b c kt-1+f h w]
        if state is not None:
            if self.stride_t != 1:
                raise RuntimeError("strided causal convolutions cannot be streamed in chunks")
            state[self] = x[:, :, x.shape[2] - pad :]  # [b c kt-1 h w] context for the next chunk
        return self.conv(x)  # [b cout f/st h/s w/s]


class ConvNormAct(nn.Module):
    """Causal convolution, then RMS norm and SiLU (post-activation): the one building block of the trunk.

    Measured on Shapes (a small flat object on black): a plain, shallow chain of these leaves the
    "all-black" plateau within a few hundred steps, whereas a deeper trunk of pre-norm residual blocks
    (zero-initialised, so linear at the start) sat on it for thousands of steps on CPU budgets.
    """

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.conv = CausalConv3d(cin, cout, stride=stride)
        self.norm = RMSNorm(cout)

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        return F.silu(self.norm(self.conv(x, state)))  # [b cout f' h' w']


class Downsample(nn.Module):
    """Stride-2 causal convolution (+ norm, SiLU) in space and/or time: ``1 + 2m`` frames -> ``1 + m``."""

    def __init__(self, cin: int, cout: int, spatial: bool, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        s = 2 if spatial else 1
        self.block = ConvNormAct(cin, cout, stride=(2 if temporal else 1, s, s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)  # [b cout f' h' w'], f' = 1 + (f-1)/2 if temporal


class Upsample(nn.Module):
    """Causal 2x up-sampling in time (depth-to-time) and/or space (nearest + conv): ``1 + m`` -> ``1 + 2m`` frames.

    In time, a causal convolution makes ``2 * cout`` channels that unfold into two frames per input frame;
    the very first frame of the clip unfolds into one (its first copy is dropped), mirroring the encoder,
    which encodes the first frame alone.
    """

    def __init__(self, cin: int, cout: int, spatial: bool, temporal: bool) -> None:
        super().__init__()
        self.spatial = spatial
        self.temporal = temporal
        self.time_conv = CausalConv3d(cin, 2 * cin) if temporal else None
        self.block = ConvNormAct(cin, cout)

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        # x: [b cin f h w]
        if self.time_conv is not None:
            first = state is None or not state.get((self, "started"), False)
            x = self.time_conv(x, state)  # [b 2*cin f h w]
            x = rearrange(x, "b (r c) f h w -> b c (f r) h w", r=2)  # [b cin 2f h w]
            if first:
                x = x[:, :, 1:]  # [b cin 2f-1 h w] the first frame stands alone
            if state is not None:
                state[(self, "started")] = True
        if self.spatial:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")  # [b cin f 2h 2w]
        return self.block(x, state)  # [b cout f' h' w']


# ----------------------------------------------------------------------------------------- model


class CausalVideoVAE(LatentAutoencoder):
    """Causal 3-D convolutional VAE for video ``[b c f h w]`` in ``[-1, 1]``.

    ``1 + k * temporal_ratio`` frames of ``h x w`` become ``1 + k`` latent frames of
    ``h / spatial_ratio x w / spatial_ratio`` with ``latent_channels`` channels.
    """

    config_class = VideoAutoencoderConfig
    latent_axes = 3

    def __init__(self, config: VideoAutoencoderConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = VideoAutoencoderConfig(**kwargs)
        elif kwargs:
            raise TypeError(f"pass either a config or keyword arguments, not both (got {sorted(kwargs)})")
        self.config = config
        c = config.channels
        p2 = config.patch_size**2 * config.temporal_patch
        levels = len(c)
        down = [(i < config.spatial_steps, i < config.temporal_steps) for i in range(levels - 1)]

        # encoder
        self.enc_in = ConvNormAct(config.in_channels * p2, c[0])
        self.enc_blocks = nn.ModuleList()
        self.enc_down = nn.ModuleList()
        for i in range(levels):
            self.enc_blocks.append(
                nn.ModuleList([ConvNormAct(c[i], c[i]) for _ in range(config.blocks_per_level)])
            )
            if i < levels - 1:
                self.enc_down.append(Downsample(c[i], c[i + 1], *down[i]))
        self.enc_out = CausalConv3d(c[-1], 2 * config.latent_channels)

        # decoder (mirror image)
        self.dec_in = ConvNormAct(config.latent_channels, c[-1])
        self.dec_blocks = nn.ModuleList()
        self.dec_up = nn.ModuleList()
        for i in reversed(range(levels)):
            self.dec_blocks.append(
                nn.ModuleList([ConvNormAct(c[i], c[i]) for _ in range(config.blocks_per_level)])
            )
            if i > 0:
                self.dec_up.append(Upsample(c[i], c[i - 1], *down[i - 1]))
        self.dec_out = CausalConv3d(c[0], config.in_channels * p2)

        self.init_latent_stats()

    # -------------------------------------------------------------------------------------- shapes

    def latent_shape(self, input_shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """Shape of ``encode(x)`` for ``x`` of ``input_shape`` ``(b, c, f, h, w)``; raises on a bad shape."""
        b, _, f, h, w = self._check_input_shape(tuple(input_shape))
        cfg = self.config
        return (
            b,
            cfg.latent_channels,
            1 + (f - 1) // cfg.temporal_ratio,
            h // cfg.spatial_ratio,
            w // cfg.spatial_ratio,
        )

    def output_shape(self, latent_shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """Shape of ``decode(z)`` for ``z`` of ``latent_shape`` ``(b, c, f, h, w)``."""
        if len(latent_shape) != 5:
            raise ValueError(f"latents must be [b c f h w], got shape {tuple(latent_shape)}")
        b, c, f, h, w = latent_shape
        cfg = self.config
        if c != cfg.latent_channels:
            raise ValueError(
                f"latents must have {cfg.latent_channels} channels, got {c} (shape {tuple(latent_shape)})"
            )
        return (
            b,
            cfg.in_channels,
            1 + (f - 1) * cfg.temporal_ratio,
            h * cfg.spatial_ratio,
            w * cfg.spatial_ratio,
        )

    def _check_input_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        cfg = self.config
        if len(shape) != 5:
            raise ValueError(f"video must be [b c f h w], got shape {shape}")
        _, c, f, h, w = shape
        if c != cfg.in_channels:
            raise ValueError(f"video must have {cfg.in_channels} channels, got {c} (shape {shape})")
        if f < 1 or (f - 1) % cfg.temporal_ratio:
            raise ValueError(
                f"video needs 1 + k * {cfg.temporal_ratio} frames (1, {1 + cfg.temporal_ratio}, "
                f"{1 + 2 * cfg.temporal_ratio}, ...) for this causal autoencoder, got {f} frames"
            )
        if h % cfg.spatial_ratio or w % cfg.spatial_ratio:
            raise ValueError(f"video height and width must be multiples of {cfg.spatial_ratio}, got {h}x{w}")
        return shape

    # -------------------------------------------------------------------------------------- encode

    def encode_posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        """The posterior ``q(z|x)`` over *unnormalised* latents (what training uses)."""
        self._check_input_shape(tuple(x.shape))
        p, tp = self.config.patch_size, self.config.temporal_patch
        first = x[:, :, :1].expand(-1, -1, tp - 1, -1, -1)  # [b c tp-1 h w] frame 0 fills its own group
        x = torch.cat([first, x], dim=2)  # [b c g*tp h w], g = 1 + (f-1)/tp
        h = rearrange(
            x, "b c (g t) (h p1) (w p2) -> b (c t p1 p2) g h w", t=tp, p1=p, p2=p
        )  # [b c*tp*p*p g h/p w/p]
        h = self.enc_in(h)  # [b c0 g h/p w/p]
        for i, blocks in enumerate(self.enc_blocks):
            for block in blocks:
                h = block(h)  # [b ci fi hi wi]
            if i < len(self.enc_down):
                h = self.enc_down[i](h)  # [b c(i+1) f(i+1) h(i+1) w(i+1)]
        moments = self.enc_out(h)  # [b 2*zc fz hz wz]
        return DiagonalGaussian(moments)

    # -------------------------------------------------------------------------------------- decode

    def decode(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Normalised latents ``[b zc fz hz wz]`` -> video ``[b c 1+(fz-1)*rt hz*s wz*s]``.

        ``chunk_size`` (latent frames per chunk) streams the decoder over time with a causal cache:
        the result equals the whole-clip decode and peak memory no longer grows with the clip length.
        """
        self.output_shape(tuple(z.shape))
        z = self.denormalize(z)
        if chunk_size is None:
            return self._decode(z, None)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 latent frame, got {chunk_size}")
        state: dict = {}
        out, start = None, 0
        for part in z.split(chunk_size, dim=2):  # [b zc <=chunk_size hz wz]
            x = self._decode(part, state)  # [b c fi H W]
            if out is None:  # written in place, so no list of chunks is ever held next to the result
                out = x.new_empty(self.output_shape(tuple(z.shape)))  # [b c f H W]
            out[:, :, start : start + x.shape[2]] = x
            start += x.shape[2]
        return out

    def _decode(self, z: torch.Tensor, state: dict | None) -> torch.Tensor:
        # z: [b zc fz hz wz], unnormalised
        h = self.dec_in(z, state)  # [b cL fz hz wz]
        for i, blocks in enumerate(self.dec_blocks):
            for block in blocks:
                h = block(h, state)  # [b ci fi hi wi]
            if i < len(self.dec_up):
                h = self.dec_up[i](h, state)  # [b c(i-1) f(i-1) h(i-1) w(i-1)]
        h = self.dec_out(h, state)  # [b c*tp*p*p g H/p W/p]
        p, tp = self.config.patch_size, self.config.temporal_patch
        x = rearrange(h, "b (c t p1 p2) g h w -> b c (g t) (h p1) (w p2)", t=tp, p1=p, p2=p)  # [b c g*tp H W]
        if state is None or not state.get("unpatched"):
            x = x[:, :, tp - 1 :]  # [b c 1+(g-1)*tp H W] the first group holds frame 0 alone
        if state is not None:
            state["unpatched"] = True
        return x

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        """Reconstruct ``x``; returns ``(reconstruction, posterior)`` (for training)."""
        posterior = self.encode_posterior(x)
        z = posterior.sample(generator) if sample else posterior.mean  # [b zc fz hz wz]
        return self._decode(z, None), posterior


AUTOENCODERS: dict[str, type[nn.Module]] = {
    "CausalVideoVAE": CausalVideoVAE,
    "IdentityAutoencoder": IdentityAutoencoder,
}


def load_autoencoder(directory: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load whichever video autoencoder a folder holds (its ``config.json`` names the ``type``)."""
    return load_model_folder(directory, AUTOENCODERS, device)
