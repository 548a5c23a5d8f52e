"""Tones: a procedural, captioned text-to-audio set that needs no disk and no download.

Every clip is one synthesised note: a waveform (sine, square, sawtooth or triangle), a start pitch (any
semitone from C3 to C5, MIDI 48-72) and a contour (steady, or a glide of :data:`GLIDE_SEMITONES` up or
down over the clip, linear in semitones), with a short attack and a gentle exponential decay. Each clip
is a pure function of ``(seed, index)``, so a training run and a held-out evaluation only need
disjoint seeds.

The waveforms are *band-limited* by additive synthesis (Fourier series of the ideal shapes, e.g.
Smith, "Spectral Audio Signal Processing", "Bandlimited Synthesis"): harmonic ``k`` of the
instantaneous frequency ``f(t)`` enters with the series amplitude of the shape (square: odd ``k``,
``1/k``; sawtooth: every ``k``, ``1/k``; triangle: odd ``k``, ``1/k**2`` with alternating sign) and
is faded out smoothly as ``k f(t)`` approaches the Nyquist frequency, so nothing folds back (aliases)
even while the pitch glides. Phases integrate ``f(t)``, so glides are continuous.

Like :class:`~mediadiff.video.shapes.Shapes`, the set is infinite (``dataset[i]`` is defined for
every ``i >= 0``; ``len()`` is a nominal epoch) and captions come from :data:`TRAIN_TEMPLATES` (10
phrasings) or :data:`HELDOUT_TEMPLATES` (5 phrasings never used in training), with synonyms.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "ALL_PITCHES",
    "CONTOURS",
    "CONTOUR_PHRASES",
    "EXTRA_PITCHES",
    "GLIDE_SEMITONES",
    "HELDOUT_SEED",
    "HELDOUT_TEMPLATES",
    "NOTE_NAMES",
    "PITCHES",
    "TRAIN_TEMPLATES",
    "WAVEFORMS",
    "WAVEFORM_SYNONYMS",
    "Tones",
    "caption",
    "harmonic_amplitudes",
    "midi_to_hz",
    "midi_to_name",
    "name_to_midi",
    "synthesize_tone",
]

WAVEFORMS: tuple[str, ...] = ("sine", "square", "sawtooth", "triangle")
CONTOURS: tuple[str, ...] = ("steady", "rising", "falling")
PITCHES: tuple[int, ...] = tuple(range(48, 73))  # MIDI C3 .. C5
# notes above the shipped models' range, C#5 and D5: what a LoRA fine-tune teaches them
# (``Tones(pitches=ALL_PITCHES)``). Only two: the shipped audio VAE, trained on C3..C5, reconstructs their
# pitch but not notes higher (or lower) than that (benchmarks/lora.py measures its round trip)
EXTRA_PITCHES: tuple[int, ...] = (73, 74)
ALL_PITCHES: tuple[int, ...] = PITCHES + EXTRA_PITCHES
HELDOUT_SEED = 12345  # the Tones seed of held-out evaluation clips: recipes refuse to train on it
GLIDE_SEMITONES = 7.0  # a rising or falling clip moves this far over its whole length
NOTE_NAMES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Adjectives a caption may use for each waveform.
WAVEFORM_SYNONYMS: dict[str, tuple[str, ...]] = {
    "sine": ("sine", "sinusoidal"),
    "square": ("square", "square-shaped"),
    "sawtooth": ("sawtooth", "saw"),
    "triangle": ("triangle", "triangular"),
}

# Three grammatical forms of each contour: an adjective ("a rising sine"), a participle phrase
# ("gliding up") and a trailing tag (", rising").
CONTOUR_PHRASES: dict[str, dict[str, str]] = {
    "steady": {"adj": "steady", "ing": "holding steady", "tail": ", steady"},
    "rising": {"adj": "rising", "ing": "gliding up", "tail": ", rising"},
    "falling": {"adj": "falling", "ing": "gliding down", "tail": ", falling"},
}

# Training phrasings. Fields: {wave} {note} and one of {adj} {ing} {tail}.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {wave} tone at {note}{tail}",
    "{wave} wave playing {note}{tail}",
    "a {adj} {wave} starting on {note}",
    "a {wave} note on {note}, {ing}",
    "{note} on a {wave} oscillator{tail}",
    "one {wave} note from {note}, {ing}",
    "a {adj} {wave} wave from {note}",
    "the pitch {note} played as a {wave} wave{tail}",
    "a single {wave} note, {note}, {adj}",
    "synth {wave} at {note} {ing}",
)

# Phrasings kept out of training, for evaluating generalisation to unseen wordings.
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "{ing}, a {wave} sound begins at {note}",
    "listen to a {wave} oscillator that starts at {note} and is {adj}",
    "a tone with a {wave} shape, first note {note}{tail}",
    "{note} in a {wave} timbre, {adj}",
    "an electronic {wave} beep beginning on {note}, {ing}",
)

_TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "train": TRAIN_TEMPLATES,
    "heldout": HELDOUT_TEMPLATES,
    "all": TRAIN_TEMPLATES + HELDOUT_TEMPLATES,
}

ATTACK_SECONDS = 0.01  # linear rise to full level
DECAY_SECONDS = 1.5  # time constant of the exponential decay after the attack
RELEASE_SECONDS = 0.005  # fade to silence at the very end, so a clip never ends on a click
PEAK = 0.5  # peak amplitude of the clip before the envelope
_TAPER_START = 0.8  # harmonics fade out between this fraction of Nyquist and 0.95 of it
_TAPER_END = 0.95


# ----------------------------------------------------------------------------------------- notes


def midi_to_name(midi: int) -> str:
    """MIDI note number -> name with sharps and octave, e.g. ``66 -> "F#4"`` (``60`` is C4)."""
    midi = int(midi)
    if midi < 0 or midi > 127:
        raise ValueError(f"MIDI note must be in 0..127, got {midi}")
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def name_to_midi(name: str) -> int:
    """Note name with sharps and octave -> MIDI number, e.g. ``"F#4" -> 66``; flats are not accepted."""
    letters = name[:2] if len(name) > 2 and name[1] == "#" else name[:1]
    octave = name[len(letters) :]
    if letters not in NOTE_NAMES or not octave.lstrip("-").isdigit():
        raise ValueError(f"not a note name like 'C4' or 'F#3': {name!r}")
    return (int(octave) + 1) * 12 + NOTE_NAMES.index(letters)


def midi_to_hz(midi: float | np.ndarray) -> float | np.ndarray:
    """Equal temperament with A4 (MIDI 69) = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


