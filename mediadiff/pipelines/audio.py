"""Text-to-audio pipeline: what audio adds to :class:`~mediadiff.pipelines.base.DiffusionPipeline`.

:class:`AudioPipeline` supplies audio's own parts only: the size setting ``num_samples`` (or
``seconds``) and its latent shape, decoding latents to float waveforms, :class:`AudioOutput` and its
file formats, the audio backbones and autoencoders of a saved folder, and the shipped text-to-audio
models::

    pipe = AudioPipeline.from_pretrained("tones-dit")     # the shipped default, or a pipeline folder
    out = pipe("a square wave playing E4", seed=0)
    out.save("e4.wav")                          # out.audio: float32 [b c t] in [-1, 1]
    out.save("e4.png")                          # the log-mel spectrogram of each clip, with its prompt

The backbones are length-agnostic (1-D RoPE, convolutions), so ``seconds`` may be any length: the
latent is rounded up to whole latent frames (and to the backbone's multiple) and the waveform cut back
to the exact number of samples. The folder layout, prompt cache, seeds, guidance and sampling are the
base class's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .base import DiffusionPipeline, item_paths, output_path

__all__ = ["IMAGE_EXTENSIONS", "AudioOutput", "AudioPipeline", "output_extensions"]

IMAGE_EXTENSIONS = (".png",)  # what AudioOutput.save draws as spectrograms


def output_extensions() -> tuple[str, ...]:
    """Every extension :meth:`AudioOutput.save` accepts: the audio formats of :mod:`mediadiff.audio.io`
    (.wav, .flac, .ogg, .mp3) and :data:`IMAGE_EXTENSIONS`."""
    from mediadiff.audio.io import AUDIO_WRITE_FORMATS

    return (*AUDIO_WRITE_FORMATS, *IMAGE_EXTENSIONS)


@dataclass
class AudioOutput:
    """Generated clips: float32 ``audio [b c t]`` in [-1, 1] at ``sample_rate``; clip ``i`` came from
    ``prompts[i]`` and ``seeds[i]``."""

    audio: np.ndarray  # [b c t] float32
    sample_rate: int
    prompts: list[str]
    seeds: list[int]

    def __len__(self) -> int:
        return self.audio.shape[0]

    @property
    def seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate

    def save(self, path: str | os.PathLike) -> list[Path]:
        """Write the clips to ``path``; the extension picks the format. Returns the paths written.

        - ``.wav``, ``.flac``, ``.ogg``, ``.mp3``: through :func:`mediadiff.audio.io.write_audio` (16-bit
          PCM for wav and flac). One clip is written to ``path`` itself; ``b > 1`` clips go to one file
          each, ``stem-0.wav``, ``stem-1.wav``, ... beside ``path``.
        - ``.png``: one picture, the log-mel spectrogram of each clip titled with its prompt and seed.

        Every file is written atomically (temporary name in the same folder, fsync, rename).
        """
        path, ext = output_path(path, output_extensions())
        if ext in IMAGE_EXTENSIONS:
            from mediadiff.audio.plot import save_spectrograms

            titles = [f"{p}  (seed {s})" for p, s in zip(self.prompts, self.seeds)]
            return [save_spectrograms(self.audio, self.sample_rate, path, titles)]
        from mediadiff.audio.io import write_audio

        return [
            write_audio(p, clip, self.sample_rate) for p, clip in zip(item_paths(path, len(self)), self.audio)
        ]


class AudioPipeline(DiffusionPipeline):
    """Text-to-audio generation from a backbone over latents (a :class:`~mediadiff.audio.dit.DiT1D` or
    :class:`~mediadiff.audio.unet.UNet1D` over ``[b c f]`` waveform-autoencoder latents, or a mel
    :class:`~mediadiff.audio.unet.UNet2D` over ``[b 1 m f]`` log-mel spectrograms), an audio
    autoencoder (:class:`~mediadiff.audio.autoencoder.WaveformVAE`, ``OobleckVAE`` or
    ``MelAutoencoder``: log-mel in, vocoder or Griffin-Lim out), a text encoder and a schedule.
    Arguments and attributes are :class:`DiffusionPipeline`'s; ``defaults`` also take ``num_samples``
    (the clip length the model was trained on) and ``sample_rate``.
    """

    modality: ClassVar[str] = "audio"
    SIZE_DEFAULTS: ClassVar[dict[str, int]] = {"num_samples": 16384}
    EXTRA_DEFAULTS: ClassVar[dict[str, Any]] = {"sample_rate": 16000}
    BACKBONES: ClassVar[dict[str, str]] = {
        "DiT1D": "mediadiff.audio.dit",
        "UNet1D": "mediadiff.audio.unet",
        "UNet2D": "mediadiff.audio.unet",
    }
    SHIPPED_MODELS: ClassVar[dict[str, str]] = {
        "tones-dit": "t2a_tones_dit",  # recipes/audio/tones_latent.py: DiT1D on waveform-VAE latents
    }
    SHIPPED_LORAS: ClassVar[dict[str, str]] = {
        # recipes/audio/tones_latent.py --init-from tones-dit --lora-rank 16 --pitches all: C#5 and D5
        "tones-dit-pitches": "lora/tones_dit_pitches.safetensors",
    }
    DEFAULT_MODEL: ClassVar[str] = "tones-dit"
    ITEM: ClassVar[str] = "clip"
    MASK_UNITS: ClassVar[str] = "seconds"  # what an inpainting mask (start, end) counts
    EXAMPLE_PROMPT: ClassVar[str] = "a square wave playing E4"
    CLI_DESCRIPTION: ClassVar[str] = (
        "Generate sounds for a prompt and write them (.wav, .flac, .ogg, .mp3, or .png for their "
        "spectrograms; with --num N > 1, one file per clip: NAME-0.wav, NAME-1.wav, ...)."
    )
    EVAL_MODULE: ClassVar[str] = "mediadiff.audio.evaluate"
    EVAL_DESCRIPTION: ClassVar[str] = "pitch, contour and waveform accuracy and Frechet distance on Tones"
    # measured on a 2-core AMD EPYC (benchmarks/generate.py --modality audio): tones-dit takes 0.333 s per
    # clip in fp32 and 0.380 s under bf16 autocast, so "auto" stays fp32 on a CPU (bf16 on CUDA)
    CPU_BF16: ClassVar[bool] = False

    def check_defaults(self, defaults: dict[str, Any]) -> None:
        rate = defaults["sample_rate"]
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"AudioPipeline: defaults['sample_rate'] must be a positive int, got {rate!r}")
        own = self._autoencoder_rate()
        if own is not None and own != rate:
            raise ValueError(
                f"AudioPipeline: defaults['sample_rate'] is {rate} but the autoencoder works at {own} Hz"
            )

    @property
    def sample_rate(self) -> int:
        return int(self.defaults["sample_rate"])

    def _autoencoder_rate(self) -> int | None:
        config = getattr(self.autoencoder, "config", None)
        mel = getattr(config, "mel", None)
        rate = getattr(mel, "sample_rate", None) or getattr(config, "sample_rate", None)
        return int(rate) if rate else None

    @property
    def channels(self) -> int:
        """Audio channels the autoencoder makes (1: mono)."""
        return int(getattr(self.autoencoder.config, "in_channels", 1))

    @property
    def samples_per_frame(self) -> int:
        """Waveform samples per latent frame (the autoencoder's ``config.ratio``)."""
        return int(self.autoencoder.config.ratio)

    def latent_frames(self, num_samples: int) -> int:
        """Latent frames for ``num_samples``: whole frames, rounded up to the backbone's multiple, and at
        least the backbone's ``window_frames`` where it has one: a model trained on a fixed window and told
        the clip's length by its conditioning (Stable Audio: ``seconds_total``) samples the whole window,
        and the clip is cut from its start (:meth:`decode`)."""
        axes = len(self.autoencoder.latent_shape((1, self.channels, self.samples_per_frame))) - 2
        multiple = self.backbone_multiples(axes)[-1]
        frames = math.ceil(num_samples / self.samples_per_frame)
        frames = max(frames, int(getattr(self.backbone, "window_frames", 0) or 0))
        return math.ceil(frames / multiple) * multiple

    def latent_shape(self, settings: dict[str, Any]) -> tuple[int, ...]:
        """The latent ``(c, ..., f)`` of a clip of ``num_samples`` samples (rounded up to whole latent
        frames that suit the backbone), or a ValueError saying what would suit."""
        n = settings["num_samples"]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"AudioPipeline: num_samples must be a positive integer, got {n!r}")
        padded = self.latent_frames(int(n)) * self.samples_per_frame
        try:
            latent = self.autoencoder.latent_shape((1, self.channels, padded))[1:]
        except ValueError as err:
            raise ValueError(f"AudioPipeline: {n} samples do not suit the autoencoder: {err}") from None
        axes = ("n_mels", "num_samples")[-(len(latent) - 1) :]
        sizes = (*latent[1:-1], padded)
        self.check_latent(latent, axes, sizes)
        return tuple(latent)

    def sample_latents(
        self,
        settings: dict[str, Any],
        cond: dict[str, torch.Tensor],
        uncond: dict[str, torch.Tensor],
        seeds: Sequence[int],
        progress: bool = False,
        edit: Any = None,
    ) -> torch.Tensor:
        """The base class's sampling, after a text side with timing conditioning has added the clip's
        length to both contexts: a text encoder with ``with_duration(cond, uncond, seconds_start,
        seconds_total) -> (cond, uncond)`` (Stable Audio's ``seconds_start`` / ``seconds_total`` tokens,
        Evans et al. 2024, :mod:`mediadiff.audio.diffusers_stable_audio`) gets ``0`` and this call's
        ``num_samples / sample_rate``."""
        timed = getattr(self.text_encoder, "with_duration", None)
        if timed is not None:
            cond, uncond = timed(cond, uncond, 0.0, settings["num_samples"] / self.sample_rate)
        return super().sample_latents(settings, cond, uncond, seeds, progress, edit)

    def decode(
        self, z: torch.Tensor, settings: dict[str, Any], prompts: list[str], seeds: list[int]
    ) -> AudioOutput:
        audio = self.decode_latents(z)[..., : settings["num_samples"]]  # [b c t]
        audio = audio.float().clamp(-1, 1).cpu().numpy()
        return AudioOutput(audio, self.sample_rate, prompts, seeds)

    @classmethod
    def output_extensions(cls) -> tuple[str, ...]:
        return output_extensions()

    @classmethod
    def add_cli_arguments(cls, parser: Any) -> None:
        parser.add_argument(
            "--seconds",
            type=float,
            default=None,
            help="length of each clip in seconds (default: the model's)",
        )

    @classmethod
    def cli_settings(cls, args: Any) -> dict[str, Any]:
        if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
            raise ValueError(f"--seconds must be > 0, got {args.seconds}")
        return {"seconds": args.seconds}

    def resolve(self, **settings: Any) -> dict[str, Any]:
        """The base class's resolution, with ``seconds`` (if given and not None) turned into
        ``num_samples`` at the model's sample rate."""
        return super().resolve(**self._in_samples(settings))

    def _in_samples(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` with ``seconds`` (if given and not None) replaced by ``num_samples``."""
        settings = dict(settings)
        seconds = settings.pop("seconds", None)
        if seconds is not None:
            ok = not isinstance(seconds, bool) and isinstance(seconds, (int, float, np.floating, np.integer))
            if not ok or not math.isfinite(seconds) or seconds <= 0:
                raise ValueError(f"AudioPipeline: seconds must be a positive number, got {seconds!r}")
            settings["num_samples"] = max(1, round(float(seconds) * self.sample_rate))
        return settings

    # ------------------------------------------------------------------------------------ editing

    def read_input(self, source: Any, mode: str) -> torch.Tensor:
        """An audio file (any format :func:`~mediadiff.audio.io.read_audio` reads; resampled to the
        model's rate, channels mixed or copied to the model's) or a float array ``[t]`` / ``[c t]`` at the
        model's rate -> float ``[c t]`` in [-1, 1]."""
        if isinstance(source, (str, os.PathLike)):
            from mediadiff.audio.io import read_audio

            return read_audio(source, sample_rate=self.sample_rate, channels=self.channels)[0]  # [c t]
        x = torch.as_tensor(np.asarray(source) if isinstance(source, np.ndarray) else source)
        if x.ndim == 1:
            x = x[None]  # [1 t]
        if not x.is_floating_point() or x.ndim != 2 or x.shape[0] != self.channels or x.shape[1] < 1:
            raise ValueError(
                f"AudioPipeline: {mode} must be an audio file or a float waveform [t] or [{self.channels} t] "
                f"at {self.sample_rate} Hz; got {x.dtype} {tuple(x.shape)}"
            )
        return x.float().clamp(-1, 1)

    def edit_sizes(self, signal: torch.Tensor, mode: str, settings: dict[str, Any]) -> dict[str, Any]:
        """``init`` / ``inpaint``: the input's length (the first ``seconds`` when given); ``extend``:
        ``seconds`` in all, or the kept part (the input's whole latent frames) plus the model's length."""
        s = self._in_samples(settings)
        n_in, given = signal.shape[-1], s.get("num_samples")
        if mode == "extend":
            s["num_samples"] = given or self._kept_samples(signal, mode) + self.defaults["num_samples"]
        elif given is None:
            s["num_samples"] = n_in
        elif given > n_in:
            raise ValueError(
                f"AudioPipeline: {given / self.sample_rate:.3f} s asked for but the {mode} clip has "
                f"{n_in / self.sample_rate:.3f} s"
            )
        return s

    def _kept_samples(self, signal: torch.Tensor, mode: str) -> int:
        """The samples of ``signal`` that whole latent frames hold (what a continuation keeps)."""
        kept = signal.shape[-1] // self.samples_per_frame * self.samples_per_frame
        if kept == 0:
            ms = 1000 * self.samples_per_frame / self.sample_rate
            raise ValueError(f"AudioPipeline: the {mode} clip is shorter than one latent frame ({ms:g} ms)")
        return kept

    def fit_input(self, signal: torch.Tensor, settings: dict[str, Any], mode: str) -> torch.Tensor:
        """``extend``: the input's whole latent frames; else its first ``num_samples``, zero-padded to the
        output's latent frames."""
        if mode == "extend":
            return signal[:, : self._kept_samples(signal, mode)]  # [c kept]
        n = settings["num_samples"]
        padded = self.latent_frames(n) * self.samples_per_frame
        return torch.nn.functional.pad(signal[:, :n], (0, padded - n))  # [c padded]

    def latent_span(self, mask: tuple[float, float], settings: dict[str, Any]) -> tuple[int, int]:
        """Seconds ``(start, end)`` -> the latent frames ``[lo, hi)`` that overlap them."""
        seconds = settings["num_samples"] / self.sample_rate
        start, end = (float(v) for v in mask)
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end <= seconds + 1e-9):
            raise ValueError(
                f"AudioPipeline: mask must be seconds (start, end) with 0 <= start < end <= {seconds:g}, got {mask}"
            )
        per_frame = self.samples_per_frame / self.sample_rate  # seconds per latent frame
        frames = self.latent_frames(settings["num_samples"])
        return math.floor(start / per_frame + 1e-9), min(frames, math.ceil(end / per_frame - 1e-9))

    def describe(self, settings: dict[str, Any]) -> str:
        return f"{settings['num_samples'] / self.sample_rate:.2f} s at {self.sample_rate} Hz"

    @classmethod
    def load_autoencoder(cls, folder: Path, device: torch.device) -> torch.nn.Module:
        from mediadiff.audio.autoencoder import load_autoencoder

        return load_autoencoder(folder, device=device)

    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        seconds: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        num_clips: int = 1,
        progress: bool = False,
        guidance_rescale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        num_samples: int | None = None,
        init: str | os.PathLike | np.ndarray | torch.Tensor | None = None,
        strength: float | None = None,
        extend: str | os.PathLike | np.ndarray | torch.Tensor | None = None,
        inpaint: str | os.PathLike | np.ndarray | torch.Tensor | None = None,
        mask: tuple[float, float] | None = None,
    ) -> AudioOutput:
        """Generate ``num_clips`` clips per prompt, from text alone or by editing a sound.

        prompt: one prompt or a list; clip ``i`` of the output comes from prompt ``i // num_clips``.
        negative_prompt: replaces the empty prompt as the unconditional context (one for all, or one
            per prompt).
        seconds: clip length (None: the model's ``num_samples``); ``num_samples`` sets it in samples
            instead (``seconds`` wins when both are given).
        steps, sampler, guidance_scale, guidance_rescale (Lin et al. 2023), guidance_interval
            (``(t_lo, t_hi)``, Kynkaanniemi et al. 2024): None takes ``self.defaults``.
        seed: clip ``i`` starts from noise seeded with ``seed + i`` (None: a random seed, reported in
            ``AudioOutput.seeds``); the same seed gives the same clip whether generated alone or in a
            batch: bit for bit on a CPU (``micro_batch`` "auto"), to float rounding on CUDA.
        progress: a tqdm bar over the sampling steps.
        init, strength: audio-to-audio (SDEdit, Meng et al. 2022): the sound (a file, or float ``[t]`` /
            ``[c t]`` at the model's rate) encoded, noised to the level ``strength`` (default 0.8) picks on
            the sampler's grid, and sampled from there; 0 returns its round trip, 1 ignores it.
        extend: continuation: the sound's whole latent frames are kept (in latent space, at every step)
            and what follows is generated; ``seconds`` is the whole output (default: the sound's length
            plus the model's).
        inpaint, mask: regenerate seconds ``[start, end)`` of the sound and keep the rest.
        Returns an :class:`AudioOutput` with float32 ``audio [b c t]``, ``b = len(prompts) * num_clips``.
        """
        return self.generate(
            prompt,
            negative_prompt,
            seed=seed,
            num_per_prompt=num_clips,
            count_name="num_clips",
            progress=progress,
            seconds=seconds,
            num_samples=num_samples,
            steps=steps,
            sampler=sampler,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            guidance_interval=guidance_interval,
            init=init,
            strength=strength,
            extend=extend,
            inpaint=inpaint,
            mask=mask,
        )
