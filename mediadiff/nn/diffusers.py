"""diffusers models behind mediadiff's backbone and autoencoder interfaces.

A diffusers transformer takes ``(hidden_states, timestep, encoder_hidden_states, ...)`` with the
timestep in its training units and its own layout; mediadiff's backbones take
``backbone(x, t, context=None, context_mask=None) -> prediction`` with ``t: [b]`` in [0, 1] and a
modality's canonical layout. :class:`DiffusersBackbone` holds the diffusers model (``self.model``)
and converts the time; a family's subclass (``mediadiff/video/diffusers_*.py``) converts the
layout and passes what its diffusers pipeline passes (rotary embeddings, masks).

:class:`DiffusersAutoencoder` likewise wraps a diffusers VAE as ``encode(x) -> z`` / ``decode(z) -> x``
with ``z`` normalised the way the model card says the latents were during training
(``z = (raw - shift) * scale``: CogVideoX ``scale = scaling_factor``; Wan ``shift = latents_mean``,
``scale = 1 / latents_std``, per channel).

Both save in diffusers' own format (``save_pretrained`` of the wrapped model). Nothing here imports
diffusers at module level: the wrapped model comes in built. :func:`pipeline_components` gathers the
adapted parts and a folder's scheduler settings into the keyword arguments of a mediadiff pipeline,
the return value of every family's ``components(folder, device)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from mediadiff.diffusion.interop import SchedulerSettings

__all__ = [
    "AutoencoderInfo",
    "BackboneInfo",
    "DiffusersAutoencoder",
    "DiffusersBackbone",
    "pipeline_components",
]


@dataclass(frozen=True)
class BackboneInfo:
    """What a pipeline reads off a backbone's ``config``."""

    context_dim: int  # width of the text tokens the model takes (checked against the text encoder's dim)
    in_channels: int  # latent channels


@dataclass(frozen=True)
class AutoencoderInfo:
    """What a pipeline reads off an autoencoder's ``config``."""

    latent_channels: int
    temporal_ratio: int = 1  # frames per latent frame after the first (causal video VAEs)
    spatial_ratio: int = 1  # pixels per latent position along height and width


