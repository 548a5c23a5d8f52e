"""``mediadiff eval audio``: does a text-to-audio model follow Tones prompts, and do its clips sound real?

This module is the Tones side of the shared harness (:mod:`mediadiff.eval`): :class:`TonesTask` (the
attributes pitch, contour and waveform, the detector, the feature space below, the prompts and the real
clips), the audio autoencoder round trip, a recipe's periodic evaluation (:func:`periodic_eval`) and the
command's options; the loop, the statistics, the table and the JSON report are :mod:`mediadiff.eval`'s.

Prompts
    ``num`` captions per split from the held-out Tones stream (seed :data:`~.tones.HELDOUT_SEED`, never
    trained on): split ``train`` phrases them with the training templates, split ``heldout`` with
    :data:`~.tones.HELDOUT_TEMPLATES` (wordings never trained on). Clip ``i`` of either split has the
    labels of Tones item ``i`` and is generated from noise seed ``i``.

Accuracy
    The detector (:mod:`mediadiff.audio.detect`) reads the start pitch (pYIN, Mauch & Dixon 2014; right
    when the nearest semitone is the prompt's, i.e. within half a semitone), the contour (the fitted
    glide) and the waveform (harmonics 2-5 against the Fourier series of the four shapes: sine none,
    square odd ones at 1/k, sawtooth all at 1/k, triangle odd ones at 1/k^2) back from the audio; "all"
    needs the three right at once. 95% Wilson intervals (Wilson 1927); per-class accuracies and
    confusions in the JSON.

Frechet distance (FD)
    Heusel et al. 2017, Eq. 6, between Gaussians fitted to the features below of the generated clips and
    of ``num`` real Tones clips of seed :data:`REAL_SEEDS` [0] (the reference), every feature
    standardised by the reference's spread or its resolution, whichever is larger (as for video: real
    notes have exactly no noise and straight glides, and a generated clip's deviation there counts in
    units of an audible difference). The *floor* is the FD of the real clips the prompts describe; a
    perfect model scores ``FD / floor`` about 1; ``real_vs_real_fd`` compares two independent real sets.

Feature space: 14 hand-made numbers per clip, deterministic, no learned parts, and blind to phase: the
shipped vocoder and waveform VAE make their own phase (their SI-SDR is about -20 dB whatever their
quality), so a feature that moves with the phases of the partials (the sample peak, the crest factor)
would score an inaudible difference. A first version held the sample peak, and the VAE's round trip
of real notes came out at 2280x the floor, 217 of it from the peak alone (real notes all peak at
exactly 0.5). The pitch track is the
detector's pYIN track (hop 256, frames of 1024); spectra are 1024-point Hann STFTs with hop 256.

====================  ==========  ===================================================================
feature               resolution  definition
====================  ==========  ===================================================================
start_midi            0.1         start pitch of the least-squares line through the voiced track (semitones)
glide                 0.25        the line's rise over the clip (semitones)
pitch_wobble          0.05        RMS of the voiced track about the line (semitones)
voiced                0.02        share of voiced frames
h2_db .. h5_db        1.0         harmonics 2-5 relative to the fundamental (dB, floor -40)
harmonic_share        0.005       share of the voiced frames' energy within 2 bins of a harmonic of f0
centroid_hz           10          mean spectral centroid of frames within 60 dB of the loudest (Hz)
flatness              0.01        mean spectral flatness (geometric / arithmetic mean power) of those frames
level_db              0.5         RMS level of the clip (dB re full scale)
decay_db_s            1.0         slope of the frame level after the first 50 ms (dB per s; real notes -5.8,
                                  so 1.0 is a 15% change of the decay time)
silence               0.02        share of frames more than 60 dB below the loudest (or below -60 dB)
====================  ==========  ===================================================================

A clip with fewer than three voiced frames has pitch features 0 (start_midi, glide, wobble) and
harmonics at the floor; a silent one is all silence, with centroid and flatness 0.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from mediadiff.eval import TEMPLATE_ROW_NAMES, Feature, Generate, Reconstruct, run_command
from mediadiff.eval import add_arguments as add_eval_arguments
from mediadiff.eval import pipeline_generator as eval_pipeline_generator

from .detect import PitchTrack, ToneReading, analyse_tone
from .tones import ALL_PITCHES, CONTOURS, HELDOUT_SEED, PITCHES, WAVEFORMS, Tones, midi_to_name

__all__ = [
    "CLASSES",
    "FEATURES",
    "REAL_SEEDS",
    "SPLITS",
    "TonesTask",
    "add_arguments",
    "check_tones_args",
    "clip_features",
    "eval_items",
    "periodic_eval",
    "pipeline_generator",
    "pipeline_reconstructor",
    "real_clips",
    "run",
    "training_captions",
]

REAL_SEEDS = (777, 778)  # Tones seeds of the two real sets (reference, and floor partner); never trained on
SPLITS = ("train", "heldout")  # caption template sets, reported separately
CLASSES = {
    "pitch": tuple(midi_to_name(m) for m in PITCHES),
    "contour": CONTOURS,
    "waveform": WAVEFORMS,
}  # what the detector reads back, in the table's order
DESCRIPTION = (
    "Generate notes for Tones prompts (training and held-out phrasings), read start pitch, contour and "
    "waveform back with pYIN and the harmonics, and measure the Frechet distance to real notes against a "
    "real-vs-real floor."
)

FEATURES: tuple[Feature, ...] = (  # the FD feature space of a Tones clip
    Feature("start_midi", 0.1, "start pitch of the fitted line through the voiced pYIN track, semitones"),
    Feature("glide", 0.25, "the fitted line's rise over the clip, semitones"),
    Feature("pitch_wobble", 0.05, "RMS of the voiced track about the line, semitones"),
    Feature("voiced", 0.02, "share of voiced frames"),
    Feature("h2_db", 1.0, "harmonic 2 relative to the fundamental, dB"),
    Feature("h3_db", 1.0, "harmonic 3 relative to the fundamental, dB"),
    Feature("h4_db", 1.0, "harmonic 4 relative to the fundamental, dB"),
    Feature("h5_db", 1.0, "harmonic 5 relative to the fundamental, dB"),
    Feature("harmonic_share", 0.005, "share of voiced-frame energy within 2 bins of a harmonic of f0"),
    Feature("centroid_hz", 10.0, "mean spectral centroid of the sounding frames, Hz"),
    Feature("flatness", 0.01, "mean spectral flatness of the sounding frames"),
    Feature("level_db", 0.5, "RMS level, dB re full scale"),
    Feature("decay_db_s", 1.0, "slope of the frame level after the first 50 ms, dB per second"),
    Feature("silence", 0.02, "share of frames more than 60 dB below the loudest"),
)

_N_FFT, _HOP = 1024, 256
_QUIET_DB = 60.0  # frames this far below the loudest are silence
_SILENT_DB = -60.0  # and every frame below this summed STFT power in dB (a Tones note's frames: about +40)
_ONSET_S = 0.05  # the decay fit starts after the attack


# --------------------------------------------------------------------------- features


def _spectral_features(y: np.ndarray, sample_rate: int, track: PitchTrack) -> dict[str, float]:
    """The spectral and level features of one mono clip ``[t]`` given its pYIN track."""
    import librosa

    spec = np.abs(librosa.stft(y, n_fft=_N_FFT, hop_length=_HOP, window="hann", center=True)) ** 2  # [k n]
    power = spec.sum(axis=0)  # [n]
    level = 10 * np.log10(np.maximum(power, 1e-20))  # [n] dB
    sounding = (level > level.max() - _QUIET_DB) & (level > _SILENT_DB)  # [n]
    freqs = np.fft.rfftfreq(_N_FFT, 1 / sample_rate)  # [k]
    out: dict[str, float] = {"silence": float(1 - sounding.mean()), "centroid_hz": 0.0, "flatness": 0.0}
    s = spec[:, sounding]  # [k n']
    if sounding.any():
        out["centroid_hz"] = float(((freqs[:, None] * s).sum(0) / np.maximum(s.sum(0), 1e-20)).mean())
        geo = np.exp(np.log(np.maximum(s, 1e-20)).mean(axis=0))  # [n']
        out["flatness"] = float((geo / np.maximum(s.mean(axis=0), 1e-20)).mean())
    out["level_db"] = float(10 * np.log10(max(float(np.mean(y.astype(np.float64) ** 2)), 1e-12)))
    times = np.arange(len(level)) * _HOP / sample_rate  # [n]
    fit = sounding & (times >= _ONSET_S)
    out["decay_db_s"] = float(np.polyfit(times[fit], level[fit], 1)[0]) if fit.sum() >= 3 else 0.0

    # harmonic share: energy near k * f0 in the voiced frames (the track's frames are the STFT's)
    frames = min(spec.shape[1], len(track.midi))
    inside, total = 0.0, 0.0
    bin_hz = sample_rate / _N_FFT
    for i in range(frames):
        m = track.midi[i]
        if not np.isfinite(m):
            continue
        f0 = 440.0 * 2.0 ** ((m - 69.0) / 12.0)
        centres = np.arange(1, int(sample_rate / 2 / f0) + 1) * f0 / bin_hz  # [K] fractional bins
        near = np.zeros(spec.shape[0], bool)
        for c in np.round(centres).astype(int):
            near[max(c - 2, 0) : c + 3] = True
        inside += float(spec[near, i].sum())
        total += float(spec[:, i].sum())
    out["harmonic_share"] = inside / total if total > 0 else 0.0
    return out


def _pitch_features(reading: ToneReading, track: PitchTrack, duration: float) -> dict[str, float]:
    ok = track.voiced
    out = {"voiced": float(reading.voiced), "start_midi": 0.0, "glide": 0.0, "pitch_wobble": 0.0}
    if ok.sum() >= 3:
        slope, start = np.polyfit(track.times[ok], track.midi[ok], 1)
        residual = track.midi[ok] - (slope * track.times[ok] + start)
        out.update(
            start_midi=float(start),
            glide=float(slope * duration),
            pitch_wobble=float(np.sqrt((residual**2).mean())),
        )
    for k, db in enumerate(reading.harmonics_db, start=2):
        out[f"h{k}_db"] = float(db)
    return out


def analyse_clip(audio: np.ndarray, sample_rate: int) -> tuple[ToneReading, np.ndarray]:
    """The detector's reading of one clip ``[c t]`` (or ``[t]``) and its :data:`FEATURES` ``[d]``, from
    one pYIN pass."""
    y = np.asarray(audio, dtype=np.float32)
    y = y.mean(0) if y.ndim == 2 else y  # [t]
    reading, track = analyse_tone(y, sample_rate)
    values = {
        **_pitch_features(reading, track, len(y) / sample_rate),
        **_spectral_features(y, sample_rate, track),
    }
    return reading, np.array([values[ft.name] for ft in FEATURES])


def clip_features(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """The :data:`FEATURES` of one clip ``[c t]`` -> float64 ``[len(FEATURES)]``."""
    return analyse_clip(audio, sample_rate)[1]


def real_clips(num: int, num_samples: int, seed: int, start: int = 0, sample_rate: int = 16000) -> np.ndarray:
    """Tones clips ``start .. start+num-1`` of ``seed`` as float32 ``[num 1 num_samples]``."""
    data = Tones(length=max(start + num, 1), sample_rate=sample_rate, num_samples=num_samples, seed=seed)
    return np.stack([data[i]["audio"].numpy() for i in range(start, start + num)])  # [num 1 t]


def eval_items(
    num: int, templates: str = "train", seed: int = HELDOUT_SEED, pitches: Sequence[int] = PITCHES
) -> list[dict[str, Any]]:
    """Captions and labels of the first ``num`` items of the held-out stream (no audio synthesised), their
    start notes drawn from ``pitches``."""
    data = Tones(length=max(num, 1), seed=seed, templates=templates, pitches=tuple(pitches))
    return [data.labels(i) for i in range(num)]


def training_captions(seed: int, num: int = 2000) -> list[str]:
    """The first ``num`` captions of Tones stream ``seed`` (what a recipe's ``fit_pooled_norm`` is fitted on)."""
    data = Tones(length=num, seed=seed)
    return [data.labels(i)["text"] for i in range(num)]


def check_tones_args(args: Any) -> None:
    """A Tones recipe's check of its parsed flags (``Recipe(check=...)``): not the held-out stream."""
    if args.data_seed == HELDOUT_SEED:
        raise SystemExit(
            f"--data-seed {HELDOUT_SEED} is the held-out evaluation stream; train on another seed"
        )


# --------------------------------------------------------------------------- the Tones task


@dataclass(frozen=True)
class TonesTask:
    """Tones as an :class:`~mediadiff.eval.EvalTask`: clips float32 ``[1 num_samples]``, read by the
    pYIN / harmonics detector, described by :data:`FEATURES`; prompts from the held-out stream."""

    num_samples: int = 16384
    sample_rate: int = 16000
    _cache: dict[str, tuple[ToneReading, np.ndarray]] = field(default_factory=dict, compare=False, repr=False)

    name: ClassVar[str] = "audio"
    real_name: ClassVar[str] = "Tones"
    classes: ClassVar[dict[str, tuple[str, ...]]] = CLASSES
    feature_table: ClassVar[tuple[Feature, ...]] = FEATURES
    splits: ClassVar[tuple[str, ...]] = SPLITS
    row_names: ClassVar[dict[str, str]] = TEMPLATE_ROW_NAMES
    prompt_seed: ClassVar[int] = HELDOUT_SEED
    real_seeds: ClassVar[tuple[int, int]] = REAL_SEEDS
    clip_dtype: ClassVar[Any] = np.float32
    grid_suffix: ClassVar[str] = ".png"

    @property
    def clip_shape(self) -> tuple[int, ...]:
        return (1, self.num_samples)

    @property
    def info(self) -> dict[str, int]:
        return {"num_samples": self.num_samples, "sample_rate": self.sample_rate}

    def _analyse(self, clip: np.ndarray) -> tuple[ToneReading, np.ndarray]:
        """One pYIN pass per distinct clip: ``features`` and ``read`` of the same clip share it."""
        key = hashlib.sha1(np.ascontiguousarray(clip).tobytes()).hexdigest()
        hit = self._cache.pop(key, None)
        if hit is None:
            hit = analyse_clip(clip, self.sample_rate)
            self._cache[key] = hit
        return hit

    def features(self, clips: np.ndarray) -> np.ndarray:
        return np.stack([self._analyse(c)[1] for c in clips])  # [b d]

    def read(self, clips: np.ndarray) -> list[dict[str, str]]:
        readings = [self._analyse(c)[0] for c in clips]
        for c in clips:  # read after features: the pair is done with these clips
            self._cache.pop(hashlib.sha1(np.ascontiguousarray(c).tobytes()).hexdigest(), None)
        return [{"pitch": r.pitch, "contour": r.contour, "waveform": r.waveform} for r in readings]

    def items(self, num: int, split: str) -> list[dict[str, Any]]:
        return eval_items(num, templates=split)

    def real(self, num: int, seed: int, start: int = 0) -> np.ndarray:
        return real_clips(num, self.num_samples, seed, start, self.sample_rate)  # [num 1 t]

    def save_grid(self, clips: np.ndarray, path: Path) -> None:
        from .plot import save_spectrograms

        save_spectrograms(clips[:8], self.sample_rate, path)  # the first 8: a picture stays readable


# --------------------------------------------------------------------------- during training


def periodic_eval(
    *,
    num_samples: int = 16384,
    num: int = 24,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    guidance_scale: float = 4.0,
    batch_size: int = 24,
    spectrograms: int = 6,
    pitches: Sequence[int] = PITCHES,
) -> Callable[[Any, Any], dict[str, Any]]:
    """``evaluate(pipeline, ctx)`` for a recipe's periodic evaluation: ``num`` clips from held-out Tones
    captions (training templates; seed :data:`~.tones.HELDOUT_SEED`), their pitch / contour / waveform
    accuracies (``pitch_acc``, ``contour_acc``, ``waveform_acc``, ``all_acc`` go to ``metrics.jsonl``),
    and ``spectrograms.png`` of the first ``spectrograms`` clips with ``prompts.txt`` in ``ctx.out_dir``.

    ``pipeline``: an audio pipeline around the in-training weights (``pipeline(prompts, seed=s, ...)``
    returning float ``.audio [b c t]``, clip ``i`` from seed ``s + i``). ``pitches``: the start notes of
    the prompts (:data:`~.tones.ALL_PITCHES` for a model taught the notes above the shipped range).
    """
    if not set(pitches) <= set(ALL_PITCHES):
        raise ValueError(
            f"periodic_eval: pitches must be MIDI numbers from {ALL_PITCHES}, got {tuple(pitches)}"
        )
    items = eval_items(num, pitches=pitches)
    settings = {
        "num_samples": num_samples,
        "steps": steps,
        "sampler": sampler,
        "guidance_scale": guidance_scale,
    }

    def evaluate(pipeline: Any, ctx: Any) -> dict[str, Any]:
        from .detect import score_tones
        from .plot import save_spectrograms

        generate = eval_pipeline_generator(pipeline, output="audio", **settings)
        clips = np.concatenate(
            [
                generate(
                    [it["text"] for it in items[s : s + batch_size]], list(range(s, min(s + batch_size, num)))
                )
                for s in range(0, num, batch_size)
            ]
        )  # [num c t]
        rate = int(pipeline.sample_rate)
        readings = [analyse_tone(c.mean(0), rate)[0] for c in clips]
        acc = score_tones(readings, items)
        out = Path(ctx.out_dir)
        path = save_spectrograms(
            clips[:spectrograms], rate, out / "spectrograms.png", [it["text"] for it in items]
        )
        (out / "prompts.txt").write_text("\n".join(it["text"] for it in items) + "\n")
        return {"paths": [path], "metrics": {f"{k}_acc": round(v, 4) for k, v in acc.items()}}

    return evaluate


# --------------------------------------------------------------------------- an audio pipeline


def pipeline_generator(
    pipe: Any,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    guidance_scale: float | None = None,
    num_samples: int | None = None,
) -> Generate:
    """An audio pipeline (called as :class:`~mediadiff.pipelines.audio.AudioPipeline`, returning
    ``.audio`` float32 ``[b c t]``) as a :data:`~mediadiff.eval.Generate`."""
    return eval_pipeline_generator(
        pipe,
        output="audio",
        steps=steps,
        sampler=sampler,
        guidance_scale=guidance_scale,
        num_samples=num_samples,
    )


def pipeline_reconstructor(pipe: Any) -> Reconstruct | None:
    """The pipeline's autoencoder round trip (posterior mean, then decode, cut to the input's length) as a
    :data:`Reconstruct`, under the pipeline's autocast; None for an identity autoencoder."""
    from .autoencoder import IdentityAutoencoder

    autoencoder = pipe.autoencoder
    if isinstance(autoencoder, IdentityAutoencoder):
        return None

    @torch.inference_mode()
    def reconstruct(clips: np.ndarray) -> np.ndarray:
        n = clips.shape[-1]
        padded = pipe.latent_frames(n) * pipe.samples_per_frame
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(pipe.device)  # [b c t]
        x = torch.nn.functional.pad(x, (0, padded - n))  # [b c t'] whole latent frames
        with torch.autocast(pipe.device.type, torch.bfloat16, enabled=pipe.use_bf16()):
            audio = autoencoder.decode(autoencoder.encode(x).float())  # [b c t']
        return audio[..., :n].float().clamp(-1, 1).cpu().numpy()  # [b c t]

    return reconstruct


# --------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``mediadiff eval audio`` options to ``parser``; returns it."""
    add_eval_arguments(
        parser, splits=SPLITS, splits_help="caption template sets (default both)", grid_help="spectrogram PNG"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        metavar="S",
        help="clip length (default: the model's); real clips are Tones notes of the same length",
    )
    return parser


def run(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    """``mediadiff eval audio``: load the pipeline, evaluate, print the table, write the JSON; exit code.

    ``load(name_or_folder, device=)`` returns the pipeline: the CLI passes
    ``AudioPipeline.from_pretrained`` (audio/ does not import the pipelines above it).
    """
    loaded: list[Any] = []

    def load_pipeline(model: Any, device: Any) -> Any:
        pipe = load(model, device=device)
        loaded.append(pipe)
        return pipe

    def tones_task(settings: dict[str, Any]) -> tuple[TonesTask, str]:
        rate = int(loaded[-1].sample_rate)
        n = settings["num_samples"]
        return TonesTask(n, rate), f"{n / rate:.2f} s at {rate} Hz"

    sizes: dict[str, Any] = {}
    if args.seconds is not None:
        if not (math.isfinite(args.seconds) and args.seconds > 0):
            print(
                f"mediadiff eval audio: --seconds must be > 0 (a finite number), got {args.seconds}",
                file=sys.stderr,
            )
            return 2
        sizes = {"seconds": args.seconds}
    return run_command(
        args,
        name="audio",
        load=load_pipeline,
        task=tones_task,
        generator=lambda pipe, **kw: pipeline_generator(pipe, num_samples=_samples(pipe, sizes), **kw),
        reconstructor=pipeline_reconstructor,
        sizes=sizes,
    )


def _samples(pipe: Any, sizes: dict[str, Any]) -> int | None:
    return pipe.resolve(**sizes)["num_samples"] if sizes else None
