"""Read a note back from audio: start pitch, contour and waveform class (the Tones labels).

This is the audio counterpart of the video side's shape detector: it scores what a model generated
(or an autoencoder reconstructed) against the labels :class:`~mediadiff.audio.tones.Tones` synthesised.

- **Pitch track**: probabilistic YIN (Mauch & Dixon 2014, "pYIN", ICASSP), ``librosa.pyin``, in
  semitones (MIDI numbers) per frame, with its voicing decision.
- **Start pitch and contour**: a least-squares line through the voiced part of the track; its value
  at ``t = 0`` is the start pitch, its rise over the clip the glide (a Tones glide is linear in
  semitones, so the fit is exact for a clean note). A rise beyond half the glide reads as rising or
  falling, anything smaller as steady.
- **Waveform class**: the magnitudes of harmonics 2..5 relative to the fundamental, measured on an
  STFT at multiples of the tracked ``f0`` of each voiced frame (median over frames), compared in
  decibels with the Fourier series of the ideal shapes (:func:`~mediadiff.audio.tones.harmonic_amplitudes`):
  sine has none, square odd harmonics at ``1/k``, triangle odd ones at ``1/k^2``, sawtooth every one at ``1/k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .tones import GLIDE_SEMITONES, WAVEFORMS, harmonic_amplitudes, midi_to_name

__all__ = [
    "PitchTrack",
    "ToneReading",
    "analyse_tone",
    "read_tone",
    "read_tones",
    "score_tones",
    "track_pitch",
]

FMIN, FMAX = 60.0, 1100.0  # Hz: C3 falling a fifth is ~87 Hz, C5 rising a fifth ~784 Hz
HARMONICS = 5  # fundamental + harmonics 2..5 decide the waveform class
_FLOOR_DB = -40.0  # harmonics weaker than this (relative to the fundamental) count as absent


@dataclass
class ToneReading:
    """What :func:`read_tone` heard. ``midi`` is fractional; ``voiced`` the share of voiced frames."""

    midi: float  # start pitch in semitones (MIDI number, not rounded)
    pitch: str  # the nearest note's name, e.g. "F#4"
    glide: float  # semitones of rise over the clip (negative: falling)
    contour: str  # steady | rising | falling
    waveform: str  # sine | square | sawtooth | triangle
    harmonics_db: tuple[float, ...]  # harmonics 2..HARMONICS relative to the fundamental, dB
    voiced: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PitchTrack:
    """A pYIN track: frame ``times [n]`` (seconds), ``midi [n]`` (nan where unvoiced), ``voiced [n]``."""

    times: np.ndarray
    midi: np.ndarray
    voiced: np.ndarray


def _as_mono(audio: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().float().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:  # [c t]
        audio = audio.mean(0)  # [t]
    if audio.ndim != 1:
        raise ValueError(f"audio must be [t] or [c t], got shape {audio.shape}")
    return audio


def track_pitch(
    audio: np.ndarray | torch.Tensor, sample_rate: int, hop_length: int = 256, frame_length: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pYIN pitch track: ``(times [n] seconds, midi [n] (nan where unvoiced), voiced [n] bool)``."""
    import librosa  # lazy: numba start-up

    y = _as_mono(audio)
    f0, voiced, _ = librosa.pyin(
        y, fmin=FMIN, fmax=FMAX, sr=sample_rate, frame_length=frame_length, hop_length=hop_length
    )  # [n] Hz (nan unvoiced), [n] bool
    times = np.arange(len(f0)) * hop_length / sample_rate  # [n]
    return times, librosa.hz_to_midi(f0), voiced


