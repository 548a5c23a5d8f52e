"""Rotary position embeddings over 1, 2 or 3 axes (Su et al. 2021, "RoFormer", Eq. 34).

The head dimension is split across the axes (e.g. frames, height, width); each axis rotates its
own pairs of channels by ``position * theta^(-2i/d_axis)``. Rotating queries and keys this way
makes every attention score depend on positions only through their difference.
Channels are paired "rotate-half" style: channel ``i`` with channel ``i + dh/2``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Rope", "RotaryEmbedding", "apply_rope", "grid_positions", "split_head_dim"]

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each [n dh/2] or [b n dh/2]


def split_head_dim(head_dim: int, n_axes: int) -> tuple[int, ...]:
    """Split ``head_dim`` into ``n_axes`` even parts, as equal as possible, the larger ones first."""
    if head_dim % 2 or head_dim < 2 * n_axes:
        raise ValueError(f"rope: head_dim {head_dim} must be even and at least 2 per axis ({n_axes} axes)")
    pairs = head_dim // 2
    return tuple(2 * (pairs // n_axes + (i < pairs % n_axes)) for i in range(n_axes))


def grid_positions(*sizes: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Integer positions of a grid of ``sizes`` flattened in row-major ("f h w") order: [prod(sizes) len(sizes)]."""
    axes = [torch.arange(s, device=device) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))  # [n axes]


class RotaryEmbedding(nn.Module):
    """Angles of a multi-axis rotary embedding; ``forward(positions) -> (cos, sin)``.

    head_dim: per-head channels; axes_dims: channels per axis (even, summing to head_dim), by
    default :func:`split_head_dim` over ``n_axes``; theta: base period (10000 as RoFormer).
    """

    def __init__(
        self,
        head_dim: int,
        *,
        n_axes: int = 1,
        axes_dims: tuple[int, ...] | None = None,
        theta: float = 10000.0,
    ) -> None:
        super().__init__()
        axes_dims = tuple(axes_dims) if axes_dims is not None else split_head_dim(head_dim, n_axes)
        if sum(axes_dims) != head_dim or any(d % 2 or d <= 0 for d in axes_dims):
            raise ValueError(
                f"rope: axes_dims {axes_dims} must be positive, even and sum to head_dim {head_dim}"
            )
        self.axes_dims = axes_dims
        freqs = [theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d) for d in axes_dims]
        axis = [torch.full((d // 2,), i) for i, d in enumerate(axes_dims)]
        self.register_buffer("freqs", torch.cat(freqs).float(), persistent=False)  # [dh/2]
        self.register_buffer("axis", torch.cat(axis), persistent=False)  # [dh/2], the axis of each pair

    def forward(self, positions: torch.Tensor) -> Rope:
        """positions: integer [n axes] or [b n axes] -> (cos, sin), each [(b) n dh/2] in float32."""
        if positions.shape[-1] != len(self.axes_dims):
            raise ValueError(
                f"rope: positions have {positions.shape[-1]} axes, expected {len(self.axes_dims)} "
                f"(shape [..., n, axes], got {list(positions.shape)})"
            )
        angles = positions.float()[..., self.axis] * self.freqs  # [(b) n dh/2]
        return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate ``x: [... b nh n dh]`` by ``rope = (cos, sin)`` of shape [n dh/2] or [b n dh/2] (computed in float32).

    Leading axes before ``b`` broadcast, so queries and keys stacked as ``[2 b nh n dh]`` rotate in one call.
    """
    cos, sin = rope
    if cos.ndim == 3:
        cos, sin = cos[:, None], sin[:, None]  # [b 1 n dh/2], broadcast over heads
    x1, x2 = x.float().chunk(2, dim=-1)  # [... b nh n dh/2] each
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)  # [... b nh n dh]
