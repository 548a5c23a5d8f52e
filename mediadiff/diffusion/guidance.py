"""Classifier-free guidance as a model wrapper (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance").

``cfg(model, cond, uncond, scale)`` returns a model with the same signature ``model(x, t) ->
prediction``; backbones never see a guidance scale or a negative prompt (a negative prompt is
just the ``uncond`` context).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import torch

from .objectives import append_dims

__all__ = ["MAX_SCALE", "cfg"]

MAX_SCALE = 1000.0  # |guidance scale| beyond this is a typo: the guided prediction would overflow


def _batch(v: torch.Tensor, b: int, name: str) -> torch.Tensor:
    if v.shape[0] == b:
        return v
    if v.shape[0] == 1:
        return v.expand(b, *v.shape[1:])  # [1 ...] -> [b ...]
    raise ValueError(f"guidance input {name!r} has batch {v.shape[0]}, expected {b} or 1")


def _rounded(value: float, dtype: torch.dtype) -> float:
    """``value`` as the per-sample weight tensor of the interval mask holds it: float32, then ``dtype``."""
    return torch.tensor(value, dtype=torch.float32).to(dtype).item()


def cfg(
    model: Callable[..., torch.Tensor],
    cond: dict[str, Any],
    uncond: dict[str, Any],
    scale: float,
    rescale: float = 0.0,
    interval: tuple[float, float] = (0.0, 1.0),
) -> Callable[..., torch.Tensor]:
    """Wrap ``model(x, t, **kwargs)`` into ``guided(x, t)`` that returns the guided prediction.

    ``u + w (c - u)`` with ``c = model(x, t, **cond)`` and ``u = model(x, t, **uncond)`` computed in
    one batched call (``cond``/``uncond`` tensors have batch ``b`` or 1 and equal shapes otherwise).

    - ``rescale`` (phi): Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
      Flawed", Eq. 15-16: the guided prediction is rescaled to the per-sample standard deviation of
      ``c`` and mixed back, ``phi * g * std(c) / std(g) + (1 - phi) * g``.
    - ``interval`` ``(t_lo, t_hi)``: guidance applies only where ``t_lo <= t <= t_hi``; elsewhere
      the result is ``c`` (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval").
      It is chosen per sample on the device, with no host synchronisation.

    ``scale == 1`` gives the conditional model exactly, in one unbatched call.
    """
    if set(cond) != set(uncond):
        raise ValueError(f"cond and uncond need the same keys, got {sorted(cond)} and {sorted(uncond)}")
    for k in cond:
        a, b = cond[k], uncond[k]
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            raise ValueError(f"cond[{k!r}] and uncond[{k!r}] must both be tensors or both not")
        if isinstance(a, torch.Tensor) and a.shape[1:] != b.shape[1:]:
            raise ValueError(
                f"cond[{k!r}] and uncond[{k!r}] differ in shape beyond the batch: "
                f"{list(a.shape)} vs {list(b.shape)}; pad them to the same length"
            )
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not abs(scale) <= MAX_SCALE:
        raise ValueError(
            f"guidance scale must be a finite number in [-{MAX_SCALE:g}, {MAX_SCALE:g}], got {scale!r}"
        )
    if isinstance(rescale, bool) or not isinstance(rescale, numbers.Real) or not 0.0 <= rescale <= 1.0:
        raise ValueError(f"rescale must be in [0, 1], got {rescale!r}")
    if not isinstance(interval, (tuple, list)) or len(interval) != 2:
        raise ValueError(f"interval must be a pair (lo, hi) of times, got {interval!r}")
    t_lo, t_hi = interval
    reals = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in interval)
    if not reals or not 0.0 <= t_lo <= t_hi <= 1.0:
        raise ValueError(f"interval must satisfy 0 <= lo <= hi <= 1, got {interval!r}")

    if scale == 1.0:

        def conditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            b = x.shape[0]
            kw = {k: _batch(v, b, k) if isinstance(v, torch.Tensor) else v for k, v in cond.items()}
            return model(x, t, **kw)

        return conditional

    always = t_lo == 0.0 and t_hi == 1.0  # every t of a sampler lies in [0, 1]: guided at every step
    weights: dict[torch.dtype, float] = {}  # prediction dtype -> the scale as the interval mask rounds it
    stacked: dict[int, dict[str, Any]] = {}  # batch size -> the conditional and unconditional inputs stacked

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        both = stacked.get(b)
        if both is None:  # the first step of a batch size: the contexts do not change from step to step
            both = {}
            for k in cond:
                c, u = cond[k], uncond[k]
                both[k] = (
                    torch.cat([_batch(c, b, k), _batch(u, b, k)]) if isinstance(c, torch.Tensor) else c
                )  # [2b ...]
            stacked[b] = both
        out = model(torch.cat([x, x]), torch.cat([t, t]), **both)  # [2b ...]
        pred_c, pred_u = out.chunk(2)  # [b ...] each
        if always:  # the same numbers as the mask below, without its five small ops per step
            w = weights.get(pred_c.dtype)
            if w is None:
                w = weights[pred_c.dtype] = _rounded(scale, pred_c.dtype)
            guided_pred = pred_u + w * (pred_c - pred_u)
        else:
            inside = (t >= t_lo) & (t <= t_hi)  # [b]
            w = torch.where(inside, scale, 1.0).to(pred_c.dtype)  # [b]
            guided_pred = pred_u + append_dims(w, x.ndim) * (pred_c - pred_u)
        if rescale > 0:
            dims = tuple(range(1, x.ndim))
            std_c = pred_c.std(dim=dims, keepdim=True)
            std_g = guided_pred.std(dim=dims, keepdim=True)
            ratio = torch.where(std_g > 0, std_c / std_g, 1.0)  # a constant prediction is kept as it is
            guided_pred = rescale * guided_pred * ratio + (1 - rescale) * guided_pred
        return guided_pred

    return guided
