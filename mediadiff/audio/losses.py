"""Losses for training vocoders and waveform autoencoders.

- :class:`MultiResolutionSTFTLoss`: spectral convergence plus log-magnitude L1 summed over several
  STFT resolutions (Yamamoto et al. 2020, "Parallel WaveGAN", Sec. 2.3, Eqs. 4-6). One resolution
  trades time against frequency detail; several together leave no gap for artefacts to hide in.
- :func:`mel_loss`: L1 between log-mel spectrograms (HiFi-GAN, Kong et al. 2020, Eq. 4; Vocos).
- :class:`STFTDiscriminator`: a multi-resolution complex-STFT discriminator (EnCodec, Défossez et al.
  2022, Sec. 3.4) with hinge losses and feature matching (Kumar et al. 2019, MelGAN, Eq. 6), for the
  optional adversarial phase.
- :func:`si_sdr`: scale-invariant signal-to-distortion ratio (Le Roux et al. 2019, Eq. 4), a metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MultiResolutionSTFTLoss",
    "STFTDiscriminator",
    "discriminator_hinge_loss",
    "feature_matching_loss",
    "generator_hinge_loss",
    "mel_loss",
    "si_sdr",
    "spectral_convergence",
    "stft_magnitude",
]

DEFAULT_RESOLUTIONS: tuple[tuple[int, int], ...] = (
    (2048, 512),
    (1024, 256),
    (512, 128),
    (256, 64),
    (128, 32),
)


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, eps: float = 1e-7) -> torch.Tensor:
    """``|STFT|`` of ``x`` ``[b c t]`` (Hann window, centred): ``[b*c n_fft/2+1 frames]``, float32."""
    window = torch.hann_window(n_fft, device=x.device, dtype=torch.float32)
    mode = "reflect" if x.shape[-1] > n_fft // 2 else "constant"  # reflection needs more samples than the pad
    spec = torch.stft(x.float().flatten(0, 1), n_fft, hop, window=window, pad_mode=mode, return_complex=True)
    return spec.abs().clamp_min(eps)  # [b*c f n]  # [b*c f n]


class MultiResolutionSTFTLoss(nn.Module):
    """``sum_r [ ||S_r - S'_r||_F / ||S_r||_F + mean |log S_r - log S'_r| ]`` over ``resolutions``
    ``(n_fft, hop)`` (Yamamoto et al. 2020, Eqs. 4-6), divided by the number of resolutions.

    ``forward(prediction, target)`` takes waveforms ``[b c t]``.
    """

    def __init__(self, resolutions: Sequence[tuple[int, int]] = DEFAULT_RESOLUTIONS) -> None:
        super().__init__()
        if not resolutions:
            raise ValueError("MultiResolutionSTFTLoss needs at least one (n_fft, hop) resolution")
        self.resolutions = tuple((int(n), int(h)) for n, h in resolutions)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
        total = prediction.new_zeros((), dtype=torch.float32)
        for n_fft, hop in self.resolutions:
            s, t = stft_magnitude(prediction, n_fft, hop), stft_magnitude(target, n_fft, hop)  # [b*c f n]
            total = total + spectral_convergence(s, t) + (t.log() - s.log()).abs().mean()
        return total / len(self.resolutions)


def spectral_convergence(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||T - S||_F / ||T||_F`` per spectrogram, averaged (Yamamoto et al. 2020, Eq. 4): magnitudes
    ``[n f t]``, or ``[b c f t]`` (each ``[f t]`` its own). It weighs the loud bins, where a
    log-magnitude L1 weighs every bin alike."""
    s, t = prediction.float().flatten(0, -3), target.float().flatten(0, -3)  # [n f t]
    return (torch.linalg.norm(t - s, dim=(1, 2)) / torch.linalg.norm(t, dim=(1, 2)).clamp_min(1e-8)).mean()


def mel_loss(prediction_mel: torch.Tensor, target_mel: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of two (log-)mel spectrograms (HiFi-GAN, Eq. 4)."""
    return (prediction_mel.float() - target_mel.float()).abs().mean()


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per clip (Le Roux et al. 2019, Eq. 4); ``[b c t] -> [b]`` (channels pooled)."""
    e = estimate.float().flatten(1)  # [b c*t]
    r = reference.float().flatten(1)  # [b c*t]
    e = e - e.mean(1, keepdim=True)
    r = r - r.mean(1, keepdim=True)
    alpha = (e * r).sum(1, keepdim=True) / (r.pow(2).sum(1, keepdim=True) + eps)  # [b 1]
    target = alpha * r  # [b c*t]
    noise = e - target
    return 10 * torch.log10((target.pow(2).sum(1) + eps) / (noise.pow(2).sum(1) + eps))  # [b]


class _STFTScale(nn.Module):
    """One resolution of :class:`STFTDiscriminator`: 2-D convs over (real, imag) of an STFT."""

    def __init__(self, n_fft: int, hop: int, channels: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        c = channels
        self.convs = nn.ModuleList(
            [
                nn.utils.parametrizations.weight_norm(nn.Conv2d(2, c, (3, 9), padding=(1, 4))),
                nn.utils.parametrizations.weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                nn.utils.parametrizations.weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
                nn.utils.parametrizations.weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
            ]
        )
        self.out = nn.utils.parametrizations.weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        window = torch.hann_window(self.n_fft, device=x.device, dtype=torch.float32)
        mode = "reflect" if x.shape[-1] > self.n_fft // 2 else "constant"
        spec = torch.stft(
            x.float().flatten(0, 1), self.n_fft, self.hop, window=window, pad_mode=mode, return_complex=True
        )  # [b*c f n]
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [b*c 2 frames freq]
        features = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)  # [b*c ch frames freq']
            features.append(h)
        return self.out(h), features  # [b*c 1 frames freq']


class STFTDiscriminator(nn.Module):
    """Multi-resolution complex-STFT discriminator (EnCodec, Sec. 3.4): ``forward(x [b c t])`` returns
    ``(logits, features)``, one logit map and one feature list per resolution."""

    def __init__(
        self,
        resolutions: Sequence[tuple[int, int]] = ((1024, 256), (512, 128), (256, 64)),
        channels: int = 32,
    ) -> None:
        super().__init__()
        self.scales = nn.ModuleList([_STFTScale(n, h, channels) for n, h in resolutions])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, features = [], []
        for scale in self.scales:
            logit, feats = scale(x)
            logits.append(logit)
            features.append(feats)
        return logits, features


def discriminator_hinge_loss(
    real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]
) -> torch.Tensor:
    """``mean relu(1 - D(real)) + mean relu(1 + D(fake))``, averaged over resolutions (hinge GAN)."""
    terms = [
        F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real_logits, fake_logits, strict=True)
    ]
    return torch.stack(terms).mean()


def generator_hinge_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """``mean relu(1 - D(fake))``, averaged over resolutions (the generator side of the hinge GAN)."""
    return torch.stack([F.relu(1 - f).mean() for f in fake_logits]).mean()


def feature_matching_loss(
    real_features: list[list[torch.Tensor]], fake_features: list[list[torch.Tensor]]
) -> torch.Tensor:
    """L1 between the discriminator's features of real and generated audio (MelGAN, Eq. 6), with each
    layer scaled by the mean magnitude of its real features (as EnCodec does)."""
    terms = []
    for real, fake in zip(real_features, fake_features, strict=True):
        for r, f in zip(real, fake, strict=True):
            r = r.detach()
            terms.append((r - f).abs().mean() / (r.abs().mean() + 1e-6))
    return torch.stack(terms).mean()
