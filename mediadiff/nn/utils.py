"""Small helpers shared by the layers and backbones: zero init, gradient checkpointing, input checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

__all__ = ["check_backbone_inputs", "checkpoint", "zero_module"]


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it (ADM's output layers start at zero)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def checkpoint(fn: Callable[..., Any], *args: Any, enabled: bool = True) -> Any:
    """``fn(*args)``, recomputing activations in the backward pass when ``enabled`` and grads are on.

    Non-reentrant ``torch.utils.checkpoint`` (Chen et al. 2016, "Training Deep Nets with Sublinear
    Memory Cost"): same values and gradients, less memory, about one extra forward of compute.
    """
    if enabled and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def check_backbone_inputs(
    name: str,
    x: torch.Tensor,
    t: torch.Tensor | float,
    context: torch.Tensor | None,
    context_mask: torch.Tensor | None,
    *,
    ndim: int,
    channels: int,
    context_dim: int,
    multiples: tuple[int, ...] | None = None,
    multiples_of: str = "",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``backbone(x, t, context, context_mask)`` arguments; returns ``t`` as [b] and the mask.

    ``t`` may be a float or 0-d tensor (broadcast to the batch) or [b]. A ``None`` mask means every
    context token is valid. ``multiples``: what each axis of x after the channel axis must be a
    multiple of, named in the error by ``multiples_of`` (e.g. ``"the patch size"``).
    """
    if x.ndim != ndim or x.shape[1] != channels:
        raise ValueError(f"{name}: x must be [b {channels} ...] with {ndim} dims, got {list(x.shape)}")
    if multiples is not None and any(s % k for s, k in zip(x.shape[2:], multiples)):
        raise ValueError(
            f"{name}: sizes {list(x.shape[2:])} of x after the channel axis must be multiples of "
            f"{multiples_of} {list(multiples)}"
        )
    b = x.shape[0]
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        t = t.expand(b)  # [b]
    if t.shape != (b,):
        raise ValueError(f"{name}: t must be a scalar or [b] = [{b}], got {list(t.shape)}")
    if context is None:
        if context_mask is not None:
            raise ValueError(f"{name}: context_mask was given without context")
        return t, None
    if context.ndim != 3 or context.shape[0] != b or context.shape[2] != context_dim:
        raise ValueError(
            f"{name}: context must be [b l {context_dim}] with b = {b}, got {list(context.shape)}"
        )
    if context_mask is None:
        return t, None
    if context_mask.dtype != torch.bool or context_mask.shape != context.shape[:2]:
        raise ValueError(
            f"{name}: context_mask must be bool [b l] = {list(context.shape[:2])}, "
            f"got {context_mask.dtype} {list(context_mask.shape)}"
        )
    return t, context_mask
