"""Pictures of audio: the log-mel spectrogram of each clip, one panel per clip with its title.

matplotlib with the Agg backend (no display needed), imported on first use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mediadiff.utils import pyplot, save_figure

from .mel import LogMel, MelConfig

__all__ = ["save_spectrograms"]

_TOP_DB = 80.0  # dynamic range drawn below each clip's loudest bin


def save_spectrograms(
    audio: np.ndarray | torch.Tensor,
    sample_rate: int,
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    n_mels: int = 128,
    columns: int = 1,
) -> Path:
    """Draw the log-mel spectrogram of each clip of ``audio`` ``[b c t]`` (channels averaged) as one
    PNG, one panel per clip titled ``titles[i]`` (``columns`` panels per row, filled row by row); time in
    seconds, frequency in Hz on a mel axis. Written atomically; returns the path."""
    plt = pyplot()
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    if x.dim() != 3:
        raise ValueError(f"save_spectrograms: audio must be [b c t], got shape {tuple(x.shape)}")
    config = MelConfig(sample_rate=sample_rate, n_mels=n_mels)
    log_mel = LogMel(config)
    mono = x.mean(1, keepdim=True)  # [b 1 t]
    mono = torch.nn.functional.pad(mono, (0, -mono.shape[-1] % config.hop_length))  # [b 1 t'] whole frames
    with torch.no_grad(), torch.autocast(mono.device.type, enabled=False):  # a picture needs no bf16
        mel = log_mel.magnitude(mono.float())[:, 0].float()  # [b m f] linear mel magnitudes
    db = 20 * torch.log10(mel.clamp_min(1e-5))  # [b m f]
    b, m = db.shape[:2]
    seconds = x.shape[-1] / sample_rate
    cols = max(1, min(columns, b))
    rows = -(-b // cols)
    fig, grid = plt.subplots(
        rows, cols, figsize=(8 * cols, 2.2 * rows), squeeze=False, constrained_layout=True
    )
    axes = grid.ravel()
    for ax in axes[b:]:
        ax.axis("off")
    for i, ax in enumerate(axes[:b]):
        top = float(db[i].max())
        ax.imshow(
            db[i].numpy(), origin="lower", aspect="auto", cmap="magma", vmin=top - _TOP_DB, vmax=top,
            extent=(0.0, seconds, 0, m),
        )  # fmt: skip
        ticks = [t for t in (250, 500, 1000, 2000, 4000, 8000) if t < sample_rate / 2]
        ax.set_yticks([_hz_to_bin(t, config) for t in ticks], [f"{t:g}" for t in ticks])
        ax.set_ylabel("Hz")
        if titles is not None and i < len(titles):
            ax.set_title(titles[i], fontsize=9, loc="left")
        if i >= b - cols:
            ax.set_xlabel("seconds")
    return save_figure(fig, path, dpi=100)


def _hz_to_bin(hz: float, config: MelConfig) -> float:
    """Position of ``hz`` on the mel-bin axis: the filters' centres are ``n_mels`` of ``n_mels + 2``
    equally spaced points on the Slaney mel scale from ``f_min`` to ``f_max`` (LogMel's filterbank)."""
    import librosa

    top = config.f_max if config.f_max is not None else config.sample_rate / 2
    lo, hi, at = (float(librosa.hz_to_mel(f, htk=False)) for f in (config.f_min, top, hz))
    return (at - lo) / (hi - lo) * (config.n_mels + 1) - 0.5  # centre of filter i at i + 0.5
