"""A small Vocos-style vocoder: normalised log-mel ``[b c m f]`` -> waveform ``[b c f*hop]``.

Vocos (Siuzdenko 2023, "Vocos: Closing the gap between time-domain and Fourier-based neural vocoders
for audio synthesis", Sec. 3) keeps every layer at the *frame* rate: a stack of ConvNeXt blocks (Liu
et al. 2022, "A ConvNet for the 2020s": depthwise conv, LayerNorm, pointwise MLP, layer scale) and a
head that predicts the STFT of the output, magnitude ``exp(m)`` and phase ``atan2(sin, cos)`` of a
free angle, turned into samples by an inverse STFT. There is no learned up-sampling, so a 1 s clip at
16 kHz is 64 frames of work: cheap on a CPU.

:class:`ISTFTHead` is shared with the waveform autoencoder's decoder
(:class:`~mediadiff.audio.autoencoder.WaveformVAE` with ``head="istft"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mediadiff.nn import ConfigModel

from .mel import LogMel, MelConfig

__all__ = ["ChannelNorm", "ConvNeXtBlock", "ISTFTHead", "Vocoder", "VocoderConfig", "istft_same"]


def istft_same(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Inverse STFT with "same" padding: ``[b n_fft/2+1 f]`` complex -> ``[b f*hop]``.

    Overlap-add of windowed inverse FFTs (Allen & Rabiner 1977), divided by the summed squared window,
    then ``(n_fft - hop) / 2`` samples trimmed from each end, so ``f`` frames give exactly ``f * hop``
    samples and frame ``i`` is centred on sample ``(i + 1/2) * hop`` (the framing of
    :class:`~mediadiff.audio.mel.LogMel`). ``torch.istft`` needs ``center=True`` for this window, hence by hand.
    """
    frames = spec.shape[-1]
    pad = (n_fft - hop) // 2
    chunks = torch.fft.irfft(spec, n=n_fft, dim=1) * window[None, :, None]  # [b n_fft f]
    length = (frames - 1) * hop + n_fft
    audio = F.fold(chunks, (1, length), (1, n_fft), stride=(1, hop))[:, 0, 0]  # [b length]
    envelope = F.fold(
        window.square()[None, :, None].expand(1, -1, frames), (1, length), (1, n_fft), stride=(1, hop)
    )[0, 0, 0]  # [length]
    return (audio / envelope.clamp_min(1e-11))[:, pad : length - pad]  # [b f*hop]


class ISTFTHead(nn.Module):
    """Features ``[b d f]`` -> waveform ``[b f*hop]`` through a predicted STFT (Vocos, Sec. 3.2).

    A linear layer gives ``n_fft/2 + 1`` log-magnitudes ``m`` and as many angles ``p``; the spectrum is
    ``exp(m) * (cos p + i sin p)`` (magnitude capped at 100), inverted by :func:`istft_same`.
    """

    def __init__(self, dim: int, n_fft: int, hop: int) -> None:
        super().__init__()
        if n_fft < hop or (n_fft - hop) % 2:
            raise ValueError(
                f"ISTFTHead: n_fft ({n_fft}) must be >= hop ({hop}) and differ by an even number"
            )
        self.n_fft, self.hop = n_fft, hop
        self.proj = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x.transpose(1, 2)).transpose(1, 2).float()  # [b n_fft+2 f]
        log_mag, angle = h.chunk(2, dim=1)  # [b n_fft/2+1 f] each
        magnitude = log_mag.exp().clamp(max=1e2)
        spec = torch.polar(magnitude, angle)  # [b n_fft/2+1 f] complex
        return istft_same(spec, self.n_fft, self.hop, self.window.float())  # [b f*hop]


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of ``[b c t]`` (each time step normalised on its own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)  # [b c t]


class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block (Liu et al. 2022, Fig. 4; Vocos): depthwise conv, LayerNorm, MLP, layer scale."""

    def __init__(self, dim: int, mult: float = 3.0, kernel: int = 7, layer_scale: float = 1e-1) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mult)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).transpose(1, 2)  # [b f d]
        h = self.mlp(self.norm(h)) * self.gamma  # [b f d]
        return x + h.transpose(1, 2)  # [b d f]


@dataclass(frozen=True)
class VocoderConfig:
    """Architecture of :class:`Vocoder` and the mel analysis it inverts."""

    dim: int = 128
    mult: float = 3.0  # ConvNeXt MLP width / dim
    num_blocks: int = 6
    kernel: int = 7
    mel: MelConfig = field(default_factory=MelConfig)

    def __post_init__(self) -> None:
        if isinstance(self.mel, dict):  # from JSON
            object.__setattr__(self, "mel", MelConfig(**self.mel))
        if self.dim < 1 or self.num_blocks < 0:
            raise ValueError(
                f"VocoderConfig: dim must be >= 1 and num_blocks >= 0, got {self.dim}, {self.num_blocks}"
            )


class Vocoder(ConfigModel):
    """Vocos-style vocoder (module docstring): ``vocoder(mel [b c m f]) -> audio [b c f*hop]``.

    ``mel`` is what :class:`~mediadiff.audio.mel.LogMel` with ``config.mel`` makes (normalised log-mel);
    :meth:`mel_of` computes it from audio. Channels are vocoded independently.
    """

    config_class = VocoderConfig
    presets: ClassVar[dict[str, VocoderConfig]] = {
        "tiny": VocoderConfig(dim=32, num_blocks=1),
        "S": VocoderConfig(dim=128, num_blocks=6),
        "B": VocoderConfig(dim=384, num_blocks=8),
    }

    def __init__(self, config: VocoderConfig | dict | None = None, **overrides) -> None:
        super().__init__(config, **overrides)
        c = self.config
        self.embed = nn.Conv1d(c.mel.n_mels, c.dim, c.kernel, padding=c.kernel // 2)
        self.norm_in = ChannelNorm(c.dim, eps=1e-6)
        scale = 1.0 / max(1, c.num_blocks)
        self.blocks = nn.ModuleList(
            [ConvNeXtBlock(c.dim, c.mult, c.kernel, layer_scale=scale) for _ in range(c.num_blocks)]
        )
        self.norm_out = ChannelNorm(c.dim, eps=1e-6)
        self.head = ISTFTHead(c.dim, c.mel.n_fft, c.mel.hop_length)
        self._mel = LogMel(c.mel)

    def mel_of(self, audio: torch.Tensor) -> torch.Tensor:
        """The input this vocoder expects for ``audio`` ``[b c t]``: normalised log-mel ``[b c m t/hop]``."""
        return self._mel(audio)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        c = self.config
        if mel.dim() != 4 or mel.shape[2] != c.mel.n_mels:
            raise ValueError(f"Vocoder: mel must be [b c {c.mel.n_mels} f], got shape {tuple(mel.shape)}")
        b, ch, _, _ = mel.shape
        h = self.embed(mel.flatten(0, 1))  # [b*c d f]
        h = self.norm_in(h)  # [b*c d f]
        for block in self.blocks:
            h = block(h)  # [b*c d f]
        h = self.norm_out(h)
        audio = self.head(h)  # [b*c f*hop]
        return audio.view(b, ch, -1)  # [b c f*hop]
