"""LTX-Video (HaCohen et al. 2024, "LTX-Video: Realtime Video Latent Diffusion") from a diffusers folder.

A folder that diffusers' ``LTXPipeline`` reads (``model_index.json`` naming an
``LTXVideoTransformer3DModel``, an ``AutoencoderKLLTXVideo``, a T5 encoder and tokenizer and a
``FlowMatchEulerDiscreteScheduler``) becomes mediadiff parts that sample what ``LTXPipeline`` samples:

- the transformer predicts the rectified-flow velocity ``eps - x0`` over tokens of the latent video
  (patchified ``[b c f h w] -> [b (f h w) (c pt p p)]``), at diffusers' time ``sigma * 1000``, with
  the T5 tokens and their mask, and 3-D RoPE whose positions are scaled by
  ``(temporal_ratio / frame_rate, spatial_ratio, spatial_ratio)`` (``rope_interpolation_scale``);
- the autoencoder normalises latents per channel, ``(z - latents_mean) * scaling_factor / latents_std``
  (the ``latents_mean`` / ``latents_std`` buffers of the VAE), as ``LTXPipeline`` does;
- the schedule: ``LTXPipeline`` passes ``sigmas = linspace(1, 1 / steps, steps)`` with
  ``mu = calculate_shift(f' h' w')`` (a line through ``(base_image_seq_len, base_shift)`` and
  ``(max_image_seq_len, max_shift)``), and the scheduler's exponential time shift
  ``exp(mu) / (exp(mu) + (1 / t - 1))`` is Esser et al. 2024, Eq. 23 with ``shift = exp(mu)``: so
  :class:`~mediadiff.diffusion.FlowSchedule` ``(shift=exp(mu))`` and its ``linspace`` grid are the
  same steps. As ``mu`` follows the latent size asked for, the grid is a rule (:class:`LTXGrid`,
  with the scheduler's ``shift_terminal`` stretch) that the pipeline completes with the latent shape;
- the text: T5 over 128 tokens (LTXPipeline's ``max_sequence_length``), run with no attention mask,
  the mask then given to the transformer's cross-attention.

Not reproduced: LTXPipeline's optional decode noise (``decode_noise_scale > 0`` draws fresh noise before
a timestep-conditioned VAE decodes; its default is none).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mediadiff.nn.diffusers import AutoencoderInfo, DiffusersBackbone, pipeline_components

from .diffusers_common import CausalVideoAutoencoder

__all__ = ["DEFAULTS", "LTXAutoencoder", "LTXBackbone", "LTXGrid", "calculate_shift", "components"]


def calculate_shift(
    seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """``mu`` of the resolution-dependent shift (Esser et al. 2024, Sec. 5.3.2; diffusers' Flux / LTX
    ``calculate_shift``): linear in the token count through ``(base_seq_len, base_shift)`` and
    ``(max_seq_len, max_shift)``. The time shift is then ``exp(mu)``."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (seq_len - base_seq_len)