def _harmonics_db(
    y: np.ndarray, sample_rate: int, times: np.ndarray, midi: np.ndarray, hop: int
) -> np.ndarray:
    """Median over voiced frames of harmonic ``k`` magnitude / fundamental magnitude, dB, ``k = 2..HARMONICS``."""
    n_fft = 4096  # zero-padded 1024-sample windows: ~4 Hz bins to find each partial's peak
    win = 1024
    window = np.hanning(win)
    f0 = 440.0 * 2.0 ** ((midi - 69.0) / 12.0)  # [n] Hz
    rows = []
    for t, f in zip(times, f0, strict=True):
        if not np.isfinite(f):
            continue
        centre = round(float(t) * sample_rate)
        lo = centre - win // 2
        if lo < 0 or lo + win > len(y):
            continue
        spectrum = np.abs(np.fft.rfft(y[lo : lo + win] * window, n_fft))  # [n_fft/2+1]
        peaks = []
        for k in range(1, HARMONICS + 1):
            target = k * f
            if target >= sample_rate / 2 * 0.9:
                break
            a = int(np.floor(target * 0.97 * n_fft / sample_rate))  # +-3 %: glides move within a window
            b = int(np.ceil(target * 1.03 * n_fft / sample_rate)) + 1
            peaks.append(spectrum[a:b].max())
        if len(peaks) == HARMONICS and peaks[0] > 0:
            rows.append(20 * np.log10(np.maximum(np.asarray(peaks[1:]) / peaks[0], 1e-6)))
    if not rows:
        return np.full(HARMONICS - 1, _FLOOR_DB)
    return np.maximum(np.median(np.stack(rows), axis=0), _FLOOR_DB)  # [HARMONICS-1]


_TEMPLATES_DB = {
    w: np.maximum(20 * np.log10(np.maximum(np.abs(harmonic_amplitudes(w, HARMONICS)[1:]), 1e-6)), _FLOOR_DB)
    for w in WAVEFORMS
}  # [HARMONICS-1] dB per waveform class


def read_tone(
    audio: np.ndarray | torch.Tensor, sample_rate: int = 16000, hop_length: int = 256
) -> ToneReading:
    """Start pitch, contour and waveform class of one note ``[t]`` or ``[c t]`` (see the module docstring)."""
    return analyse_tone(audio, sample_rate, hop_length)[0]


def analyse_tone(
    audio: np.ndarray | torch.Tensor, sample_rate: int = 16000, hop_length: int = 256
) -> tuple[ToneReading, PitchTrack]:
    """:func:`read_tone` and the pitch track it read it from (one pYIN pass for both, so a feature
    extractor that needs the track does not run pYIN again)."""
    y = _as_mono(audio)
    times, midi, voiced = track_pitch(y, sample_rate, hop_length)
    ok = voiced & np.isfinite(midi)
    track = PitchTrack(times, np.where(ok, midi, np.nan), ok)
    share = float(ok.mean()) if len(ok) else 0.0
    if ok.sum() < 3:
        silent = ToneReading(float("nan"), "", 0.0, "steady", "sine", (_FLOOR_DB,) * (HARMONICS - 1), share)
        return silent, track
    slope, start = np.polyfit(times[ok], midi[ok], 1)
    duration = len(y) / sample_rate
    glide = float(slope * duration)
    if glide > GLIDE_SEMITONES / 2:
        contour = "rising"
    elif glide < -GLIDE_SEMITONES / 2:
        contour = "falling"
    else:
        contour = "steady"
    db = _harmonics_db(y, sample_rate, times, track.midi, hop_length)
    waveform = min(WAVEFORMS, key=lambda w: float(np.abs(db - _TEMPLATES_DB[w]).sum()))
    nearest = int(np.clip(round(start), 0, 127))
    reading = ToneReading(
        float(start), midi_to_name(nearest), glide, contour, waveform, tuple(float(v) for v in db), share
    )
    return reading, track


def read_tones(audio: np.ndarray | torch.Tensor, sample_rate: int = 16000) -> list[ToneReading]:
    """:func:`read_tone` over a batch ``[b t]`` or ``[b c t]``."""
    return [read_tone(a, sample_rate) for a in audio]


def score_tones(
    readings: Sequence[ToneReading], labels: Sequence[dict], tolerance: float = 0.5
) -> dict[str, float]:
    """Shares of clips whose start pitch is within ``tolerance`` semitones of the label's ``midi``, whose
    waveform class and contour match, and all three at once. ``labels`` are Tones items (or their labels)."""
    if len(readings) != len(labels) or not readings:
        raise ValueError(
            f"need as many readings as labels (and at least one), got {len(readings)} and {len(labels)}"
        )
    pitch = [abs(r.midi - lab["midi"]) <= tolerance for r, lab in zip(readings, labels, strict=True)]
    wave = [r.waveform == lab["waveform"] for r, lab in zip(readings, labels, strict=True)]
    contour = [r.contour == lab["contour"] for r, lab in zip(readings, labels, strict=True)]
    every = [a and b and c for a, b, c in zip(pitch, wave, contour, strict=True)]
    return {
        "pitch": float(np.mean(pitch)),
        "waveform": float(np.mean(wave)),
        "contour": float(np.mean(contour)),
        "all": float(np.mean(every)),
    }
