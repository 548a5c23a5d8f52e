"""Wan 2.1 (Wan Team 2025, "Wan: Open and Advanced Large-Scale Video Generative Models") from a diffusers
``WanPipeline`` folder as mediadiff parts.

- :class:`WanBackbone`: ``WanTransformer3DModel`` behind ``backbone(x, t, context, context_mask)``. Wan is
  a rectified-flow model (``x_t = (1 - t) x0 + t eps``, velocity ``eps - x0``: our ``flow`` prediction)
  that takes the timestep ``t * num_train_timesteps`` (``sigma * 1000``) and latents ``[b c f h w]``
  like ours. The context is the UMT5 encoding of the prompt with its mask, the padding zeroed and the
  whole ``max_sequence_length`` (512) kept, since the transformer attends to the zero tokens too
  (``WanPipeline._get_t5_prompt_embeds``); so ``context_mask`` is not used.
- :class:`WanAutoencoder`: ``AutoencoderKLWan``; latents normalised per channel,
  ``z = (raw - latents_mean) / latents_std`` (the pipeline decodes ``z * latents_std + latents_mean``);
  ``1 + (f - 1) / scale_factor_temporal`` latent frames, ``scale_factor_spatial`` pixels per position.
- :func:`components`: the folder as the keyword arguments of :class:`~mediadiff.pipelines.video.VideoPipeline`
  with the scheduler it names (``UniPCMultistepScheduler`` with ``use_flow_sigmas`` and ``flow_shift``,
  as released, or ``FlowMatchEulerDiscreteScheduler``). The two-stage Wan 2.2 folders
  (``transformer_2``, ``boundary_ratio``, ``expand_timesteps``) are refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mediadiff.diffusion.interop import scheduler_settings
from mediadiff.nn.diffusers import AutoencoderInfo, DiffusersBackbone, pipeline_components

from .diffusers_common import CausalVideoAutoencoder

__all__ = ["WanAutoencoder", "WanBackbone", "components"]

FPS = 16  # Wan 2.1 generates 16 frames per second (model card)
MAX_SEQUENCE_LENGTH = 512  # WanPipeline's default text length


class WanBackbone(DiffusersBackbone):
    """A ``WanTransformer3DModel`` as a mediadiff backbone over latents ``[b c f h w]`` (flow prediction)."""

    context_field = "text_dim"

    def __init__(
        self, model: torch.nn.Module, num_train_timesteps: int = 1000, integer_timesteps: bool = False
    ) -> None:
        super().__init__(model, time_scale=num_train_timesteps, integer_timesteps=integer_timesteps)

    def size_multiples(self) -> tuple[int, int, int]:
        """Latent frames, height, width: multiples of the patch ``(pf, ph, pw)``."""
        return tuple(int(p) for p in self.model.config.patch_size)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: ``[b c f h w]``, t: ``[b]`` in [0, 1], context: ``[b l d]`` (zero-padded UMT5 tokens;
        ``context_mask`` ignored, as in ``WanPipeline``) -> velocity ``[b c f h w]``."""
        context = self.text_context(context, "a text context (UMT5 tokens)")
        out = self.model(
            hidden_states=x.to(self.dtype),
            timestep=self.timestep(t).to(x.device),
            encoder_hidden_states=context,
            return_dict=False,
        )[0]  # [b c f h w]
        return out.to(x.dtype)


class WanAutoencoder(CausalVideoAutoencoder):
    """An ``AutoencoderKLWan`` as a mediadiff video autoencoder: ``[b 3 f h w]`` in [-1, 1] <-> latents
    ``[b z (f - 1) / r + 1 h / s w / s]`` normalised by ``latents_mean`` / ``latents_std``."""

    vae_name = "AutoencoderKLWan"

    def __init__(self, model: torch.nn.Module) -> None:
        cfg = model.config
        info = AutoencoderInfo(
            latent_channels=cfg.z_dim,
            temporal_ratio=int(cfg.scale_factor_temporal),
            spatial_ratio=int(cfg.scale_factor_spatial),
        )
        std = torch.tensor(cfg.latents_std, dtype=torch.float64)  # [z]
        super().__init__(model, info, scale=(1 / std).tolist(), shift=list(cfg.latents_mean))


def components(folder: Path, device: torch.device) -> dict[str, Any]:
    """A ``WanPipeline`` folder -> the keyword arguments of ``VideoPipeline`` (+ ``sampler_options``).

    The text encoder is the folder's UMT5 with its tokenizer, ``min(512, model_max_length)`` tokens,
    zero-padded (``pad_mode="zeros"``), prompts cleaned by WanPipeline's own ``prompt_clean``. Defaults follow ``WanPipeline.__call__``: 81 frames of 480x832,
    50 steps, guidance 5, 16 fps, and the scheduler's sampler and grid.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    from mediadiff.text import load_text_encoder

    index = json.loads((folder / "model_index.json").read_text())
    two_stage = {k: index.get(k) for k in ("transformer_2", "boundary_ratio", "expand_timesteps")}
    used = [k for k, v in two_stage.items() if v not in (None, False, [None, None])]
    if used:
        raise ValueError(f"{folder}: WanPipeline with {used} (Wan 2.2) is not supported; Wan 2.1 folders are")
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    settings = scheduler_settings(scheduler)
    if settings.prediction != "flow":
        raise ValueError(
            f"{folder}: Wan is a flow model, but its scheduler says prediction {settings.prediction!r}"
        )
    transformer = WanTransformer3DModel.from_pretrained(folder / "transformer", dtype=torch.float32)
    vae = AutoencoderKLWan.from_pretrained(folder / "vae", dtype=torch.float32)
    # UniPC hands the model int64 timesteps (floor(1000 sigma)), flow-matching Euler float ones
    n = int(scheduler.get("num_train_timesteps", 1000))
    backbone = WanBackbone(transformer, n, integer_timesteps=settings.integer_timesteps)
    autoencoder = WanAutoencoder(vae)
    tokenizer_config = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
    limit = tokenizer_config.get("model_max_length", MAX_SEQUENCE_LENGTH)
    text_encoder = load_text_encoder(
        folder / "text_encoder",
        tokenizer=folder / "tokenizer",
        max_length=min(MAX_SEQUENCE_LENGTH, int(limit)),
        pad_mode="zeros",
        clean=prompt_clean,  # ftfy (when installed), HTML unescape, whitespace, as WanPipeline does
        device=device,
    )
    defaults = {
        "num_frames": 81,
        "height": 480,
        "width": 832,
        "fps": FPS,
        "steps": 50,
        "guidance_scale": 5.0,
    }
    info = {"scheduler": scheduler.get("_class_name"), "notes": settings.notes}
    return pipeline_components(backbone, autoencoder, text_encoder, settings, defaults, info, device)