class DiffusersBackbone(nn.Module):
    """Base of the adapters from a diffusers denoiser to ``backbone(x, t, context, context_mask)``.

    model: the diffusers model; context_dim / in_channels: see :class:`BackboneInfo`; by default read off
    ``model.config`` (the field named by the class's :attr:`context_field`, and ``in_channels``).
    time_scale: diffusers' timestep is ``t * time_scale``: ``num_train_timesteps`` for VP (DDPM-family)
    models, 1000 for flow models (``sigma * 1000``). integer_timesteps: the scheduler hands the model int64
    timesteps (DDIM, UniPC, DPM-Solver: :attr:`~mediadiff.diffusion.interop.SchedulerSettings.integer_timesteps`);
    a time within 1e-3 of an integer is rounded to it (float32 ``k / N`` is exactly ``k``), any other is
    truncated as the int64 cast does (UniPC's flow sigmas: ``937.57 -> 937``).
    """

    context_field: ClassVar[str] = "cross_attention_dim"  # the model config's text-token width

    def __init__(
        self,
        model: nn.Module,
        *,
        context_dim: int | None = None,
        in_channels: int | None = None,
        time_scale: float = 1000.0,
        integer_timesteps: bool = False,
    ) -> None:
        super().__init__()
        if context_dim is None:
            context_dim = getattr(model.config, self.context_field)
        if in_channels is None:
            in_channels = model.config.in_channels
        self.model = model
        self.config = BackboneInfo(context_dim=int(context_dim), in_channels=int(in_channels))
        self.time_scale = float(time_scale)
        self.integer_timesteps = integer_timesteps

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """``t: [b]`` in [0, 1] -> diffusers' timestep ``[b]`` (float32)."""
        u = t.to(torch.float64) * self.time_scale  # [b]
        if self.integer_timesteps:
            u = torch.where((u - u.round()).abs() < 1e-3, u.round(), u.floor())
        return u.float()

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def text_context(self, context: torch.Tensor | None, what: str = "text tokens (context)") -> torch.Tensor:
        """``context [b l d]`` in the model's dtype; ValueError ("<class> needs <what>") when it is None."""
        if context is None:
            raise ValueError(f"{type(self).__name__} needs {what}")
        return context.to(self.dtype)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the wrapped model in diffusers' format (``config.json`` + safetensors)."""
        folder = Path(folder)
        self.model.save_pretrained(folder)
        return folder

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class DiffusersAutoencoder(nn.Module):
    """Base of the adapters from a diffusers VAE to ``encode`` / ``decode`` / ``latent_shape``.

    Subclasses define :meth:`latent_shape`, and :meth:`encode_raw` (input ``[b c ...]`` in [-1, 1] -> the
    VAE's unnormalised latent, in mediadiff's layout) and :meth:`decode_raw` where the VAE's own layout or
    call differs from the defaults (the posterior mode of ``model.encode``, the sample of ``model.decode``).
    ``shift`` and ``scale`` are floats or per-channel sequences (broadcast over the channel axis 1).
    """

    def __init__(
        self,
        model: nn.Module,
        info: AutoencoderInfo,
        *,
        scale: float | Sequence[float] = 1.0,
        shift: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.config = info
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32), persistent=False)
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32), persistent=False)

    def _per_channel(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if v.ndim == 0:
            return v.to(like.dtype)
        return v.to(like.dtype).view(1, -1, *([1] * (like.ndim - 2)))  # [1 c 1 ...]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """``x [b c ...]`` in [-1, 1] -> the VAE's posterior mode ``[b c' ...]`` (float32)."""
        return self.model.encode(x.to(self.dtype)).latent_dist.mode().float()  # [b c' ...]

    def decode_raw(self, z: torch.Tensor, *args: Any) -> torch.Tensor:
        """Unnormalised latents ``[b c' ...]`` -> ``x [b c ...]`` (float32); ``args``: what the VAE's
        ``decode`` takes after the latents (LTX-Video: the decode timestep)."""
        return self.model.decode(z.to(self.dtype), *args, return_dict=False)[0].float()  # [b c ...]

    def latent_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        raise NotImplementedError(f"{type(self).__name__} must define latent_shape")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [b c ...]`` in [-1, 1] -> normalised latents ``(raw - shift) * scale`` (the posterior mode)."""
        raw = self.encode_raw(x)  # [b c' ...]
        return (raw - self._per_channel(self.shift, raw)) * self._per_channel(self.scale, raw)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> ``x [b c ...]`` (about [-1, 1])."""
        raw = z / self._per_channel(self.scale, z) + self._per_channel(self.shift, z)
        return self.decode_raw(raw)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the wrapped VAE in diffusers' format."""
        folder = Path(folder)
        self.model.save_pretrained(folder)
        return folder


def pipeline_components(
    backbone: nn.Module,
    autoencoder: nn.Module,
    text_encoder: Any,
    settings: SchedulerSettings,
    defaults: dict[str, Any],
    info: dict[str, Any],
    device: torch.device | str,
) -> dict[str, Any]:
    """The keyword arguments of a mediadiff pipeline (+ ``sampler_options``) from a diffusers folder's parts.

    backbone / autoencoder: the adapters, moved to ``device``, in eval mode and frozen;
    settings: the scheduler's schedule, prediction, sampler (added to ``defaults``) and sampler options;
    defaults: the family pipeline's own sizes, steps and guidance; info: what the pipeline records.
    """
    for module in (backbone, autoencoder):
        module.to(device).eval().requires_grad_(False)
    return {
        "backbone": backbone,
        "autoencoder": autoencoder,
        "text_encoder": text_encoder,
        "schedule": settings.schedule,
        "prediction": settings.prediction,
        "defaults": {**defaults, "sampler": settings.sampler},
        "info": info,
        "sampler_options": settings.sampler_options,
    }
