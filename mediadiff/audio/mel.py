"""The log-mel front end, and Griffin-Lim back to audio.

:class:`LogMel` turns waveforms ``[b c t]`` into normalised log-mel spectrograms ``[b c m f]``
(``m`` mel bins, ``f = t / hop_length`` frames) with torchaudio's ``MelSpectrogram`` (so it runs on
the GPU with the tensors), magnitude (power 1) Slaney mels as HiFi-GAN and Vocos use, ``log`` of the
magnitude clamped at :attr:`MelConfig.floor`, then mapped to about ``[-1, 1]`` by a fixed affine map
(``(log_mel - shift) / scale``), so diffusion models see unit-scale data.

Framing is "same" padding (as Vocos' ISTFT head): the signal is reflect-padded by
``(n_fft - hop) / 2`` on both sides and framed without centring, so ``t`` samples give exactly
``t / hop`` frames (16384 samples at hop 256: 64 frames, where ``center=True`` would give 65, which
no U-Net divides). Frame ``i`` is centred on sample ``(i + 1/2) * hop``.

:class:`GriffinLim` inverts it with no training: the mel filterbank's least-squares inverse
(torchaudio ``InverseMelScale``) then Griffin & Lim's iterative phase recovery (Griffin & Lim 1984,
"Signal estimation from modified short-time Fourier transform"; the fast variant of Perraudin et
al. 2013 with momentum), torchaudio ``GriffinLim``. torchaudio frames with ``center=True`` (frame
``i`` centred on ``i * hop``), so the result is delayed by half a hop to line up with the input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GriffinLim", "LogMel", "MelConfig"]


@dataclass(frozen=True)
class MelConfig:
    """Analysis settings of :class:`LogMel`; a vocoder stores the one it was trained on."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 128  # 80 lose low notes: their partials sit between bands (README, "Audio")
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    floor: float = 1e-5  # magnitudes below this are clamped before the log (-100 dB)
    shift: float = -4.0  # normalised = (log_mel - shift) / scale: log(1e-5) = -11.5 -> -1.0 ...
    scale: float = 7.5  # ... and log(e^3.5 = 33, a loud partial's mel magnitude) -> 1.0

    def __post_init__(self) -> None:
        if self.n_fft < self.hop_length or (self.n_fft - self.hop_length) % 2:
            raise ValueError(
                f"MelConfig: n_fft ({self.n_fft}) must be >= hop_length ({self.hop_length}) "
                "and differ from it by an even number (same padding)"
            )
        if self.n_mels < 1 or self.scale <= 0 or self.floor <= 0:
            raise ValueError(f"MelConfig: n_mels, scale and floor must be positive, got {self}")

    @property
    def padding(self) -> int:
        """Reflect padding on each side for same-length framing."""
        return (self.n_fft - self.hop_length) // 2

    def num_frames(self, num_samples: int) -> int:
        """Frames of a clip of ``num_samples`` samples; raises unless the hop divides it."""
        if num_samples % self.hop_length:
            raise ValueError(
                f"audio length {num_samples} is not a multiple of the mel hop ({self.hop_length}); "
                f"crop or pad it to {num_samples // self.hop_length * self.hop_length} or "
                f"{-(-num_samples // self.hop_length) * self.hop_length} samples"
            )
        return num_samples // self.hop_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class LogMel(nn.Module):
    """Waveforms ``[b c t]`` in ``[-1, 1]`` -> normalised log-mel ``[b c m t/hop]`` (see module docstring)."""

    def __init__(self, config: MelConfig | None = None, **overrides) -> None:
        super().__init__()
        import torchaudio  # lazy: torchaudio loads its extension on import

        config = config or MelConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        c = self.config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=c.sample_rate,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            f_min=c.f_min,
            f_max=c.f_max,
            n_mels=c.n_mels,
            power=1.0,
            center=False,
            norm="slaney",
            mel_scale="slaney",
        )
        inverse = torch.linalg.pinv(self.mel.mel_scale.fb.T.double()).float()  # [bins m]
        self.register_buffer("inverse_fb", inverse, persistent=False)  # for linear_magnitude

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        """Mel magnitudes ``[b c m f]`` (not logged, not normalised) of ``audio`` ``[b c t]``."""
        if audio.dim() != 3:
            raise ValueError(f"audio must be [b c t], got shape {tuple(audio.shape)}")
        self.config.num_frames(audio.shape[-1])
        p = self.config.padding
        mode = "reflect" if audio.shape[-1] > p else "constant"  # reflection needs more samples than the pad
        x = F.pad(audio.float(), (p, p), mode=mode)  # [b c t+2p]
        return self.mel(x)  # [b c m t/hop]

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.magnitude(audio).clamp_min(self.config.floor).log())  # [b c m f]

    def linear_magnitude(self, mel: torch.Tensor, iterations: int = 0) -> torch.Tensor:
        """Normalised log-mel ``[b c m f]`` -> linear-frequency magnitudes ``[b c n_fft/2+1 f]``.

        The minimum-norm least-squares inverse of the mel filterbank (its pseudo-inverse, what torchaudio's
        ``InverseMelScale`` solves for), clipped at 0: the magnitudes Griffin-Lim starts from. The
        pseudo-inverse spreads a partial over the width of its mel band; ``iterations`` Richardson-Lucy
        steps (Richardson 1972; Lucy 1974: ``S <- S * F (M / F^T S) / F 1``, the multiplicative update of
        the KL divergence between ``M`` and ``F^T S`` for a fixed non-negative basis ``F``, Lee & Seung
        2001) keep ``S >= 0`` and draw it back into peaks where the partials are. Measured on 64 held-out
        Tones from 80 bands: the start pitch of 90.6% of notes survives the pseudo-inverse with
        peak-locked phase, 98.4% after 10 steps; from 128 bands 100% either way, the worst error of a
        trained vocoder 0.28 semitone with the steps and 0.38 without. Differentiable in ``mel``.
        """
        if iterations < 0:
            raise ValueError(f"linear_magnitude: iterations must be >= 0, got {iterations}")
        magnitude = self.denormalize(mel.float()).exp()  # [b c m f]
        linear = torch.einsum("km,bcmf->bckf", self.inverse_fb, magnitude).clamp_min(0)  # [b c bins f]
        if iterations:
            fb = self.mel.mel_scale.fb.float()  # [bins m]
            norm = fb.sum(1).clamp_min(1e-8)[:, None]  # [bins 1]
            linear = linear.clamp_min(self.config.floor)  # a zero never grows back
            for _ in range(iterations):
                ratio = magnitude / torch.einsum("km,bckf->bcmf", fb, linear).clamp_min(1e-10)  # [b c m f]
                linear = linear * torch.einsum("km,bcmf->bckf", fb, ratio) / norm  # [b c bins f]
        return linear

    def normalize(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Natural-log mel -> about ``[-1, 1]``."""
        return (log_mel - self.config.shift) / self.config.scale

    def denormalize(self, mel: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: back to natural-log mel magnitudes."""
        return mel * self.config.scale + self.config.shift

    def num_frames(self, num_samples: int) -> int:
        return self.config.num_frames(num_samples)


class GriffinLim(nn.Module):
    """Normalised log-mel ``[b c m f]`` -> waveform ``[b c f*hop]`` with no training (see module docstring).

    Args:
        config: the :class:`MelConfig` the spectrogram was made with.
        n_iter: Griffin-Lim iterations (32 by default, torchaudio's).
        momentum: the fast Griffin-Lim momentum (0.99, torchaudio's default).
        seed: seed of the random initial phase, so a decode is reproducible.
    """

    def __init__(
        self, config: MelConfig | None = None, n_iter: int = 32, momentum: float = 0.99, seed: int = 0
    ):
        super().__init__()
        import torchaudio

        self.config = c = config or MelConfig()
        self.seed = seed
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=c.n_fft // 2 + 1,
            n_mels=c.n_mels,
            sample_rate=c.sample_rate,
            f_min=c.f_min,
            f_max=c.f_max,
            norm="slaney",
            mel_scale="slaney",
        )
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=c.n_fft, n_iter=n_iter, hop_length=c.hop_length, power=1.0, momentum=momentum
        )

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.dim() != 4 or mel.shape[2] != self.config.n_mels:
            raise ValueError(f"mel must be [b c {self.config.n_mels} f], got shape {tuple(mel.shape)}")
        b, c, _, f = mel.shape
        c_ = self.config
        magnitude = (mel.float() * c_.scale + c_.shift).exp()  # [b c m f]
        linear = self.inverse_mel(magnitude.flatten(0, 1)).clamp_min(0)  # [b*c n_fft/2+1 f]
        half = c_.hop_length // 2
        self.griffin_lim.length = f * c_.hop_length - half
        fork = [mel.device] if mel.device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(self.seed)  # torchaudio draws the initial phase from the global generator
            audio = self.griffin_lim(linear)  # [b*c f*hop-half]
        audio = F.pad(audio, (half, 0))  # [b*c f*hop] frame i is centred on (i + 1/2) * hop
        return audio.view(b, c, -1).clamp(-1, 1)  # [b c f*hop]
