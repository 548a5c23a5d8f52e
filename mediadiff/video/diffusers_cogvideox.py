"""CogVideoX (Yang et al. 2024, "CogVideoX: Text-to-Video Diffusion Models with An Expert Transformer")
from a diffusers ``CogVideoXPipeline`` folder as mediadiff parts.

- :class:`CogVideoXBackbone`: ``CogVideoXTransformer3DModel`` behind ``backbone(x, t, context, context_mask)``;
  latents ``[b c f h w]`` here, frames-first ``[b f c h w]`` there; the timestep is the DDPM index
  ``t * num_train_timesteps`` (v-prediction, as the model card and its ``CogVideoXDDIMScheduler`` say);
  3D RoPE (``use_rotary_positional_embeddings``) computed as ``CogVideoXPipeline`` does, with diffusers'
  ``get_3d_rotary_pos_embed`` and ``get_resize_crop_region_for_grid``. The text context is the T5
  encoding of the prompt padded to ``max_text_seq_length`` tokens with no mask (the pipeline encodes
  the pad tokens and the transformer attends to all of them), so ``context_mask`` is not used.
- :class:`CogVideoXAutoencoder`: ``AutoencoderKLCogVideoX``; latents ``z = raw * scaling_factor`` (the
  pipeline decodes ``latents / scaling_factor``), ``1 + (f - 1) / temporal_compression_ratio`` latent
  frames, ``2 ** (len(block_out_channels) - 1)`` pixels per latent position.
- CogVideoX 1.5 (``patch_size_t``): the latent frames must be a multiple of ``patch_size_t``. For other
  lengths ``CogVideoXPipeline`` samples extra leading latent frames and drops them before decoding;
  that is not reproduced, so a length it would pad is refused (the default length is rounded up:
  81 frames, 21 latent frames, become 85).
- :func:`components`: the whole folder (transformer, VAE, T5 + tokenizer, scheduler) as the keyword
  arguments of :class:`~mediadiff.pipelines.video.VideoPipeline`, for
  :mod:`mediadiff.pipelines.diffusers`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mediadiff.diffusion.interop import scheduler_settings
from mediadiff.nn.diffusers import AutoencoderInfo, DiffusersBackbone, pipeline_components

from .diffusers_common import CausalVideoAutoencoder

__all__ = ["CogVideoXAutoencoder", "CogVideoXBackbone", "components"]

FPS = 8  # CogVideoX generates 8 frames per second (model card)


class CogVideoXBackbone(DiffusersBackbone):
    """A ``CogVideoXTransformer3DModel`` as a mediadiff backbone over latents ``[b c f h w]``.

    num_train_timesteps: of the scheduler it was trained with (diffusers' timestep is ``t * N``).
    """

    context_field = "text_embed_dim"

    def __init__(self, model: torch.nn.Module, num_train_timesteps: int = 1000) -> None:
        super().__init__(model, time_scale=num_train_timesteps, integer_timesteps=True)
        self._rope: dict[tuple[int, int, int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def size_multiples(self) -> tuple[int, int, int]:
        """Latent frames, height, width: multiples of the patch (frames: ``patch_size_t`` where set)."""
        cfg = self.model.config
        return (cfg.patch_size_t or 1, cfg.patch_size, cfg.patch_size)

    def rotary(
        self, f: int, h: int, w: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(cos, sin)`` of the 3D RoPE for ``f x h x w`` latents, as ``CogVideoXPipeline.
        _prepare_rotary_positional_embeddings`` makes them (1.0: crop region of the grid against the
        ``sample_height x sample_width`` base; 1.5, with ``patch_size_t``: "slice" grid). None without RoPE."""
        cfg = self.model.config
        if not cfg.use_rotary_positional_embeddings:
            return None
        key = (f, h, w, device)
        if key not in self._rope:
            from diffusers.models.embeddings import get_3d_rotary_pos_embed
            from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

            p, p_t = cfg.patch_size, cfg.patch_size_t
            grid_h, grid_w = h // p, w // p
            base_h, base_w = cfg.sample_height // p, cfg.sample_width // p
            if p_t is None:  # CogVideoX 1.0
                crops = get_resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
                self._rope[key] = get_3d_rotary_pos_embed(
                    embed_dim=cfg.attention_head_dim,
                    crops_coords=crops,
                    grid_size=(grid_h, grid_w),
                    temporal_size=f,
                    device=device,
                )
            else:  # CogVideoX 1.5
                self._rope[key] = get_3d_rotary_pos_embed(
                    embed_dim=cfg.attention_head_dim,
                    crops_coords=None,
                    grid_size=(grid_h, grid_w),
                    temporal_size=(f + p_t - 1) // p_t,
                    grid_type="slice",
                    max_size=(base_h, base_w),
                    device=device,
                )
        return self._rope[key]

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: ``[b c f h w]``, t: ``[b]`` in [0, 1], context: ``[b l d]`` (T5, ``max_text_seq_length``
        tokens; ``context_mask`` ignored, as in ``CogVideoXPipeline``) -> v prediction ``[b c f h w]``."""
        context = self.text_context(context, "a text context (T5 tokens)")
        f, h, w = x.shape[2:]
        hidden = x.permute(0, 2, 1, 3, 4).to(self.dtype)  # [b f c h w]
        out = self.model(
            hidden_states=hidden,
            encoder_hidden_states=context,
            timestep=self.timestep(t).to(x.device),
            image_rotary_emb=self.rotary(f, h, w, x.device),
            return_dict=False,
        )[0]  # [b f c h w]
        return out.permute(0, 2, 1, 3, 4).to(x.dtype)  # [b c f h w]


class CogVideoXAutoencoder(CausalVideoAutoencoder):
    """An ``AutoencoderKLCogVideoX`` as a mediadiff video autoencoder: ``[b 3 f h w]`` in [-1, 1] <->
    latents ``[b c (f - 1) / r + 1 h / s w / s]`` scaled by ``scaling_factor``."""

    vae_name = "AutoencoderKLCogVideoX"

    def __init__(self, model: torch.nn.Module) -> None:
        cfg = model.config
        info = AutoencoderInfo(
            latent_channels=cfg.latent_channels,
            temporal_ratio=int(cfg.temporal_compression_ratio),
            spatial_ratio=2 ** (len(cfg.block_out_channels) - 1),
        )
        # CogVideoXPipeline decodes latents / scaling_factor and ignores shift_factor; so do we
        super().__init__(model, info, scale=float(cfg.scaling_factor))


def components(folder: Path, device: torch.device) -> dict[str, Any]:
    """A ``CogVideoXPipeline`` folder -> the keyword arguments of ``VideoPipeline`` (+ ``sampler_options``).

    The text encoder is the folder's T5 with its tokenizer, ``max_text_seq_length`` tokens (226 for the
    released models), pad tokens encoded and no mask (``pad_mode="encoded"``). Defaults follow the
    pipeline's: ``sample_frames`` frames of ``sample_height x sample_width`` latents, 50 steps, guidance
    6, 8 fps, and the scheduler's sampler and grid.
    """
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

    from mediadiff.text import load_text_encoder

    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    settings = scheduler_settings(scheduler)
    transformer = CogVideoXTransformer3DModel.from_pretrained(folder / "transformer", dtype=torch.float32)
    vae = AutoencoderKLCogVideoX.from_pretrained(folder / "vae", dtype=torch.float32)
    backbone = CogVideoXBackbone(transformer, int(scheduler.get("num_train_timesteps", 1000)))
    autoencoder = CogVideoXAutoencoder(vae)
    cfg = transformer.config
    text_encoder = load_text_encoder(
        folder / "text_encoder",
        tokenizer=folder / "tokenizer",
        max_length=cfg.max_text_seq_length,
        pad_mode="encoded",
        device=device,
    )
    s, r = autoencoder.config.spatial_ratio, autoencoder.config.temporal_ratio
    latent_frames = (cfg.sample_frames - 1) // r + 1
    if cfg.patch_size_t:  # 1.5: a whole number of frame patches (see the module docstring)
        latent_frames = -(-latent_frames // cfg.patch_size_t) * cfg.patch_size_t
    defaults = {
        "num_frames": 1 + r * (latent_frames - 1),
        "height": cfg.sample_height * s,
        "width": cfg.sample_width * s,
        "fps": FPS,
        "steps": 50,
        "guidance_scale": 6.0,
    }
    info = {"scheduler": scheduler.get("_class_name"), "notes": settings.notes}
    return pipeline_components(backbone, autoencoder, text_encoder, settings, defaults, info, device)
