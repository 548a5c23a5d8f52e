"""Text-to-video sampling from parts: encode the prompts, integrate the guided ODE/SDE, decode.

This is the loop behind :class:`~mediadiff.video.pipeline.VideoPipeline` and the video recipes'
periodic evaluation, kept free of any folder format so that a recipe can call it on the EMA
weights it is training. Classifier-free guidance follows Ho & Salimans 2022 (Eq. 6): the
conditional and unconditional (empty or negative prompt) predictions come from one batched call.

Two layers: :func:`sample_video` starts from ready text contexts (the pipeline caches them), and
:func:`generate_video` encodes the prompts first.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch

from mediadiff.diffusion import Schedule, cfg, randn, sample
from mediadiff.text.context import Context, match_context, pack_context

__all__ = ["encode_prompts", "generate_video", "sample_video", "to_frames"]


def encode_prompts(
    text_encoder: Any, prompts: Sequence[str], negative: Sequence[str], device: torch.device | str
) -> tuple[Context, Context]:
    """Conditional and unconditional backbone kwargs (``context``, ``context_mask``), padded alike."""
    n = len(prompts)
    tokens, mask = pack_context(*text_encoder.encode([*prompts, *negative]))  # [2n l d], [2n l]
    tokens, mask = tokens.to(device), mask.to(device)
    cond = {"context": tokens[:n], "context_mask": mask[:n]}
    uncond = {"context": tokens[n:], "context_mask": mask[n:]}
    return cond, uncond


def to_frames(video: torch.Tensor) -> torch.Tensor:
    """``[b 3 f h w]`` in ``[-1, 1]`` -> uint8 ``[b f h w 3]`` on the CPU."""
    frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [b 3 f h w]
    return frames.permute(0, 2, 3, 4, 1).contiguous().cpu()  # [b f h w 3]


@torch.inference_mode()
def sample_video(
    backbone: torch.nn.Module,
    schedule: Schedule,
    autoencoder: torch.nn.Module,
    cond: Context,
    uncond: Context,
    *,
    num_frames: int,
    height: int,
    width: int,
    seeds: Sequence[int],
    prediction: str = "flow",
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    guidance_scale: float = 4.0,
    device: torch.device | str = "cpu",
    autocast: bool | None = None,
    progress: bool = False,
    sampler_options: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Sample one clip per seed from ready contexts; returns uint8 frames ``[b f h w 3]`` on the CPU.

    cond: ``{"context": [b l d], "context_mask": [b l]}`` on ``device``; uncond: the same with batch
    ``b`` or 1 (one unconditional context shared by all clips). Clip ``i`` starts from noise drawn by
    a CPU generator seeded with ``seeds[i]``, so a clip starts from the same noise alone or in a batch
    and on any device (and ends the same up to float rounding). ``guidance_scale`` 1 skips the
    unconditional pass. ``autocast``: bf16 autocast on the backbone and decoder (True), none (False),
    or whatever autocast state the caller is in (None).
    """
    device = torch.device(device)
    n = len(seeds)
    if cond["context"].shape[0] != n:
        raise ValueError(f"sample_video: {n} seeds but {cond['context'].shape[0]} conditional contexts")
    cond, uncond = match_context(cond, uncond)
    latent = autoencoder.latent_shape((1, 3, num_frames, height, width))[1:]  # (c, f', h', w')
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    noise = randn((n, *latent), generators, device=device)  # [b c f' h' w']
    guided = cfg(backbone, cond, uncond, scale=guidance_scale)
    amp = nullcontext() if autocast is None else torch.autocast(device.type, torch.bfloat16, enabled=autocast)
    with amp:
        z = sample(
            guided, noise, schedule, prediction, sampler, steps, progress=progress, **(sampler_options or {})
        )  # [b c f' h' w']
        video = autoencoder.decode(z.float())  # [b 3 f h w]
    return to_frames(video)  # [b f h w 3]


@torch.inference_mode()
def generate_video(
    backbone: torch.nn.Module,
    schedule: Schedule,
    text_encoder: Any,
    autoencoder: torch.nn.Module,
    prompts: Sequence[str],
    *,
    num_frames: int,
    height: int,
    width: int,
    negative_prompts: Sequence[str] | None = None,
    prediction: str = "flow",
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    guidance_scale: float = 4.0,
    seeds: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    autocast: bool | None = None,
    progress: bool = False,
    sampler_options: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Generate one clip per prompt; returns uint8 frames ``[b f h w 3]``.

    Clip ``i`` starts from noise drawn by a generator seeded with ``seeds[i]`` (default ``i``), so a
    clip is the same whether generated alone or in a batch. ``guidance_scale`` 1 skips the
    unconditional pass. ``autocast``: bf16 autocast on the backbone and decoder (True), none (False),
    or whatever autocast state the caller is in (None).
    """
    n = len(prompts)
    if n == 0:
        raise ValueError("generate_video: give at least one prompt")
    negative = list(negative_prompts) if negative_prompts is not None else [""] * n
    if len(negative) != n:
        raise ValueError(f"generate_video: {n} prompts but {len(negative)} negative prompts")
    seeds = list(range(n)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n:
        raise ValueError(f"generate_video: {n} prompts but {len(seeds)} seeds")
    device = torch.device(device)
    cond, uncond = encode_prompts(text_encoder, prompts, negative, device)
    return sample_video(
        backbone,
        schedule,
        autoencoder,
        cond,
        uncond,
        num_frames=num_frames,
        height=height,
        width=width,
        seeds=seeds,
        prediction=prediction,
        sampler=sampler,
        steps=steps,
        guidance_scale=guidance_scale,
        device=device,
        autocast=autocast,
        progress=progress,
        sampler_options=sampler_options,
    )