# ----------------------------------------------------------------------------------------- synthesis


def harmonic_amplitudes(waveform: str, count: int) -> np.ndarray:
    """Fourier-series amplitudes ``[count]`` of harmonics ``1..count`` of a unit-period ideal waveform
    (sine phases), normalised so the fundamental is 1: square ``1/k`` on odd ``k``, sawtooth
    ``(-1)^(k+1)/k``, triangle ``(-1)^((k-1)/2)/k^2`` on odd ``k``, sine ``k = 1`` only."""
    _check_choice("waveform", waveform, WAVEFORMS)
    k = np.arange(1, count + 1, dtype=np.float64)  # [count]
    odd = k % 2 == 1
    if waveform == "sine":
        return (k == 1).astype(np.float64)
    if waveform == "square":
        return np.where(odd, 1.0 / k, 0.0)
    if waveform == "sawtooth":
        return np.where(odd, 1.0, -1.0) / k
    return np.where(odd, np.where((k - 1) % 4 == 0, 1.0, -1.0) / k**2, 0.0)  # triangle


def synthesize_tone(
    waveform: str,
    midi: float,
    contour: str = "steady",
    *,
    sample_rate: int = 16000,
    num_samples: int = 16384,
    glide_semitones: float = GLIDE_SEMITONES,
) -> np.ndarray:
    """One band-limited note ``[num_samples]`` (float32, peak about :data:`PEAK`).

    The pitch in semitones goes linearly from ``midi`` to ``midi +- glide_semitones`` over the clip
    (``contour`` rising / falling) or stays at ``midi`` (steady). The envelope is a linear attack of
    :data:`ATTACK_SECONDS`, an exponential decay with time constant :data:`DECAY_SECONDS` and a
    :data:`RELEASE_SECONDS` fade at the end.
    """
    _check_choice("waveform", waveform, WAVEFORMS)
    _check_choice("contour", contour, CONTOURS)
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    if sample_rate < 1000:
        raise ValueError(f"sample_rate must be >= 1000 Hz, got {sample_rate}")
    n = num_samples
    frac = np.arange(n, dtype=np.float64) / n  # [n] position in the clip, 0 .. 1
    sign = {"steady": 0.0, "rising": 1.0, "falling": -1.0}[contour]
    freq = midi_to_hz(midi + sign * glide_semitones * frac)  # [n] Hz
    phase = 2 * np.pi * np.concatenate([[0.0], np.cumsum(freq[:-1])]) / sample_rate  # [n] radians
    nyquist = sample_rate / 2
    count = max(1, int(_TAPER_END * nyquist / freq.min()))
    amps = harmonic_amplitudes(waveform, count)  # [count]
    x = np.zeros(n)
    # sin(k phase) by the Chebyshev recurrence sin(k p) = 2 cos(p) sin((k-1) p) - sin((k-2) p): one
    # multiply-add per harmonic instead of a sine
    two_cos = 2 * np.cos(phase)  # [n]
    fmax = freq.max()
    prev, cur = np.zeros(n), np.sin(phase)  # sin(0 p), sin(1 p)
    for k in range(1, count + 1):
        if k > 1:
            prev, cur = cur, two_cos * cur - prev  # sin(k p)
        if amps[k - 1] == 0:
            continue
        # smooth fade from _TAPER_START to _TAPER_END of Nyquist: no partial crosses it, none pops in
        if k * fmax <= _TAPER_START * nyquist:
            x += amps[k - 1] * cur  # [n] entirely below the taper
            continue
        where = (k * freq / nyquist - _TAPER_START) / (_TAPER_END - _TAPER_START)  # [n]
        gain = 0.5 * (1 + np.cos(np.pi * np.clip(where, 0.0, 1.0)))  # [n] 1 below, 0 above
        if gain.max() == 0:
            break  # higher harmonics are all above the band
        x += amps[k - 1] * gain * cur  # [n]
    x *= PEAK / max(np.abs(x).max(), 1e-9)
    t = np.arange(n) / sample_rate  # [n] seconds
    envelope = np.minimum(1.0, t / ATTACK_SECONDS) * np.exp(
        -np.maximum(t - ATTACK_SECONDS, 0) / DECAY_SECONDS
    )
    release = max(1, int(RELEASE_SECONDS * sample_rate))
    envelope[-release:] *= np.linspace(1.0, 0.0, release)
    return (x * envelope).astype(np.float32)


