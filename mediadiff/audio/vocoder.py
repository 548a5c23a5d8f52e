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
from pathlib import Path
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


def stft_same(x: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """STFT with "same" padding, the inverse framing of :func:`istft_same`: ``[b t]`` -> complex
    ``[b n_fft/2+1 t/hop]``, frame ``i`` centred on sample ``(i + 1/2) * hop``."""
    pad = (n_fft - hop) // 2
    mode = "reflect" if x.shape[-1] > pad else "constant"  # reflection needs more samples than the pad
    x = F.pad(x.float()[:, None], (pad, pad), mode=mode)[:, 0]  # [b t+2pad]
    return torch.stft(x, n_fft, hop, window=window.float(), center=False, return_complex=True)  # [b bins f]


TONES_VOCODER_DIR = Path(__file__).resolve().parents[1] / "weights" / "audio_vocoder_tones"
"""The shipped vocoder, trained on Tones by ``recipes/audio/train_vocoder.py`` (its ``training.json``)."""

PHASES = ("integrated", "absolute", "locked")


def peak_locked_advance(log_mag: torch.Tensor, hop: int, n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase advance per hop of every bin, locked to its nearest spectral peak, and the bin's phase offset
    from that peak: ``[b bins f] -> ([b bins f], [b bins f])``.

    Each local maximum ``p`` of the log-magnitude is refined by a parabola through its neighbours,
    ``p + (m[p-1] - m[p+1]) / (2 (m[p-1] - 2 m[p] + m[p+1]))`` (Smith & Serra 1987, Sec. 3), and every bin
    advances at the frequency of its nearest peak: the phase vocoder's identity phase locking (Laroche &
    Dolson 1999). A window that starts at sample 0 has the phase of bin ``k`` of a sinusoid at bin ``p``
    turn by ``pi (k - p)`` (the Hann main lobe is real only about the window's centre), so the offset
    ``pi (k - nearest)`` keeps a lobe's bins adding up instead of cancelling. The peak positions are not
    differentiated; the refinement is.
    """
    bins = log_mag.shape[1]
    m = log_mag.float()
    left, right = F.pad(m, (0, 0, 1, 0), value=-1e4)[:, :-1], F.pad(m, (0, 0, 0, 1), value=-1e4)[:, 1:]
    peak = (m >= left) & (m > right)  # [b bins f]
    curvature = left - 2 * m + right
    offset = torch.where(
        peak & (curvature < -1e-6), 0.5 * (left - right) / curvature.clamp(max=-1e-6), torch.zeros_like(m)
    ).clamp(-0.5, 0.5)  # [b bins f] peak position within its bin
    index = torch.arange(bins, device=m.device).view(1, -1, 1).expand_as(m)
    below = torch.where(peak, index, -(10**6)).cummax(dim=1).values  # [b bins f] nearest peak at or below
    above = torch.where(peak, index, 10**6).flip(1).cummin(dim=1).values.flip(1)  # nearest at or above
    nearest = torch.where((index - below) <= (above - index), below, above)  # [b bins f]
    nearest = torch.where(nearest.abs() >= bins, index, nearest)  # no peak at all: the bin itself
    frequency = nearest + offset.gather(1, nearest)  # [b bins f] in bins
    return 2 * torch.pi * frequency * hop / n_fft, torch.pi * (index - nearest)  # [b bins f] each


class ISTFTHead(nn.Module):
    """Features ``[b d f]`` -> waveform ``[b f*hop]`` through a predicted STFT (Vocos, Sec. 3.2).

    A linear layer gives ``n_fft/2 + 1`` log-magnitudes ``m`` (magnitude ``exp(m)``, capped at 100) and
    as many phase numbers, turned into a spectrum inverted by :func:`istft_same`. Two phase models:

    - ``"absolute"`` (Vocos): the numbers are the phase of each frame.
    - ``"integrated"`` (the default): they are each bin's *phase advance* over one hop, the bin-centre
      advance ``2 pi k hop / n_fft`` plus a learned deviation in ``(-pi, pi)``, summed over frames: the
      instantaneous-frequency view of the phase vocoder (Flanagan & Golden 1966; Dolson 1986). A
      convolutional network is shift-invariant, so on a steady note it outputs the same numbers every
      frame; as absolute phases that can only make partials whose phase repeats each hop (multiples of
      ``sample_rate / hop``, 62.5 Hz at 16 kHz and hop 256: measured here, the vocoder snapped notes onto
      them), as phase advances it makes any frequency. The phase of the first frame is 0, so the output's
      absolute phase is not the input's (score it with magnitudes, not SI-SDR).
    - ``"locked"``: no phase numbers at all; each bin advances at the frequency of its nearest
      magnitude peak (:func:`peak_locked_advance`), summed over frames as above. The pitch is then
      exactly what the magnitudes say, which a network learns far more easily than a phase.

    :meth:`spectrum` exposes the phase anchor that chunked decoding carries from chunk to chunk.
    """

    def __init__(self, dim: int, n_fft: int, hop: int, phase: str = "integrated") -> None:
        super().__init__()
        if n_fft < hop or (n_fft - hop) % 2:
            raise ValueError(
                f"ISTFTHead: n_fft ({n_fft}) must be >= hop ({hop}) and differ by an even number"
            )
        if phase not in PHASES:
            raise ValueError(f"ISTFTHead: phase must be one of {PHASES}, got {phase!r}")
        self.n_fft, self.hop, self.phase = n_fft, hop, phase
        self.proj = nn.Linear(dim, n_fft // 2 + 1 if phase == "locked" else n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        advance = 2 * torch.pi * torch.arange(n_fft // 2 + 1) * hop / n_fft  # [bins] radians per hop
        self.register_buffer("advance", advance.view(1, -1, 1), persistent=False)

    def spectrum(
        self,
        x: torch.Tensor,
        anchor: int = -1,
        anchor_phase: torch.Tensor | None = None,
        log_mag_base: torch.Tensor | None = None,
        peaks_from: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(complex spectrum [b bins f], phase [b bins f])`` of features ``x`` ``[b d f]``.

        ``log_mag_base`` ``[b bins f]``, when given, is added to the predicted log-magnitudes (the network
        then predicts a correction to it). ``peaks_from`` ``[b bins f]``: with locked phase, the
        log-magnitudes whose peaks set the phase (default: the predicted ones).

        With integrated phase, frame ``anchor`` (``-1``: the frame before the first) has phase
        ``anchor_phase`` (``[b bins]``, default 0) and every other frame that plus the advances between.
        """
        h = self.proj(x.transpose(1, 2)).transpose(1, 2).float()  # [b n_fft+2 f] ([b bins f] if locked)
        log_mag, angle = (h, None) if self.phase == "locked" else h.chunk(2, dim=1)  # [b bins f] each
        if log_mag_base is not None:
            log_mag = log_mag + log_mag_base.float()
        if self.phase == "locked":
            peaks = log_mag if peaks_from is None else peaks_from.float()
            angle, lobe = peak_locked_advance(peaks, self.hop, self.n_fft)  # [b bins f] each
        magnitude = log_mag.exp().clamp(max=1e2)
        if self.phase in ("integrated", "locked"):
            steps = (
                angle if self.phase == "locked" else self.advance + torch.pi * torch.tanh(angle)
            )  # [b bins f]
            # float64: a long clip sums thousands of advances, and chunked decoding must agree with one pass
            total = steps.double().cumsum(dim=2)  # [b bins f] phase after each frame's advance
            at_anchor = (
                total[..., anchor : anchor + 1] if anchor >= 0 else total.new_zeros(total[..., :1].shape)
            )
            angle = total - at_anchor  # [b bins f] phase relative to the anchor frame
            if anchor_phase is not None:
                angle = angle + anchor_phase[..., None].double()
            angle = torch.remainder(angle, 2 * torch.pi).float()  # [b bins f] in [0, 2 pi)
        if self.phase == "locked":  # the carried phase is the integrated one; the lobe offset is per frame
            return torch.polar(magnitude, angle + lobe), angle  # [b bins f] complex, [b bins f]
        return torch.polar(magnitude, angle), angle  # [b bins f] complex, [b bins f]

    def synthesize(self, spec: torch.Tensor) -> torch.Tensor:
        """Complex spectrum ``[b bins f]`` -> samples ``[b f*hop]``."""
        return istft_same(spec, self.n_fft, self.hop, self.window.float())

    def forward(self, x: torch.Tensor, log_mag_base: torch.Tensor | None = None) -> torch.Tensor:
        return self.synthesize(self.spectrum(x, log_mag_base=log_mag_base)[0])  # [b f*hop]


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
    phase: str = "integrated"  # the ISTFT head's phase model: integrated | absolute (see ISTFTHead)
    mel: MelConfig = field(default_factory=MelConfig)
    head_fft: int = 0  # the ISTFT head's window (0: the mel's n_fft); hop is always the mel's
    # predict a log-magnitude correction to the mel's pseudo-inverse (LogMel.linear_magnitude)
    prior: bool = False
    prior_iterations: int = 0  # Richardson-Lucy steps that sharpen the prior (LogMel.linear_magnitude)
    # locked phase at the prior's peaks, not the corrected magnitudes': the pitch is the mel's, training
    # shapes only the magnitudes (measured: trained corrections moved the peaks, 100% -> 91% of pitches)
    phase_from_prior: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.mel, dict):  # from JSON
            object.__setattr__(self, "mel", MelConfig(**self.mel))
        if self.dim < 1 or self.num_blocks < 0:
            raise ValueError(
                f"VocoderConfig: dim must be >= 1 and num_blocks >= 0, got {self.dim}, {self.num_blocks}"
            )
        if self.phase_from_prior and not (self.prior and self.phase == "locked"):
            raise ValueError(
                f"VocoderConfig: phase_from_prior needs prior=True and phase='locked', got prior={self.prior}, "
                f"phase={self.phase!r}"
            )
        if self.prior_iterations < 0 or (self.prior_iterations and not self.prior):
            raise ValueError(
                f"VocoderConfig: prior_iterations must be >= 0 and needs prior=True, got "
                f"{self.prior_iterations} with prior={self.prior}"
            )
        if self.prior and self.head_fft not in (0, self.mel.n_fft):
            raise ValueError(
                f"VocoderConfig: prior=True needs the head's window to be the mel's ({self.mel.n_fft}), "
                f"got head_fft={self.head_fft}"
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
        self.head = ISTFTHead(c.dim, c.head_fft or c.mel.n_fft, c.mel.hop_length, c.phase)
        self._mel = LogMel(c.mel)
        if c.prior:  # start exactly at the pseudo-inverse: the correction begins at 0
            bins = c.mel.n_fft // 2 + 1
            nn.init.zeros_(self.head.proj.weight[:bins])
            nn.init.zeros_(self.head.proj.bias[:bins])

    @property
    def log_mel(self) -> LogMel:
        """The analysis this vocoder inverts (its :meth:`~mediadiff.audio.mel.LogMel.denormalize` too)."""
        return self._mel

    def mel_of(self, audio: torch.Tensor) -> torch.Tensor:
        """The input this vocoder expects for ``audio`` ``[b c t]``: normalised log-mel ``[b c m t/hop]``."""
        return self._mel(audio)

    def features(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``mel`` ``[b c m f]`` -> the head's input ``[b*c d f]`` and, with ``config.prior``, the prior
        log-magnitudes ``[b*c bins f]`` its prediction corrects (else ``None``): what :meth:`forward`
        and the waveform VAE's vocoder head (which carries the phase across chunks) give the head."""
        c = self.config
        if mel.dim() != 4 or mel.shape[2] != c.mel.n_mels:
            raise ValueError(f"Vocoder: mel must be [b c {c.mel.n_mels} f], got shape {tuple(mel.shape)}")
        h = self.embed(mel.flatten(0, 1))  # [b*c d f]
        h = self.norm_in(h)  # [b*c d f]
        for block in self.blocks:
            h = block(h)  # [b*c d f]
        h = self.norm_out(h)
        if not c.prior:
            return h, None
        linear = self._mel.linear_magnitude(mel.flatten(0, 1)[:, None], c.prior_iterations)[:, 0]
        return h, linear.clamp_min(c.mel.floor).log()  # [b*c d f], [b*c bins f]

    def spectrum(
        self,
        h: torch.Tensor,
        base: torch.Tensor | None,
        anchor: int = -1,
        anchor_phase: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's ``(complex spectrum, phase)`` ``[b*c bins f]`` of :meth:`features`' output, with the
        phase anchor of :meth:`ISTFTHead.spectrum` (chunked decoding)."""
        peaks = base if self.config.phase_from_prior else None
        return self.head.spectrum(h, anchor, anchor_phase, log_mag_base=base, peaks_from=peaks)

    def forward(
        self, mel: torch.Tensor, with_spectrum: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``mel`` ``[b c m f]`` -> audio ``[b c f*hop]``; with ``with_spectrum`` also the head's
        magnitudes ``[b c bins f]`` (what a spectral loss can compare with the target's STFT)."""
        b, ch = mel.shape[:2]
        h, base = self.features(mel)  # [b*c d f], [b*c bins f] or None
        spectrum = self.spectrum(h, base)[0]  # [b*c bins f] complex
        audio = self.head.synthesize(spectrum).view(b, ch, -1)  # [b c f*hop]
        if with_spectrum:
            return audio, spectrum.abs().view(b, ch, *spectrum.shape[1:])  # [b c f*hop], [b c bins f]
        return audio
