"""Audio autoencoders: a 1-D convolutional waveform VAE (Oobleck-style, built for a CPU), the log-mel
"autoencoder" of mel-domain models (:class:`MelAutoencoder`: log-mel in, vocoder or Griffin-Lim out), and identity.

Interface (DESIGN.md, "Autoencoders"): ``encode(x) -> z`` with ``x`` ``[b c t]`` in ``[-1, 1]`` and
``z`` ``[b zc t / ratio]`` already normalised (``latent_shift`` / ``latent_scale`` in the config),
``decode(z) -> x``, ``latent_shape(input_shape)``.

:class:`WaveformVAE` follows Stable Audio's Oobleck autoencoder (Evans et al. 2024, "Stable Audio
Open", Sec. 3.1; the DAC encoder of Kumar et al. 2023): residual units of dilated convolutions with
Snake activations (Ziyin et al. 2020, "Neural networks fail to learn periodic functions and how to fix
it"; the per-channel ``alpha`` of BigVGAN, Lee et al. 2023), weight-normalised convolutions, strided
convolutions down, transposed convolutions up, a diagonal Gaussian posterior with a small KL term.
The default keeps the full-rate layers out: ``patch = 4`` samples are folded into channels (a 1-D
pixel-unshuffle) before the first convolution and unfolded after the last, and three stride-4 stages
make the 256x ratio (16384 samples -> 64 latent frames of 16 channels).

Two other front and back ends are configurable, and were measured on this CPU (README, "Audio"):
``analysis="stft"`` (the encoder reads a fixed STFT: log-magnitude, cosine and sine of the phase) and
``head="istft"`` (the decoder stops at a lower frame rate and predicts an STFT through Vocos' head,
:class:`~mediadiff.audio.vocoder.ISTFTHead`, with absolute or integrated phase). With no waveform
target to match (an integrated phase starts each crop at 0) they learned the spectrum but not the
pitch; at 256x and 1000-2000 steps on this CPU neither did the sample-domain decoder with the
waveform L1 (6-25% of held-out notes). ``phase="locked"`` (each bin advances at its nearest
magnitude peak's frequency) leaves the decoder only magnitudes to learn.

The pair that keeps the pitch on this CPU works at the mel's frame rate: ``analysis="mel"`` (the
encoder reads the normalised log-mel, ``patch`` = the mel hop) and ``head="vocoder"`` (the decoder
makes a log-mel, and a :class:`~mediadiff.audio.vocoder.Vocoder` submodule, which the recipe can start
from a trained one and hold fixed, renders it: the mel's pseudo-inverse as the magnitude prior, the phase
locked to its peaks). Waveform in, waveform out, 256x with 16 channels as the default layout, but
the network learns a code of log-mel frames, a task of a few thousand steps, and the pitch is where the
decoded mel puts its partials.

The decoder sees no future limit: :meth:`WaveformVAE.decode` with ``chunk_size`` decodes windows of
latent frames with ``overlap`` frames of context on each side and keeps each window's centre, so long
audio decodes in flat memory with the same result as one pass (the overlap covers the receptive field).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from mediadiff.nn.autoencoder import (
    DiagonalGaussian,
    IdentityAutoencoder,
    LatentAutoencoder,
    check_latent_stats,
    load_model_folder,
)

from .mel import GriffinLim, LogMel, MelConfig
from .vocoder import ChannelNorm, ConvNeXtBlock, ISTFTHead, Vocoder, VocoderConfig, stft_same

__all__ = [
    "ANALYSES",
    "HEADS",
    "TONES_VAE_DIR",
    "IdentityAutoencoder",
    "MelAutoencoder",
    "MelAutoencoderConfig",
    "OobleckVAE",
    "OobleckVAEConfig",
    "Snake",
    "WaveformVAE",
    "WaveformVAEConfig",
    "load_autoencoder",
]

# The VAE that recipes/audio/train_vae.py trained on Tones (16 kHz mono), shipped in the package.
TONES_VAE_DIR = Path(__file__).resolve().parents[1] / "weights" / "audio_vae_tones"

HEADS = ("istft", "fold", "vocoder")
ANALYSES = ("stft", "fold", "mel")


@dataclass
class WaveformVAEConfig:
    """Architecture and latent normalisation of :class:`WaveformVAE`."""

    in_channels: int = 1  # audio channels
    latent_channels: int = 16
    patch: int = 4  # samples per encoder input frame (folded into channels, or the STFT / mel hop)
    analysis: str = "fold"  # encoder input: fold (samples into channels) | stft (a fixed STFT) | mel
    analysis_fft: int = 1024  # window of the analysis STFT
    strides: tuple[int, ...] = (4, 4, 4)  # strided stages after the fold; ratio = patch * prod(strides)
    decoder_strides: tuple[int, ...] | None = None  # up-sampling stages of the decoder (None: strides
    # mirrored); the head's hop is ratio / prod(decoder_strides): () decodes at the latent rate
    channels: tuple[int, ...] = (32, 64, 96, 128)  # width per level: len(strides) + 1 entries
    dilations: tuple[int, ...] = (1, 3, 9)  # one Snake residual unit per dilation at each encoder level
    decoder_dilations: tuple[int, ...] = (1, 3, 9)  # the same in the decoder
    kernel: int = 7
    head: str = "fold"  # fold (unfold samples) | istft | vocoder (a log-mel through a Vocoder)
    phase: str = "integrated"  # the ISTFT head's phase model: integrated | absolute | locked (ISTFTHead)
    n_fft: int = 0  # ISTFT head window (0: 4 * hop)
    head_blocks: int = 6  # ConvNeXt blocks of the decoder, before its head
    mel: MelConfig = field(default_factory=MelConfig)  # the log-mel of analysis="mel"
    vocoder: VocoderConfig | None = None  # head="vocoder": its vocoder (None: locked phase, mel prior)
    weight_norm: bool = True  # weight-normalised convolutions (Salimans & Kingma 2016), as Oobleck / DAC
    latent_shift: list[float] = field(default_factory=list)  # per latent channel; empty = zeros
    latent_scale: list[float] = field(default_factory=list)  # per latent channel; empty = ones

    def __post_init__(self) -> None:
        if isinstance(self.mel, dict):  # from JSON
            self.mel = MelConfig(**self.mel)
        if isinstance(self.vocoder, dict):
            self.vocoder = VocoderConfig(**self.vocoder)
        if self.head == "vocoder" and self.vocoder is None:
            self.vocoder = VocoderConfig(mel=self.mel, phase="locked", prior=True, phase_from_prior=True)
        self.strides = tuple(int(s) for s in self.strides)
        self.channels = tuple(int(c) for c in self.channels)
        self.dilations = tuple(int(d) for d in self.dilations)
        self.decoder_dilations = tuple(int(d) for d in self.decoder_dilations)
        if self.decoder_strides is None:
            self.decoder_strides = self.strides
        self.decoder_strides = tuple(int(s) for s in self.decoder_strides)
        if len(self.decoder_strides) > len(self.strides) or self.ratio % math.prod(self.decoder_strides):
            raise ValueError(
                f"WaveformVAEConfig: decoder_strides {self.decoder_strides} must have at most "
                f"len(strides) = {len(self.strides)} stages and divide the ratio {self.ratio}"
            )
        if len(self.channels) != len(self.strides) + 1:
            raise ValueError(
                f"WaveformVAEConfig: channels needs len(strides) + 1 = {len(self.strides) + 1} entries "
                f"(one per level), got {self.channels}"
            )
        if self.patch < 1 or any(s < 1 for s in self.strides):
            raise ValueError(
                f"WaveformVAEConfig: patch and strides must be >= 1, got {self.patch}, {self.strides}"
            )
        if self.analysis not in ANALYSES:
            raise ValueError(f"WaveformVAEConfig: analysis must be one of {ANALYSES}, got {self.analysis!r}")
        if self.analysis == "stft" and (
            self.analysis_fft < self.patch or (self.analysis_fft - self.patch) % 2
        ):
            raise ValueError(
                f"WaveformVAEConfig: analysis_fft ({self.analysis_fft}) must be >= patch ({self.patch}) "
                "and differ from it by an even number"
            )
        if self.analysis == "mel" and self.patch != self.mel.hop_length:
            raise ValueError(
                f"WaveformVAEConfig: analysis='mel' reads frames of the mel's hop ({self.mel.hop_length} "
                f"samples), so patch must be {self.mel.hop_length}, got {self.patch}"
            )
        if self.head not in HEADS:
            raise ValueError(f"WaveformVAEConfig: head must be one of {HEADS}, got {self.head!r}")
        if self.head == "vocoder" and self.hop != self.vocoder.mel.hop_length:
            raise ValueError(
                f"WaveformVAEConfig: head='vocoder' decodes log-mel frames of the vocoder's hop "
                f"({self.vocoder.mel.hop_length} samples), but the decoder's frames are {self.hop} samples "
                f"(ratio {self.ratio} / decoder strides {self.decoder_strides})"
            )
        if self.head == "vocoder" and self.analysis == "mel" and self.vocoder.mel != self.mel:
            raise ValueError(
                "WaveformVAEConfig: the analysis mel and the vocoder's mel differ; use one "
                f"(mel={self.mel}, vocoder.mel={self.vocoder.mel})"
            )
        if self.head == "istft" and (self.fft_size < self.hop or (self.fft_size - self.hop) % 2):
            raise ValueError(
                f"WaveformVAEConfig: n_fft ({self.fft_size}) must be >= the head's hop ({self.hop}) "
                "and differ from it by an even number"
            )
        check_latent_stats(self)

    @property
    def ratio(self) -> int:
        """Samples per latent frame."""
        return self.patch * math.prod(self.strides)

    @property
    def hop(self) -> int:
        """Samples per frame at the decoder's output (the ISTFT hop, or the unfold size)."""
        return self.ratio // math.prod(self.decoder_strides)

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """Decoder width per level, output level first: the deepest ``len(decoder_strides) + 1`` widths."""
        return self.channels[len(self.channels) - len(self.decoder_strides) - 1 :]

    @property
    def fft_size(self) -> int:
        return self.n_fft or 4 * self.hop

    @property
    def decoder_context(self) -> int:
        """Latent frames on each side that one output sample of the decoder can depend on (rounded up):
        the overlap chunked decoding needs to equal a single pass."""
        half, units = self.kernel // 2, sum(self.decoder_dilations) * (self.kernel // 2)
        up = self.decoder_strides
        per_latent = [math.prod(up[j:]) for j in range(len(up) + 1)]  # frames per latent frame, by level
        radius = half + units  # conv in + units at the latent rate, in latent frames
        for i in reversed(range(len(up))):
            radius += 1 + units / per_latent[i]  # transposed conv (one input frame) + units at level i
        if self.head == "istft":
            radius += (self.head_blocks * half + self.fft_size / (2 * self.hop)) / per_latent[0]
        elif self.head == "vocoder":  # the log-mel conv, then the vocoder's embedding, blocks and window
            v = self.vocoder
            head_fft = v.head_fft or v.mel.n_fft
            radius += (half + (1 + v.num_blocks) * (v.kernel // 2) + head_fft / (2 * self.hop)) / per_latent[
                0
            ]
        else:
            radius += half / per_latent[0]
        return math.ceil(radius)


class Snake(nn.Module):
    """``x + sin^2(alpha x) / alpha`` with a learned per-channel ``alpha`` (Ziyin et al. 2020, Eq. 2),
    parameterised by ``log alpha`` as in BigVGAN / Oobleck; input ``[b c t]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.log_alpha.exp()
        return x + torch.sin(alpha * x).pow(2) / (alpha + 1e-9)  # [b c t]


class ResidualUnit(nn.Module):
    """Snake, dilated conv, Snake, 1x1 conv, plus the input (the DAC / Oobleck residual unit)."""

    def __init__(self, channels: int, dilation: int, kernel: int) -> None:
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.block = nn.Sequential(
            Snake(channels),
            nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=pad),
            Snake(channels),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)  # [b c t]


class WaveformVAE(LatentAutoencoder):
    """1-D convolutional VAE for waveforms ``[b c t]`` (see the module docstring).

    ``t`` samples (a multiple of ``config.ratio``) become ``t / ratio`` latent frames of
    ``latent_channels`` channels.
    """

    config_class = WaveformVAEConfig
    latent_axes = 1

    def __init__(self, config: WaveformVAEConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = WaveformVAEConfig(**kwargs)
        elif kwargs:
            raise TypeError(f"pass either a config or keyword arguments, not both (got {sorted(kwargs)})")
        self.config = c = config
        ch, k = c.channels, c.kernel

        def units(width: int, dilations: tuple[int, ...] = c.dilations) -> list[nn.Module]:
            return [ResidualUnit(width, d, k) for d in dilations]

        # encoder: fold -> conv -> (units, Snake, strided conv) per stage -> units -> Snake -> conv
        features = {"fold": c.patch, "stft": 3 * (c.analysis_fft // 2 + 1), "mel": c.mel.n_mels}[c.analysis]
        self._mel = LogMel(c.mel) if c.analysis == "mel" else None
        enc: list[nn.Module] = [nn.Conv1d(c.in_channels * features, ch[0], k, padding=k // 2)]
        for i, s in enumerate(c.strides):
            enc += [
                *units(ch[i]),
                Snake(ch[i]),
                nn.Conv1d(ch[i], ch[i + 1], 2 * s, stride=s, padding=s // 2 + s % 2),
            ]
        enc += [*units(ch[-1]), Snake(ch[-1]), nn.Conv1d(ch[-1], 2 * c.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        # decoder: up-sampling stages (the encoder's mirror image, or fewer), ending in the ISTFT head or
        # an unfold of `hop` samples per frame
        ch = c.decoder_channels
        dec: list[nn.Module] = [nn.Conv1d(c.latent_channels, ch[-1], k, padding=k // 2)]
        for i in reversed(range(len(c.decoder_strides))):
            s = c.decoder_strides[i]
            dec += [
                *units(ch[i + 1], c.decoder_dilations),
                Snake(ch[i + 1]),
                nn.ConvTranspose1d(
                    ch[i + 1], ch[i], 2 * s, stride=s, padding=s // 2 + s % 2, output_padding=s % 2
                ),
            ]
        dec += units(ch[0], c.decoder_dilations)
        if c.head == "istft":
            dec += [
                ConvNeXtBlock(ch[0], kernel=k, layer_scale=1.0 / max(1, c.head_blocks))
                for _ in range(c.head_blocks)
            ]
            dec.append(ChannelNorm(ch[0], eps=1e-6))  # as Vocos: the head sees unit-scale features
            if c.in_channels > 1:  # one feature map per output channel, each through the shared head
                dec.append(nn.Conv1d(ch[0], ch[0] * c.in_channels, 1))
            self.head = ISTFTHead(ch[0], c.fft_size, c.hop, c.phase)
        elif c.head == "vocoder":  # the decoder makes a log-mel, the vocoder (a submodule) renders it
            dec += [Snake(ch[0]), nn.Conv1d(ch[0], c.in_channels * c.vocoder.mel.n_mels, k, padding=k // 2)]
            self.head = None
            self.vocoder = Vocoder(c.vocoder)
        else:
            dec += [Snake(ch[0]), nn.Conv1d(ch[0], c.in_channels * c.hop, k, padding=k // 2)]
            self.head = None
        self.decoder = nn.Sequential(*dec)
        if c.weight_norm:
            for module in [*self.encoder.modules(), *self.decoder.modules()]:
                if isinstance(module, nn.Conv1d | nn.ConvTranspose1d) and module.groups == 1:
                    nn.utils.parametrizations.weight_norm(module)
        self.init_latent_stats()

    # -------------------------------------------------------------------------------------- shapes

    def latent_shape(self, input_shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """Shape of ``encode(x)`` for ``x`` of ``input_shape`` ``(b, c, t)``; raises on a bad shape."""
        b, _, t = self._check_input_shape(tuple(input_shape))
        return (b, self.config.latent_channels, t // self.config.ratio)

    def output_shape(self, latent_shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """Shape of ``decode(z)`` for ``z`` of ``latent_shape`` ``(b, zc, f)``."""
        c = self.config
        if len(latent_shape) != 3 or latent_shape[1] != c.latent_channels:
            raise ValueError(
                f"latents must be [b {c.latent_channels} f] for this autoencoder, got shape {tuple(latent_shape)}"
            )
        b, _, f = latent_shape
        return (b, c.in_channels, f * c.ratio)

    def _check_input_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c = self.config
        if len(shape) != 3:
            raise ValueError(f"audio must be [b c t], got shape {shape}")
        if shape[1] != c.in_channels:
            raise ValueError(f"audio must have {c.in_channels} channel(s), got {shape[1]} (shape {shape})")
        if shape[2] < c.ratio or shape[2] % c.ratio:
            raise ValueError(
                f"audio length must be a positive multiple of {c.ratio} samples (the autoencoder's ratio), "
                f"got {shape[2]}; pad or crop to {max(1, round(shape[2] / c.ratio)) * c.ratio}"
            )
        return shape

    # -------------------------------------------------------------------------------------- encode / decode

    def encode_posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        """The posterior ``q(z|x)`` over *unnormalised* latents (what training uses)."""
        self._check_input_shape(tuple(x.shape))
        return DiagonalGaussian(self.encoder(self.analyse(x)))  # moments [b 2*zc t/ratio]

    def analyse(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input frames ``[b c*features t/patch]``: folded samples, a fixed STFT with hop
        ``patch`` ("same" framing, as the ISTFT head) as log-magnitude, cosine and sine of the phase, or
        the normalised log-mel (:class:`~mediadiff.audio.mel.LogMel` of ``config.mel``)."""
        c = self.config
        if c.analysis == "fold":
            return rearrange(x, "b c (t p) -> b (c p) t", p=c.patch)  # [b c*patch t/patch]
        if c.analysis == "mel":
            return rearrange(self._mel(x), "b c m f -> b (c m) f")  # [b c*m t/patch]
        window = torch.hann_window(c.analysis_fft, device=x.device)
        spec = stft_same(x.flatten(0, 1), c.analysis_fft, c.patch, window)  # [b*c n t/patch]
        magnitude = spec.abs().clamp_min(1e-5)
        phase = spec / magnitude  # unit complex
        h = torch.cat([(magnitude.log() + 4) / 4, phase.real, phase.imag], dim=1)  # [b*c 3n t/patch]
        return rearrange(h, "(b c) f t -> b (c f) t", c=c.in_channels)  # [b c*3n t/patch]

    def _decode(
        self, z: torch.Tensor, anchor: int = -1, anchor_phase: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Unnormalised ``z`` ``[b zc f]`` -> ``(audio [b c f*ratio], head phase [b*c bins frames] or None,
        decoded log-mel [b c m frames] or None)``; ``anchor`` / ``anchor_phase`` as
        :meth:`~mediadiff.audio.vocoder.ISTFTHead.spectrum`. The log-mel is the vocoder head's input."""
        c = self.config
        h = self.decoder(z)  # [b c0 frames] (istft), [b c*hop frames] (fold), [b c*m frames] (vocoder)
        if c.head == "fold":
            return rearrange(h, "b (c p) t -> b c (t p)", p=c.hop), None, None  # [b c f*ratio]
        mel = None
        if c.head == "vocoder":
            mel = self._as_mel(h)  # [b c m frames]
            h, base = self.vocoder.features(mel)  # [b*c d frames], [b*c bins frames] or None
            spec, phase = self.vocoder.spectrum(h, base, anchor, anchor_phase)  # [b*c bins frames]
        else:
            h = rearrange(h, "b (c d) t -> (b c) d t", c=c.in_channels)  # [b*c c0 frames]
            spec, phase = self.head.spectrum(h, anchor, anchor_phase)  # [b*c bins frames]
        audio = (self.head or self.vocoder.head).synthesize(spec)  # [b*c f*ratio]
        return rearrange(audio, "(b c) t -> b c t", c=c.in_channels), phase, mel  # [b c f*ratio]

    def _as_mel(self, h: torch.Tensor) -> torch.Tensor:
        """The vocoder head's decoder output ``[b c*m f]`` as log-mel ``[b c m f]``."""
        return rearrange(h, "b (c m) t -> b c m t", c=self.config.in_channels)  # [b c m f]

    def decode(
        self, z: torch.Tensor, chunk_size: int | None = None, overlap: int | None = None
    ) -> torch.Tensor:
        """Normalised latents ``[b zc f]`` -> audio ``[b c f*ratio]``, clamped to ``[-1, 1]``.

        ``chunk_size`` (latent frames) decodes windows with ``overlap`` frames of context each side and
        keeps their centres: memory stays flat in the length, and the result equals one pass when
        ``overlap`` covers the decoder's receptive field (the default, ``config.decoder_context``).
        """
        overlap = self.config.decoder_context if overlap is None else overlap
        self.output_shape(tuple(z.shape))
        z = self.denormalize(z.float())
        if chunk_size is None or chunk_size >= z.shape[-1]:
            return self._decode(z)[0].clamp(-1, 1)
        if chunk_size < 1 or overlap < 0:
            raise ValueError(
                f"chunk_size must be >= 1 and overlap >= 0 latent frames, got {chunk_size}, {overlap}"
            )
        r, f = self.config.ratio, z.shape[-1]
        q = r // self.config.hop  # head frames per latent frame
        out = z.new_empty(self.output_shape(tuple(z.shape)))  # [b c f*ratio]
        phase = None  # integrated phase of the head frame just before the chunk, carried across chunks
        for start in range(0, f, chunk_size):
            stop = min(f, start + chunk_size)
            lo, hi = max(0, start - overlap), min(f, stop + overlap)
            anchor = (start - lo) * q - 1  # the head frame before `start`, inside this window
            x, window_phase, _ = self._decode(
                z[..., lo:hi], anchor if start else -1, phase
            )  # [b c (hi-lo)*ratio]
            out[..., start * r : stop * r] = x[..., (start - lo) * r : (stop - lo) * r]
            if window_phase is not None:
                phase = window_phase[..., (stop - lo) * q - 1]  # [b*c bins] at the chunk's last frame
        return out.clamp(-1, 1)

    def forward(
        self,
        x: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
        with_mel: bool = False,
        render: bool = True,
    ):
        """Reconstruct ``x`` (not clamped); returns ``(reconstruction, posterior)`` (for training), and with
        ``with_mel`` the decoded log-mel ``[b c m frames]`` (``head="vocoder"``; else ``None``) third.
        ``render=False`` (``head="vocoder"`` only) stops at the decoded log-mel: the reconstruction is
        ``None`` and the vocoder does not run (a loss on the log-mel alone)."""
        posterior = self.encode_posterior(x)
        z = posterior.sample(generator) if sample else posterior.mean  # [b zc f]
        if not render:
            if self.config.head != "vocoder":
                raise ValueError(
                    f"render=False needs head='vocoder' (a decoded log-mel), not {self.config.head!r}"
                )
            mel = self._as_mel(self.decoder(z))  # [b c m f]
            return (None, posterior, mel) if with_mel else (None, posterior)
        audio, _, mel = self._decode(z)
        return (audio, posterior, mel) if with_mel else (audio, posterior)


@dataclass
class OobleckVAEConfig:
    """diffusers' ``AutoencoderOobleck`` settings (its names), and the stored latent normalisation.

    The latent has ``encoder_hidden_size / 2`` channels (diffusers splits the encoder's output into mean
    and scale), so ``encoder_hidden_size`` must be ``2 * latent_channels``.
    """

    in_channels: int = 1
    latent_channels: int = 16
    encoder_hidden_size: int = 32
    decoder_channels: int = 32
    downsampling_ratios: tuple[int, ...] = (2, 4, 4, 8)
    channel_multiples: tuple[int, ...] = (1, 2, 4, 8)
    sample_rate: int = 16000
    latent_shift: list[float] = field(default_factory=list)
    latent_scale: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.downsampling_ratios = tuple(int(r) for r in self.downsampling_ratios)
        self.channel_multiples = tuple(int(m) for m in self.channel_multiples)
        if self.encoder_hidden_size != 2 * self.latent_channels:
            raise ValueError(
                f"OobleckVAEConfig: encoder_hidden_size ({self.encoder_hidden_size}) must be 2 * latent_channels "
                f"({2 * self.latent_channels}): diffusers' Oobleck halves its encoder output into mean and scale"
            )
        if len(self.channel_multiples) != len(self.downsampling_ratios):
            raise ValueError("OobleckVAEConfig: channel_multiples needs one entry per downsampling ratio")
        check_latent_stats(self)

    @property
    def ratio(self) -> int:
        return math.prod(self.downsampling_ratios)


class OobleckVAE(LatentAutoencoder):
    """diffusers' ``AutoencoderOobleck`` (Stable Audio's autoencoder) behind this package's autoencoder
    interface, so the same recipe trains it and the same benchmark scores it: the reference side by side
    with :class:`WaveformVAE`. Its posterior (mean, ``softplus`` scale) becomes a :class:`DiagonalGaussian`
    with the same mean and variance, so the KL term is the one the waveform VAE is trained with.
    """

    config_class = OobleckVAEConfig
    latent_axes = 1

    def __init__(self, config: OobleckVAEConfig | None = None, **kwargs) -> None:
        super().__init__()
        from diffusers import AutoencoderOobleck  # lazy: diffusers is heavy to import

        self.config = c = config or OobleckVAEConfig(**kwargs)
        self.model = AutoencoderOobleck(
            encoder_hidden_size=c.encoder_hidden_size,
            downsampling_ratios=list(c.downsampling_ratios),
            channel_multiples=list(c.channel_multiples),
            decoder_channels=c.decoder_channels,
            decoder_input_channels=c.latent_channels,
            audio_channels=c.in_channels,
            sampling_rate=c.sample_rate,
        )
        self.init_latent_stats()

    def latent_shape(self, input_shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        b, c, t = input_shape if len(input_shape) == 3 else (None, None, None)
        if c != self.config.in_channels or t < self.config.ratio or t % self.config.ratio:
            raise ValueError(
                f"audio must be [b {self.config.in_channels} t] with t a multiple of {self.config.ratio}, "
                f"got shape {tuple(input_shape)}"
            )
        return (b, self.config.latent_channels, t // self.config.ratio)

    def encode_posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        self.latent_shape(tuple(x.shape))
        dist = self.model.encode(x).latent_dist
        return DiagonalGaussian(torch.cat([dist.mean, dist.std.pow(2).log()], dim=1))  # [b 2*zc f]

    def decode(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Normalised latents ``[b zc f]`` -> audio ``[b c f*ratio]`` (one pass; ``chunk_size`` is ignored)."""
        return self.model.decode(self.denormalize(z.float())).sample.clamp(-1, 1)

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        posterior = self.encode_posterior(x)
        z = posterior.sample(generator) if sample else posterior.mean  # [b zc f]
        return self.model.decode(z).sample, posterior


RENDERERS = ("vocoder", "griffin_lim")


@dataclass
class MelAutoencoderConfig:
    """The log-mel "autoencoder" of a mel-domain model: the analysis, and what renders a log-mel as audio."""

    in_channels: int = 1  # audio channels (each its own log-mel)
    mel: MelConfig = field(default_factory=MelConfig)
    renderer: str = "vocoder"  # vocoder (a trained Vocoder of ``vocoder``) | griffin_lim (no training)
    vocoder: VocoderConfig | None = None  # renderer="vocoder": its architecture (its mel must be ``mel``)
    griffin_lim_iterations: int = 32
    latent_shift: list[float] = field(default_factory=list)  # per channel, on the normalised log-mel
    latent_scale: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.mel, dict):  # from JSON
            self.mel = MelConfig(**self.mel)
        if isinstance(self.vocoder, dict):
            self.vocoder = VocoderConfig(**self.vocoder)
        if self.renderer not in RENDERERS:
            raise ValueError(
                f"MelAutoencoderConfig: renderer must be one of {RENDERERS}, got {self.renderer!r}"
            )
        if self.renderer == "vocoder":
            if self.vocoder is None:
                raise ValueError("MelAutoencoderConfig: renderer='vocoder' needs a vocoder config")
            if self.vocoder.mel != self.mel:
                raise ValueError(
                    f"MelAutoencoderConfig: the vocoder inverts another mel (mel={self.mel}, "
                    f"vocoder.mel={self.vocoder.mel})"
                )
        check_latent_stats(self)

    @property
    def latent_channels(self) -> int:
        return self.in_channels

    @property
    def ratio(self) -> int:
        """Samples per latent (mel) frame: the mel hop."""
        return self.mel.hop_length


class MelAutoencoder(LatentAutoencoder):
    """The autoencoder of a mel-domain model: ``encode`` is the normalised log-mel
    (:class:`~mediadiff.audio.mel.LogMel`, then the stored per-channel ``latent_shift`` / ``latent_scale``),
    ``decode`` renders a log-mel through a trained :class:`~mediadiff.audio.vocoder.Vocoder` or
    Griffin-Lim (Griffin & Lim 1984; :class:`~mediadiff.audio.mel.GriffinLim`). Latents are
    ``[b c m f]``: ``m`` mel bins, one frame per hop; nothing is learned here but the vocoder.
    """

    config_class = MelAutoencoderConfig
    latent_axes = 2

    def __init__(self, config: MelAutoencoderConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = c = config or MelAutoencoderConfig(**kwargs)
        self.log_mel = LogMel(c.mel)
        self.vocoder = Vocoder(c.vocoder) if c.renderer == "vocoder" else None
        self.griffin_lim = (
            GriffinLim(c.mel, n_iter=c.griffin_lim_iterations) if c.renderer == "griffin_lim" else None
        )
        self.init_latent_stats()

    @classmethod
    def from_vocoder(cls, vocoder: Vocoder, in_channels: int = 1) -> MelAutoencoder:
        """The mel autoencoder that renders through ``vocoder`` (its weights copied) and analyses with its mel."""
        model = cls(MelAutoencoderConfig(in_channels, vocoder.config.mel, "vocoder", vocoder.config))
        model.vocoder.load_state_dict(vocoder.state_dict())
        return model

    def latent_shape(self, input_shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """``(b, c, t)`` -> ``(b, c, n_mels, t / hop)``; raises unless ``t`` is a positive multiple of the hop."""
        c = self.config
        if len(input_shape) != 3 or input_shape[1] != c.in_channels:
            raise ValueError(f"audio must be [b {c.in_channels} t], got shape {tuple(input_shape)}")
        b, _, t = input_shape
        if t < c.ratio:
            raise ValueError(f"audio must hold at least one mel frame ({c.ratio} samples), got {t}")
        return (b, c.in_channels, c.mel.n_mels, c.mel.num_frames(t))

    def encode(
        self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Audio ``[b c t]`` -> normalised log-mel latents ``[b c m t/hop]`` (deterministic: ``sample`` and
        ``generator`` are ignored)."""
        self.latent_shape(tuple(x.shape))
        return self.normalize(self.log_mel(x.float()))  # [b c m f]

    def decode(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Latents ``[b c m f]`` -> audio ``[b c f*hop]`` in [-1, 1] (one pass; ``chunk_size`` is ignored)."""
        c = self.config
        if z.dim() != 4 or z.shape[1:3] != (c.in_channels, c.mel.n_mels):
            raise ValueError(
                f"latents must be [b {c.in_channels} {c.mel.n_mels} f], got shape {tuple(z.shape)}"
            )
        mel = self.denormalize(z.float())  # [b c m f] normalised log-mel
        render = self.vocoder if self.vocoder is not None else self.griffin_lim
        return render(mel).clamp(-1, 1)  # [b c f*hop]


AUTOENCODERS: dict[str, type[nn.Module]] = {
    "WaveformVAE": WaveformVAE,
    "OobleckVAE": OobleckVAE,
    "MelAutoencoder": MelAutoencoder,
    "IdentityAutoencoder": IdentityAutoencoder,
}


def load_autoencoder(directory: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Load whichever audio autoencoder a folder holds (its ``config.json`` names the ``type``)."""
    return load_model_folder(directory, AUTOENCODERS, device)
