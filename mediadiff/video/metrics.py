"""Video quality metrics."""

from __future__ import annotations

import torch

__all__ = ["mse", "psnr"]


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per clip: ``[b ...]`` x2 -> ``[b]`` (computed in float32)."""
    if x.shape != y.shape:
        raise ValueError(f"mse: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    return (x.float() - y.float()).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per clip, ``10 log10(data_range^2 / MSE)`` in dB: ``[b c f h w]`` x2 -> ``[b]``.

    ``data_range`` is the span of valid values: 2 for videos in ``[-1, 1]`` (the canonical range), 1 for
    ``[0, 1]``, 255 for 8-bit. Inputs are not clamped; clamp a decoder's output first if it may overshoot.
    Identical clips give ``inf``.
    """
    if data_range <= 0:
        raise ValueError(f"psnr: data_range must be > 0, got {data_range}")
    return 10.0 * torch.log10(data_range**2 / mse(x, y))