def caption(waveform: str, midi: int, contour: str, template: str, waveform_word: str | None = None) -> str:
    """Fill one caption template (``{wave}``, ``{note}`` and any of ``{adj}``, ``{ing}``, ``{tail}``)."""
    _check_choice("waveform", waveform, WAVEFORMS)
    _check_choice("contour", contour, CONTOURS)
    word = waveform if waveform_word is None else waveform_word
    if word not in WAVEFORM_SYNONYMS[waveform]:
        raise ValueError(
            f"waveform_word {word!r} is not a synonym of {waveform!r}; known: {WAVEFORM_SYNONYMS[waveform]}"
        )
    return template.format(wave=word, note=midi_to_name(midi), **CONTOUR_PHRASES[contour])


# ----------------------------------------------------------------------------------------- dataset


class Tones(Dataset):
    """Procedural captioned notes; deterministic in ``(seed, index)``.

    ``dataset[i]`` returns a dict:

    - ``audio``: ``[1 num_samples]`` float32 in ``[-1, 1]`` (canonical layout);
    - ``text``: the caption;
    - ``waveform``, ``contour``: labels (members of :data:`WAVEFORMS`, :data:`CONTOURS`), ``pitch``:
      the start note's name (``"F#4"``) and ``midi`` its number; ``waveform_id``, ``pitch_id``,
      ``contour_id``: positions in :data:`WAVEFORMS`, :data:`ALL_PITCHES`, :data:`CONTOURS`;
    - ``index``: the index asked for.

    Args:
        length: nominal number of items, what ``len()`` reports.
        sample_rate: samples per second (16 kHz by default).
        num_samples: samples per clip (16384, about 1 s at 16 kHz, by default).
        seed: selects an independent stream of clips.
        templates: ``"train"``, ``"heldout"`` or ``"all"``: the set the caption template is drawn from.
        pitches: the start notes drawn from, uniformly (MIDI numbers from :data:`ALL_PITCHES`; default
            :data:`PITCHES`, the shipped models' range, whose stream is exactly that of earlier versions).
    """

    data_key = "audio"  # the item key a trainer reads

    def __init__(
        self,
        length: int = 10_000,
        sample_rate: int = 16000,
        num_samples: int = 16384,
        seed: int = 0,
        templates: Literal["train", "heldout", "all"] = "train",
        pitches: tuple[int, ...] | list[int] = PITCHES,
    ) -> None:
        pitches = tuple(int(m) for m in pitches)
        if not pitches or len(set(pitches)) != len(pitches) or not set(pitches) <= set(ALL_PITCHES):
            raise ValueError(
                f"Tones: pitches must be distinct MIDI numbers in {ALL_PITCHES[0]}..{ALL_PITCHES[-1]}, got {pitches}"
            )
        self.pitches = pitches
        if length < 1:
            raise ValueError(f"Tones: length must be >= 1, got {length}")
        if num_samples < 256:
            raise ValueError(f"Tones: num_samples must be >= 256, got {num_samples}")
        if sample_rate < 4000:
            raise ValueError(
                f"Tones: sample_rate must be >= 4000 Hz (C5 + a glide is ~800 Hz), got {sample_rate}"
            )
        if templates not in _TEMPLATE_SETS:
            raise ValueError(f"Tones: templates must be one of {sorted(_TEMPLATE_SETS)}, got {templates!r}")
        self.length = length
        self.sample_rate = sample_rate
        self.num_samples = num_samples
        self.seed = seed
        self.templates = _TEMPLATE_SETS[templates]

    def __len__(self) -> int:
        return self.length

    def labels(self, index: int) -> dict:
        """The labels and caption of item ``index`` without synthesising its audio."""
        index = int(index)
        if index < 0:
            raise IndexError(
                f"Tones: index must be >= 0 (the set is infinite, not indexable from the end), got {index}"
            )
        rng = np.random.default_rng([self.seed, index])
        waveform_id = int(rng.integers(len(WAVEFORMS)))
        midi = self.pitches[int(rng.integers(len(self.pitches)))]
        contour_id = int(rng.integers(len(CONTOURS)))
        waveform, pitch_id, contour = WAVEFORMS[waveform_id], ALL_PITCHES.index(midi), CONTOURS[contour_id]
        template = self.templates[int(rng.integers(len(self.templates)))]
        words = WAVEFORM_SYNONYMS[waveform]
        text = caption(waveform, midi, contour, template, words[int(rng.integers(len(words)))])
        return {
            "text": text,
            "waveform": waveform,
            "pitch": midi_to_name(midi),
            "midi": midi,
            "contour": contour,
            "waveform_id": waveform_id,
            "pitch_id": pitch_id,
            "contour_id": contour_id,
            "index": index,
        }

    def __getitem__(self, index: int) -> dict:
        item = self.labels(index)
        audio = synthesize_tone(
            item["waveform"],
            item["midi"],
            item["contour"],
            sample_rate=self.sample_rate,
            num_samples=self.num_samples,
        )  # [t]
        return {"audio": torch.from_numpy(audio)[None], **item}  # audio: [1 t]

    def __repr__(self) -> str:
        return (
            f"Tones(length={self.length}, sample_rate={self.sample_rate}, "
            f"num_samples={self.num_samples}, seed={self.seed})"
        )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
