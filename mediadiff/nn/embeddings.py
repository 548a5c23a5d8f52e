"""Sinusoidal embeddings of timesteps and positions, and the timestep MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimestepEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``[cos(x w_i), sin(x w_i)]`` with ``w_i = max_period^(-i/(dim/2))``: x [...] -> [... dim] (float32).

    The Transformer's position encoding (Vaswani et al. 2017, Sec. 3.5) as DDPM and ADM use it for
    timesteps (guided-diffusion ``timestep_embedding``). An odd ``dim`` gets a zero last channel.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[..., None] * freqs  # [... half]
    emb = torch.cat((args.cos(), args.sin()), dim=-1)  # [... 2*half]
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))  # [... dim]
    return emb


class TimestepEmbedding(nn.Module):
    """t in [0, 1] -> sinusoidal features of ``scale * t`` -> Linear, SiLU, Linear: [b] -> [b dim].

    ``scale=1000`` puts continuous time on the DDPM/ADM timestep range, where these frequencies
    were designed (Ho et al. 2020; Dhariwal & Nichol 2021).
    """

    def __init__(self, dim: int, freq_dim: int = 256, scale: float = 1000.0) -> None:
        super().__init__()
        self.freq_dim, self.scale = freq_dim, scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: [b] -> [b dim]."""
        return self.mlp(sinusoidal_embedding(t * self.scale, self.freq_dim))  # [b dim]
