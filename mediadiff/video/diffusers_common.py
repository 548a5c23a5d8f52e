"""What the diffusers video adapters share beyond :mod:`mediadiff.nn.diffusers`: the causal video VAE.

CogVideoX's, Wan's and LTX-Video's VAEs code the first frame alone and each ``r`` frames after it as one
latent frame, so a video of ``f = 1 + r k`` frames has ``1 + k`` latent frames, and ``s`` pixels per
latent position along height and width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from mediadiff.nn.diffusers import DiffusersAutoencoder

__all__ = ["CausalVideoAutoencoder"]


class CausalVideoAutoencoder(DiffusersAutoencoder):
    """A causal video VAE: ``[b 3 f h w]`` in [-1, 1] <-> latents ``[b c 1 + (f - 1) / r h / s w / s]``
    (``r = config.temporal_ratio``, ``s = config.spatial_ratio``)."""

    vae_name: ClassVar[str] = "the video autoencoder"  # in the error that refuses a shape

    def latent_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """``(b, 3, f, h, w)`` -> ``(b, c, 1 + (f - 1) / r, h / s, w / s)``; ValueError unless ``f = 1 + r k``
        and ``h`` and ``w`` are positive multiples of ``s``."""
        if len(input_shape) != 5:
            raise ValueError(f"video must be [b c f h w], got shape {tuple(input_shape)}")
        b, _, f, h, w = input_shape
        r, s = self.config.temporal_ratio, self.config.spatial_ratio
        if f < 1 or (f - 1) % r or h % s or w % s or h < s or w < s:
            raise ValueError(
                f"{self.vae_name} takes 1 + {r}k frames and a height and width that are multiples of {s}; "
                f"got {f} frames of {h}x{w}"
            )
        return (b, self.config.latent_channels, 1 + (f - 1) // r, h // s, w // s)