class LTXBackbone(DiffusersBackbone):
    """``LTXVideoTransformer3DModel`` behind mediadiff's ``backbone(x, t, context, context_mask)``.

    x: ``[b c f h w]`` latents (rectified flow: ``x = (1 - t) x0 + t eps``), t: ``[b]`` in [0, 1]
    (diffusers' sigma; the model takes ``1000 t``); predicts the velocity ``eps - x0`` (``"flow"``).
    ``frame_rate``, ``temporal_ratio`` and ``spatial_ratio`` give the RoPE scale LTXPipeline passes,
    ``(temporal_ratio / frame_rate, spatial_ratio, spatial_ratio)``; LTXPipeline's default frame rate is 25.
    """

    context_field = "caption_channels"

    def __init__(
        self, model: nn.Module, *, temporal_ratio: int, spatial_ratio: int, frame_rate: float = 25.0
    ) -> None:
        super().__init__(model, time_scale=1000.0)
        cfg = model.config
        self.temporal_ratio, self.spatial_ratio = int(temporal_ratio), int(spatial_ratio)
        self.frame_rate = float(frame_rate)
        self.patch, self.patch_t = int(cfg.patch_size), int(cfg.patch_size_t)

    def size_multiples(self) -> tuple[int, int, int]:
        """Latent frames, height and width must be multiples of the patch sizes."""
        return (self.patch_t, self.patch, self.patch)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # x: [b c f h w]  t: [b]  context: [b l d]  context_mask: [b l]
        context = self.text_context(context)
        b, c, f, h, w = x.shape
        p, pt = self.patch, self.patch_t
        tokens = x.reshape(b, c, f // pt, pt, h // p, p, w // p, p)  # [b c f' pt h' p w' p]
        tokens = tokens.permute(0, 2, 4, 6, 1, 3, 5, 7)  # [b f' h' w' c pt p p]
        tokens = tokens.flatten(4, 7).flatten(1, 3)  # [b (f' h' w') (c pt p p)]
        dtype = self.dtype
        scale = (self.temporal_ratio / self.frame_rate, self.spatial_ratio, self.spatial_ratio)
        out = self.model(
            hidden_states=tokens.to(dtype),
            encoder_hidden_states=context,
            timestep=self.timestep(t).to(dtype),
            encoder_attention_mask=context_mask,
            num_frames=f,  # LTXPipeline passes the latent sizes
            height=h,
            width=w,
            rope_interpolation_scale=scale,
            return_dict=False,
        )[0]  # [b (f' h' w') (c pt p p)]
        out = out.reshape(b, f // pt, h // p, w // p, -1, pt, p, p)  # [b f' h' w' c pt p p]
        return out.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, -1, f, h, w).to(x.dtype)  # [b c f h w]


class LTXAutoencoder(CausalVideoAutoencoder):
    """``AutoencoderKLLTXVideo`` with latents normalised as LTXPipeline does,
    ``(z - latents_mean) * scaling_factor / latents_std`` per channel (the VAE's ``latents_mean`` /
    ``latents_std`` buffers).

    Video ``[b 3 f h w]`` in [-1, 1] with ``f = 1 + k * temporal_ratio`` <-> latents
    ``[b c 1+(f-1)/rt h/rs w/rs]``. ``encode`` gives the posterior mode. A VAE with
    ``timestep_conditioning`` decodes at ``decode_timestep`` with no added noise (LTXPipeline first blends
    in ``decode_noise_scale`` of fresh noise, by default as much as ``decode_timestep``).
    """

    vae_name = "AutoencoderKLLTXVideo"

    def __init__(self, model: nn.Module, decode_timestep: float = 0.0) -> None:
        info = AutoencoderInfo(
            latent_channels=int(model.config.latent_channels),
            temporal_ratio=int(model.temporal_compression_ratio),
            spatial_ratio=int(model.spatial_compression_ratio),
        )
        sf = float(model.config.scaling_factor)
        mean = model.latents_mean.detach().float().cpu()  # [c]
        std = model.latents_std.detach().float().cpu()  # [c]
        super().__init__(model, info, scale=(sf / std).tolist(), shift=mean.tolist())
        self.decode_timestep = float(decode_timestep)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents ``[b c f' h' w']`` -> video ``[b 3 f h w]`` in about [-1, 1]."""
        temb = None
        if self.model.config.timestep_conditioning:
            temb = torch.full((z.shape[0],), self.decode_timestep, device=z.device, dtype=self.dtype)  # [b]
        return super().decode_raw(z, temb)  # [b 3 f h w]


@dataclass(frozen=True)
class LTXGrid:
    """LTXPipeline's sigmas as a grid rule for :func:`~mediadiff.diffusion.sample` (``timesteps=``).

    ``linspace(1, 1 / steps, steps)``, shifted by ``exp(mu)`` with ``mu = calculate_shift(seq_len, ...)``
    (the scheduler's exponential time shift ``e^mu / (e^mu + 1 / t - 1)``, Esser et al. 2024, Eq. 23 with
    ``shift = e^mu``), then, where ``shift_terminal`` is set, stretched so the last sigma is
    ``shift_terminal``: ``1 - (1 - t) * (1 - shift_terminal) / (1 - t_last)`` (diffusers'
    ``stretch_shift_to_terminal``). ``time_shift_type`` ``"linear"`` shifts by ``mu`` itself
    (``mu / (mu + 1 / t - 1)``). ``seq_len`` is the latent ``f' h' w'``; a pipeline fills it in
    through :meth:`for_latent` (so the shift follows the size asked for, as in LTXPipeline).
    """

    base_seq_len: int = 256
    max_seq_len: int = 4096
    base_shift: float = 0.5
    max_shift: float = 1.15
    shift_terminal: float | None = None
    time_shift_type: str = "exponential"
    seq_len: int | None = None

    def __post_init__(self) -> None:
        if self.time_shift_type not in ("exponential", "linear"):
            raise ValueError(
                f"time_shift_type must be 'exponential' or 'linear', got {self.time_shift_type!r}"
            )

    def shift(self, seq_len: int) -> float:
        """The time shift at ``seq_len`` latent positions: ``exp(mu)`` (or ``mu`` for the linear type)."""
        mu = calculate_shift(seq_len, self.base_seq_len, self.max_seq_len, self.base_shift, self.max_shift)
        return math.exp(mu) if self.time_shift_type == "exponential" else mu

    def for_latent(self, latent: Sequence[int]) -> LTXGrid:
        """This rule for a latent ``(c, f', h', w')``."""
        return replace(self, seq_len=math.prod(int(n) for n in latent[1:]))

    def __call__(self, steps: int) -> list[float]:
        if self.seq_len is None:
            raise ValueError("LTXGrid needs the latent size: call for_latent(latent) first")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        k = self.shift(self.seq_len)
        ts = [1 - i / steps for i in range(steps)]  # linspace(1, 1 / steps, steps)
        ts = [k * t / (1 + (k - 1) * t) for t in ts]
        if self.shift_terminal:
            stretch = (1 - ts[-1]) / (1 - self.shift_terminal)
            ts = [1 - (1 - t) / stretch for t in ts]
        return ts


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


DEFAULTS = {"num_frames": 161, "height": 512, "width": 704, "fps": 25, "steps": 50, "guidance_scale": 3.0}
"""LTXPipeline's own defaults (its ``__call__``: 161 frames of 512x704 at 25 fps, 50 steps, CFG 3)."""


def components(folder: Path, device: torch.device) -> dict[str, Any]:
    """The parts of a VideoPipeline for the LTXPipeline folder ``folder`` (see the module docstring).

    Text: T5 over 128 tokens (LTXPipeline's ``max_sequence_length``), encoded with no mask and the mask
    given to the transformer (``pad_mode="encoded_masked"``). Sampler: Euler on LTXPipeline's grid
    (:class:`LTXGrid`, which every sampler then uses, its shift following the size asked for).
    """
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    from mediadiff.diffusion import FlowSchedule
    from mediadiff.diffusion.interop import SchedulerSettings
    from mediadiff.text.encoder import TextEncoder

    folder = Path(folder)
    sched = _read_json(folder / "scheduler" / "scheduler_config.json")
    name = sched.get("_class_name")
    if name != "FlowMatchEulerDiscreteScheduler":
        raise ValueError(
            f"{folder}: LTXPipeline with a {name!r} scheduler; only FlowMatchEulerDiscreteScheduler is supported"
        )
    for key, harmless in {
        "invert_sigmas": False,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "stochastic_sampling": False,
    }.items():
        if sched.get(key, harmless) != harmless:
            raise ValueError(
                f"{folder}: FlowMatchEulerDiscreteScheduler {key}={sched[key]!r} is not supported"
            )
    if not sched.get("use_dynamic_shifting", False):
        raise ValueError(
            f"{folder}: LTXPipeline passes mu, which needs use_dynamic_shifting=True in the scheduler"
        )
    grid = LTXGrid(
        base_seq_len=int(sched.get("base_image_seq_len", 256)),
        max_seq_len=int(sched.get("max_image_seq_len", 4096)),
        base_shift=float(sched.get("base_shift", 0.5)),
        max_shift=float(sched.get("max_shift", 1.15)),
        shift_terminal=sched.get("shift_terminal"),
        time_shift_type=sched.get("time_shift_type", "exponential"),
    )
    transformer = LTXVideoTransformer3DModel.from_pretrained(
        folder / "transformer", torch_dtype=torch.float32
    )
    vae = AutoencoderKLLTXVideo.from_pretrained(folder / "vae", torch_dtype=torch.float32)
    autoencoder = LTXAutoencoder(vae)
    backbone = LTXBackbone(
        transformer,
        temporal_ratio=autoencoder.config.temporal_ratio,
        spatial_ratio=autoencoder.config.spatial_ratio,
        frame_rate=DEFAULTS["fps"],
    )
    text_encoder = TextEncoder(
        folder / "text_encoder",
        tokenizer=folder / "tokenizer",
        device=device,
        max_length=128,
        pad_mode="encoded_masked",
    )
    # alpha = 1 - t, sigma = t; the shift is the grid's (LTXGrid), which every sampler then uses
    settings = SchedulerSettings(FlowSchedule(), "flow", "euler", {"timesteps": grid})
    info = {"family": "ltx-video"}
    return pipeline_components(backbone, autoencoder, text_encoder, settings, DEFAULTS, info, device)
