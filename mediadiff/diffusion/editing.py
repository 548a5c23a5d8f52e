"""Editing with a trained model, for any sampler: start part-way down the grid, keep known parts fixed.

- **SDEdit** (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic
  Differential Equations", Sec. 3): noise a clean input ``x0`` to a level ``t0`` of the sampler's
  own grid, ``x = alpha(t0) x0 + sigma(t0) eps``, and integrate from there to clean data.
  :func:`strength_levels` picks ``t0``: the last ``floor(strength * steps)`` steps of the grid (as
  diffusers' img2img pipelines count them), so ``strength`` 1 is plain generation from the top of the
  grid and ``strength`` 0 returns the input unchanged.
- **Replacement** of known values (Song et al. 2021, "Score-Based Generative Modeling through SDEs",
  App. I.2 imputation; Ho et al. 2022, "Video Diffusion Models", Sec. 3.1, the replacement method, used
  there to extend clips): where ``mask`` is set, the sample is held to the known clean values ``y``.
  :func:`keep_known` does it on the denoiser's clean estimate, ``D'(x) = m y + (1 - m) D(x)``. Every
  sampler here updates the state through ``D`` and ratios of ``alpha, sigma`` only, so a known entry
  that starts as ``alpha y + sigma eps`` stays exactly ``alpha' y + sigma' eps`` along a deterministic
  sampler's path (the re-noised known values with the start noise, the replacement method's state)
  and ends at ``y`` for every sampler: continuation and inpainting in time are this with a mask over
  time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .schedules import Level

__all__ = ["keep_known", "noised", "strength_levels"]

Denoiser = Callable[[torch.Tensor, Level], torch.Tensor]


def strength_levels(levels: Sequence[Level], strength: float) -> list[Level]:
    """The tail of a sampling grid that SDEdit's ``strength`` picks: its last ``floor(strength * steps)``
    steps (``steps = len(levels) - 1``), i.e. ``levels[steps - n:]``. ``strength`` 0 gives the clean level
    alone (no step); 1 the whole grid. Raises ValueError for a strength outside [0, 1]."""
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0 <= strength <= 1):
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
    steps = len(levels) - 1
    n = min(steps, int(strength * steps + 1e-9))  # the epsilon keeps 0.3 * 10 = 2.9999... at 3 steps
    return list(levels[steps - n :])


def noised(x0: torch.Tensor, noise: torch.Tensor, level: Level) -> torch.Tensor:
    """``alpha x0 + sigma eps``: the clean ``x0`` noised to ``level`` in the schedule's scaling."""
    return torch.add(x0 * level.alpha, noise, alpha=level.sigma)


def keep_known(denoiser: Denoiser, known: torch.Tensor, mask: torch.Tensor) -> Denoiser:
    """Wrap ``denoiser`` so its clean estimate equals ``known`` where ``mask`` is True (the replacement
    method; see the module docstring). ``known``: ``[b ...]`` like the sample (or broadcastable to it);
    ``mask``: bool, broadcastable to the sample."""
    if mask.dtype != torch.bool:
        raise TypeError(f"keep_known: mask must be a bool tensor, got {mask.dtype}")

    def wrapped(x: torch.Tensor, level: Level) -> torch.Tensor:
        return torch.where(mask, known.to(x.dtype), denoiser(x, level))  # [b ...]

    return wrapped
