"""Text-to-video Stable Diffusion (ModelScope T2V: Wang et al. 2023, "ModelScope Text-to-Video Technical
Report") from a diffusers ``TextToVideoSDPipeline`` folder.

``model_index.json`` names a ``UNet3DConditionModel`` (eps prediction over ``[b c f h w]`` latents, at
diffusers' integer timestep ``k = 1000 t``), an ``AutoencoderKL`` that codes each frame on its own
(latents times ``scaling_factor``, Rombach et al. 2022, Sec. 4.3.2), a CLIP text encoder (77 tokens,
no attention mask: the pipeline passes none and CLIP is causal) and a DDPM-family scheduler (DDIM,
DPM-Solver++), whose betas give :class:`~mediadiff.diffusion.VPSchedule`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mediadiff.nn.diffusers import (
    AutoencoderInfo,
    DiffusersAutoencoder,
    DiffusersBackbone,
    pipeline_components,
)

__all__ = ["SDVideoAutoencoder", "SDVideoBackbone", "components"]


class SDVideoBackbone(DiffusersBackbone):
    """``UNet3DConditionModel`` behind ``backbone(x, t, context, context_mask)``.

    x: ``[b c f h w]`` (VP: ``x = alpha x0 + sigma eps``), t: ``[b]`` in [0, 1] (the integer timestep
    ``k = N t``, ``N = num_train_timesteps``); predicts what the scheduler's ``prediction_type`` says
    (``eps`` for ModelScope). ``context_mask`` is not used: TextToVideoSDPipeline passes the UNet none.
    """

    context_field = "cross_attention_dim"

    def __init__(self, model: nn.Module, num_train_timesteps: int = 1000) -> None:
        super().__init__(model, time_scale=num_train_timesteps, integer_timesteps=True)

    def size_multiples(self) -> tuple[int, int, int]:
        """Latent height and width must halve at each of the UNet's downsamplings."""
        m = 2 ** (len(self.model.config.block_out_channels) - 1)
        return (1, m, m)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # x: [b c f h w]  t: [b]  context: [b l d]
        context = self.text_context(context)
        out = self.model(
            x.to(self.dtype), self.timestep(t), encoder_hidden_states=context, return_dict=False
        )[0]  # [b c f h w]
        return out.to(x.dtype)


class SDVideoAutoencoder(DiffusersAutoencoder):
    """``AutoencoderKL`` applied frame by frame: video ``[b 3 f h w]`` in [-1, 1] <-> latents
    ``[b c f h/s w/s]``, normalised ``(z - shift_factor) * scaling_factor`` (no shift for SD), which
    TextToVideoSDPipeline's ``decode_latents`` undoes. ``encode`` gives the posterior mode."""

    def __init__(self, model: nn.Module) -> None:
        cfg = model.config
        info = AutoencoderInfo(
            latent_channels=int(cfg.latent_channels), spatial_ratio=2 ** (len(cfg.block_out_channels) - 1)
        )
        shift = float(getattr(cfg, "shift_factor", None) or 0.0)
        super().__init__(model, info, scale=float(cfg.scaling_factor), shift=shift)

    def latent_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """``(b, c, f, h / s, w / s)`` for video ``(b, 3, f, h, w)``; raises on a bad shape."""
        if len(input_shape) != 5:
            raise ValueError(f"video must be [b c f h w], got shape {tuple(input_shape)}")
        b, _, f, h, w = input_shape
        s = self.config.spatial_ratio
        if h % s or w % s:
            raise ValueError(f"sides must be divisible by {s}, got {h}x{w}")
        return (b, self.config.latent_channels, f, h // s, w // s)

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Video ``[b 3 f h w]`` in [-1, 1] -> the VAE's posterior mode ``[b c f h' w']``, frame by frame."""
        b, c, f, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # [(b f) 3 h w]
        z = super().encode_raw(frames)  # [(b f) c h' w']
        return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4)  # [b c f h' w']

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents ``[b c f h' w']`` -> video ``[b 3 f h w]`` in about [-1, 1], frame by frame."""
        b, c, f, h, w = z.shape
        frames = z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # [(b f) c h' w']
        video = super().decode_raw(frames)  # [(b f) 3 h w]
        return video.reshape(b, f, *video.shape[1:]).permute(0, 2, 1, 3, 4)  # [b 3 f h w]


def components(folder: Path, device: torch.device) -> dict[str, Any]:
    """The parts of a VideoPipeline for the TextToVideoSDPipeline folder ``folder``.

    Text: CLIP over its 77 tokens, encoded with no attention mask (``pad_mode="encoded"``), as the
    pipeline does. Schedule, prediction, sampler and grid: the scheduler's config read by
    :func:`~mediadiff.diffusion.interop.scheduler_settings` (DDIM, DPM-Solver++, UniPC, Euler).
    Defaults: the pipeline's own (16 frames of ``sample_size * 8`` pixels, 50 steps, CFG 9).
    """
    from diffusers import AutoencoderKL, UNet3DConditionModel

    from mediadiff.diffusion.interop import scheduler_settings
    from mediadiff.text.encoder import TextEncoder

    folder = Path(folder)
    settings = scheduler_settings(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    unet = UNet3DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32)
    backbone = SDVideoBackbone(unet, settings.schedule.num_train_timesteps)
    autoencoder = SDVideoAutoencoder(vae)
    text_encoder = TextEncoder(
        folder / "text_encoder", tokenizer=folder / "tokenizer", device=device, pad_mode="encoded"
    )
    side = int(unet.config.sample_size) * autoencoder.config.spatial_ratio
    defaults = {
        "num_frames": 16,
        "height": side,
        "width": side,
        "fps": 8,
        "steps": 50,
        "guidance_scale": 9.0,
    }
    info = {"family": "text-to-video-sd", "scheduler_notes": settings.notes}
    return pipeline_components(backbone, autoencoder, text_encoder, settings, defaults, info, device)
