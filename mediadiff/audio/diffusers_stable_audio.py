"""Stable Audio Open from a diffusers ``StableAudioPipeline`` folder (Evans et al. 2024, "Stable Audio Open").

A ``StableAudioPipeline`` folder holds ``transformer/`` (``StableAudioDiTModel``), ``vae/``
(``AutoencoderOobleck``), ``text_encoder/`` + ``tokenizer/`` (T5), ``projection_model/``
(``StableAudioProjectionModel``: the text projection and the ``seconds_start`` / ``seconds_total``
number conditioners) and ``scheduler/`` (``CosineDPMSolverMultistepScheduler``). Here they become:

- :class:`StableAudioText`, the text side: T5 tokens (with their mask, ``model_max_length`` at most),
  projected and zeroed at the padding as ``StableAudioPipeline.encode_prompt`` does. The empty prompt
  (mediadiff's unconditional context) is diffusers' default unconditional input, all zeros (the
  pipeline with ``negative_prompt=None``): its mask is all False. :meth:`StableAudioText.with_duration`
  appends the two timing tokens of the clip asked for (``AudioPipeline.sample_latents`` calls it with
  the clip's length), so the per-call duration reaches the model with no change to the backbone's
  signature.
- :class:`StableAudioBackbone`: ``backbone(x, t, context, context_mask)`` over ``x [b c f]`` with
  ``context = [text tokens; seconds_start; seconds_total]``: cross-attention gets the text tokens
  zero-padded to ``model_max_length`` plus the timing tokens (all zeros where the mask says so, no
  attention mask, as the pipeline calls it), the global condition is the two timing tokens side by side,
  and the 1-D rotary table is the pipeline's (``attention_head_dim // 2``, latent frames + 1).
- :class:`StableAudioAutoencoder`: the Oobleck VAE, latents unscaled (the pipeline decodes them as they
  are), ``hop_length`` samples per latent frame.
- the scheduler, read by :func:`~mediadiff.diffusion.interop.scheduler_settings`. ``CosineDPMSolverMultistepScheduler`` is EDM
  preconditioning with ``c_noise = (2 / pi) atan(sigma)`` and v-prediction, which with ``sigma_data = 1``
  is v-prediction on the continuous cosine schedule (:class:`~mediadiff.diffusion.schedules.CosineSchedule`;
  the model's timestep is our ``t`` itself), and its solver is SDE-DPM-Solver++(2M), midpoint, with
  ``eta = 1`` (``dpmpp_2m_sde``) over its exponential (or Karras) sigma grid from ``sigma_max`` to
  ``sigma_min`` then 0. The one difference: diffusers draws the SDE noise from a Brownian tree
  (``torchsde``), we draw fresh Gaussian noise per step from the clip's seeded generator, which is the
  same distribution; the parity test feeds diffusers our noise.

Stable Audio always samples its full window (``transformer.config.sample_size`` latent frames) and cuts
the waveform to ``seconds_total``; so does ``AudioPipeline`` (the backbone's ``window_frames``), for any
clip up to the window. A longer clip, which diffusers refuses, is sampled over more latent frames (the
DiT is length-agnostic through RoPE), beyond what the model was trained on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mediadiff.diffusion.interop import scheduler_settings
from mediadiff.diffusion.schedules import CosineSchedule
from mediadiff.nn.diffusers import (
    AutoencoderInfo,
    DiffusersAutoencoder,
    DiffusersBackbone,
    pipeline_components,
)
from mediadiff.text.context import match_context

__all__ = [
    "OobleckInfo",
    "StableAudioAutoencoder",
    "StableAudioBackbone",
    "StableAudioText",
    "components",
]

TIMING_TOKENS = 2  # seconds_start, seconds_total: the last two context tokens


class StableAudioText:
    """The text side of Stable Audio: T5 -> projection -> tokens zeroed at padding, plus timing tokens.

    text_encoder: a :class:`~mediadiff.text.encoder.TextEncoder` over the folder's T5 (mask mode);
    projection: the folder's ``StableAudioProjectionModel``. ``dim`` is the projection's
    ``conditioning_dim``, what the transformer's cross-attention takes.
    """

    def __init__(self, text_encoder: Any, projection: torch.nn.Module) -> None:
        self.text_encoder = text_encoder
        self.projection = projection.eval().requires_grad_(False)
        self.dim: int = int(projection.config.conditioning_dim)
        self.path = text_encoder.path
        self.max_length: int = int(text_encoder.max_length)

    @property
    def device(self) -> torch.device:
        return next(self.projection.parameters()).device

    def to(self, device: torch.device | str) -> StableAudioText:
        self.text_encoder.to(device)
        self.projection.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: list[str] | tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts: b strings -> (tokens [b l dim], mask [b l]); the empty prompt: mask all False (zeros)."""
        tokens, mask = self.text_encoder.encode(list(prompts))  # [b l d_t5], [b l]
        tokens = self.projection(text_hidden_states=tokens.to(self.device)).text_hidden_states  # [b l dim]
        mask = mask.to(tokens.device).bool()
        mask[[i for i, p in enumerate(prompts) if p == ""]] = False  # diffusers' zero unconditional input
        return tokens * mask[..., None], mask

    @torch.no_grad()
    def timing(self, batch: int, seconds_start: float, seconds_total: float) -> torch.Tensor:
        """The number conditioners' tokens ``[b 2 dim]``: seconds_start then seconds_total (clamped to the
        projection's ``[min_value, max_value]`` as the model does)."""
        out = self.projection(
            start_seconds=torch.full((batch,), float(seconds_start), device=self.device),
            end_seconds=torch.full((batch,), float(seconds_total), device=self.device),
        )
        both = [out.seconds_start_hidden_states, out.seconds_end_hidden_states]  # [b 1 dim] each
        return torch.cat(both, dim=1)  # [b 2 dim]

    def with_duration(
        self,
        cond: dict[str, torch.Tensor],
        uncond: dict[str, torch.Tensor],
        seconds_start: float,
        seconds_total: float,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Both contexts (made the same length) with the timing tokens appended; a context with no real
        token (the empty prompt) keeps them masked, so the cross-attention sees zeros there as in
        diffusers, while the global condition always takes the timing."""
        cond, uncond = match_context(cond, uncond)

        def add(ctx: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            tokens, mask = ctx["context"], ctx["context_mask"]  # [b l dim], [b l]
            timing = self.timing(tokens.shape[0], seconds_start, seconds_total).to(tokens.dtype)  # [b 2 dim]
            real = mask.any(dim=1, keepdim=True).expand(-1, TIMING_TOKENS)  # [b 2]
            return {
                **ctx,
                "context": torch.cat([tokens, timing], dim=1),  # [b l+2 dim]
                "context_mask": torch.cat([mask, real], dim=1),  # [b l+2]
            }

        return add(cond), add(uncond)


class StableAudioBackbone(DiffusersBackbone):
    """``StableAudioDiTModel`` as ``backbone(x, t, context, context_mask)`` on the cosine schedule.

    x: ``[b c f]`` latents in the cosine (variance-preserving) scaling, which is diffusers'
    ``scale_model_input`` (``c_in x``) of its variance-exploding sample; t: ``[b]`` in [0, 1], diffusers'
    timestep ``(2 / pi) atan(sigma)`` itself; context: ``[b l+2 dim]`` from :class:`StableAudioText`
    (text tokens, then the seconds_start and seconds_total tokens). Returns the v-prediction ``[b c f]``.
    """

    context_field = "cross_attention_input_dim"

    def __init__(self, model: torch.nn.Module, max_text_length: int) -> None:
        super().__init__(model, time_scale=1.0)
        c = model.config
        if c.global_states_input_dim != TIMING_TOKENS * c.cross_attention_input_dim:
            raise ValueError(
                f"StableAudioDiTModel: global_states_input_dim {c.global_states_input_dim} is not "
                f"{TIMING_TOKENS} x cross_attention_input_dim {c.cross_attention_input_dim} (the two timing tokens)"
            )
        self.max_text_length = int(max_text_length)
        self.rotary_dim = int(c.attention_head_dim) // 2
        self.window_frames = int(c.sample_size)  # AudioPipeline samples at least this window, then cuts

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        if context is None or context.shape[1] <= TIMING_TOKENS:
            raise ValueError("StableAudioBackbone needs a context of text tokens and the two timing tokens")
        b, dtype = x.shape[0], self.dtype
        text_len = context.shape[1] - TIMING_TOKENS
        if text_len > self.max_text_length:
            raise ValueError(f"StableAudioBackbone: {text_len} text tokens, more than {self.max_text_length}")
        global_states = context[:, text_len:].reshape(b, 1, -1)  # [b 1 2*dim] seconds_start | seconds_total
        if context_mask is not None:
            context = context * context_mask[..., None].to(context.dtype)  # [b l+2 dim] masked tokens zero
        text = F.pad(context[:, :text_len], (0, 0, 0, self.max_text_length - text_len))  # [b L dim]
        cross = torch.cat([text, context[:, text_len:]], dim=1)  # [b L+2 dim]
        cos, sin = get_1d_rotary_pos_embed(
            self.rotary_dim, x.shape[2] + 1, use_real=True, repeat_interleave_real=False
        )  # [f+1 rotary_dim] each: the global token, then the latent frames
        out = self.model(
            x.to(dtype),
            self.timestep(t).to(dtype),
            encoder_hidden_states=cross.to(dtype),
            global_hidden_states=global_states.to(dtype),
            rotary_embedding=(cos.to(x.device), sin.to(x.device)),
            return_dict=False,
        )[0]  # [b c f]
        return out.to(x.dtype)


@dataclass(frozen=True)
class OobleckInfo(AutoencoderInfo):
    """What ``AudioPipeline`` reads off an audio autoencoder: samples per latent frame, channels, rate."""

    ratio: int = 1  # waveform samples per latent frame (the VAE's hop_length)
    in_channels: int = 2  # audio channels
    sample_rate: int = 44100


class StableAudioAutoencoder(DiffusersAutoencoder):
    """``AutoencoderOobleck`` as ``encode`` / ``decode`` / ``latent_shape`` over waveforms ``[b c t]``.

    Stable Audio Open's latents are used unscaled (``StableAudioPipeline`` decodes them as sampled);
    ``encode`` takes the posterior mean.
    """

    def __init__(self, vae: torch.nn.Module) -> None:
        c = vae.config
        ratio = int(math.prod(c.downsampling_ratios))
        info = OobleckInfo(
            latent_channels=int(c.decoder_input_channels),
            temporal_ratio=ratio,
            ratio=ratio,
            in_channels=int(c.audio_channels),
            sample_rate=int(c.sampling_rate),
        )
        super().__init__(vae, info)

    def latent_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        b, _, t = input_shape
        r = self.config.ratio
        if t < r or t % r:
            raise ValueError(
                f"audio length must be a positive multiple of {r} samples (the VAE's hop), got {t}"
            )
        return (b, self.config.latent_channels, t // r)


def components(folder: Path, device: torch.device) -> dict[str, Any]:
    """A ``StableAudioPipeline`` folder -> the keyword arguments of ``AudioPipeline`` (+ ``sampler_options``).

    Defaults follow ``StableAudioPipeline.__call__``: the model's full window
    (``sample_size * hop_length`` samples), 100 steps, guidance 7, the scheduler's sampler and grid.
    """
    from diffusers import AutoencoderOobleck, StableAudioDiTModel, StableAudioProjectionModel

    from mediadiff.text import load_text_encoder

    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    settings = scheduler_settings(scheduler)
    if settings.prediction != "v" or not isinstance(settings.schedule, CosineSchedule):
        raise ValueError(
            f"{folder}: Stable Audio's transformer takes the cosine schedule's time (CosineDPMSolverMultistepScheduler), "
            f"not {scheduler.get('_class_name')!r}"
        )
    transformer = StableAudioDiTModel.from_pretrained(folder / "transformer", dtype=torch.float32)
    vae = AutoencoderOobleck.from_pretrained(folder / "vae", dtype=torch.float32)
    projection = StableAudioProjectionModel.from_pretrained(folder / "projection_model", dtype=torch.float32)
    tokenizer_config = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
    max_length = int(tokenizer_config.get("model_max_length", 128))
    text_encoder = load_text_encoder(
        folder / "text_encoder", tokenizer=folder / "tokenizer", max_length=max_length, device=device
    )
    backbone = StableAudioBackbone(transformer, max_length)
    autoencoder = StableAudioAutoencoder(vae)
    projection.to(device).eval().requires_grad_(False)
    defaults = {
        "num_samples": int(transformer.config.sample_size) * autoencoder.config.ratio,
        "sample_rate": autoencoder.config.sample_rate,
        "steps": 100,
        "guidance_scale": 7.0,
    }
    text_encoder = StableAudioText(text_encoder, projection)
    info = {"scheduler": scheduler.get("_class_name"), "notes": settings.notes}
    return pipeline_components(backbone, autoencoder, text_encoder, settings, defaults, info, device)
