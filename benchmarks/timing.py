"""Timing helpers of the backbone benchmarks (``backbones.py`` for video, ``audio_backbones.py`` for audio).

Scripts in this folder import it as a sibling module (``from timing import ...``): run them as
``python benchmarks/<script>.py`` from the repository root.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["perturb_", "seconds", "time_backbone", "timed"]


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call of ``fn`` in seconds; CUDA is synchronised before and after it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call; CUDA is synchronised around each call."""
    fn()
    return 1000 * statistics.median(seconds(fn, device) for _ in range(repeats))


def perturb_(model: nn.Module, generator: torch.Generator, scale: float = 0.02) -> nn.Module:
    """Add small noise to every parameter (leaving the zero init), so the numbers are those of a model in training."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator).to(p.device))
    return model


def time_backbone(
    model: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor,
    *,
    repeats: int,
    device: torch.device,
    optimizer_step: bool = False,
) -> dict[str, float]:
    """Forward and train-step times of ``model(x, t, context)`` in fp32 and bf16 autocast (ms, median of ``repeats``).

    Returns ``{"fwd_fp32", "train_fp32", "fwd_bf16", "train_bf16"}``. "fwd" is one ``torch.no_grad``
    call in eval mode; "train" is forward + backward of the mean square of the output in train mode,
    plus an AdamW step when ``optimizer_step`` (the optimizer is built once, before the warm-up).
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if optimizer_step else None
    row: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"

        def forward(bf16: bool = bf16) -> None:
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                model(x, t, context)

        def train_step(bf16: bool = bf16) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(x, t, context).float().square().mean()
            loss.backward()
            if optimizer is not None:
                optimizer.step()
            model.zero_grad(set_to_none=True)

        model.eval()
        row[f"fwd_{precision}"] = timed(forward, repeats, device)
        model.train()
        row[f"train_{precision}"] = timed(train_step, repeats, device)
    return row
