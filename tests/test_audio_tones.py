"""Tones: determinism, captions, band-limited synthesis, and labels that a detector hears back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mediadiff.audio.detect import read_tone, score_tones
from mediadiff.audio.tones import (
    CONTOURS,
    HELDOUT_TEMPLATES,
    PITCHES,
    TRAIN_TEMPLATES,
    WAVEFORMS,
    Tones,
    midi_to_hz,
    midi_to_name,
    name_to_midi,
    synthesize_tone,
)


def test_note_names_use_sharps_and_round_trip():
    assert midi_to_name(60) == "C4" and midi_to_name(66) == "F#4" and midi_to_name(48) == "C3"
    assert [name_to_midi(midi_to_name(m)) for m in PITCHES] == list(PITCHES)
    assert PITCHES[0] == 48 and PITCHES[-1] == 72 and len(PITCHES) == 25
    with pytest.raises(ValueError, match="note name"):
        name_to_midi("Gb4")
    assert midi_to_hz(69) == pytest.approx(440.0)


def test_items_are_deterministic_in_seed_and_index():
    a, b, other = Tones(seed=3), Tones(seed=3), Tones(seed=4)
    for i in (0, 7, 10**8):
        x, y = a[i], b[i]
        assert torch.equal(x["audio"], y["audio"]) and x["text"] == y["text"]
    assert not all(torch.equal(a[i]["audio"], other[i]["audio"]) for i in range(4))
    item = a[0]
    assert item["audio"].shape == (1, 16384) and item["audio"].dtype == torch.float32
    assert item["audio"].abs().max() <= 1.0
    assert item["pitch"] == midi_to_name(item["midi"]) and item["waveform"] in WAVEFORMS
    assert Tones(num_samples=4000)[0]["audio"].shape == (1, 4000)
    with pytest.raises(IndexError):
        a[-1]


def test_labels_cover_every_class_and_captions_name_them():
    ds = Tones(seed=0)
    items = [ds.labels(i) for i in range(400)]
    assert {it["waveform"] for it in items} == set(WAVEFORMS)
    assert {it["contour"] for it in items} == set(CONTOURS)
    assert len({it["midi"] for it in items}) == len(PITCHES)
    for it in items[:50]:
        assert it["pitch"] in it["text"].split(" ") or f"{it['pitch']}," in it["text"]


def test_train_and_heldout_templates_are_disjoint():
    assert len(TRAIN_TEMPLATES) >= 10 and len(HELDOUT_TEMPLATES) >= 5
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)
    heldout = {Tones(seed=1, templates="heldout").labels(i)["text"] for i in range(50)}
    train = {Tones(seed=1).labels(i)["text"] for i in range(50)}
    assert not heldout & train


def _spectrum_db(x: np.ndarray) -> np.ndarray:
    mag = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return 20 * np.log10(mag / mag.max() + 1e-12)


def test_synthesis_is_band_limited_even_while_gliding():
    sr = 16000
    # C5 sawtooth rising to G5: naive synthesis would fold harmonics above 8 kHz back into the band
    x = synthesize_tone("sawtooth", 72, "rising", sample_rate=sr, num_samples=16384)
    db = _spectrum_db(x)
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    assert db[freqs > 0.96 * sr / 2].max() < -80  # nothing at Nyquist
    # steady square at C5: energy only at odd harmonics of 523 Hz (aliases would land between them)
    x = synthesize_tone("square", 72, "steady", sample_rate=sr, num_samples=16384)
    db = _spectrum_db(x)
    f0 = midi_to_hz(72)
    k = freqs / f0
    between = np.abs(k - np.round(k)) > 0.2  # far from any harmonic
    assert db[between & (freqs > 300)].max() < -60
    even = (np.abs(k - np.round(k)) < 0.02) & (np.round(k) % 2 == 0) & (np.round(k) > 0)
    assert db[even].max() < -50  # a square wave has no even harmonics


def test_glide_is_seven_semitones_and_envelope_decays():
    from mediadiff.audio.detect import track_pitch

    x = synthesize_tone("sine", 60, "falling")
    times, midi, voiced = track_pitch(x, 16000)
    slope, start = np.polyfit(times[voiced], midi[voiced], 1)
    assert start == pytest.approx(60, abs=0.2)
    assert slope * len(x) / 16000 == pytest.approx(-7, abs=0.3)
    env = np.abs(x).reshape(16, -1).max(1)
    assert env[1] > env[8] > env[14]  # gentle decay
    assert np.abs(x[:16]).max() < 0.1 * np.abs(x).max()  # short attack, no click at the start


def test_detector_hears_the_labels_that_were_synthesised():
    """Start pitch (pyin), contour (pitch track) and waveform class (harmonics) match the labels."""
    ds = Tones(seed=12345, templates="heldout")
    items = [ds[i] for i in range(16)]
    readings = [read_tone(it["audio"], ds.sample_rate) for it in items]
    scores = score_tones(readings, items)
    assert scores == {"pitch": 1.0, "waveform": 1.0, "contour": 1.0, "all": 1.0}
    # and the detector is not fooled: a pitch-shifted or re-shaped note reads differently
    shifted = synthesize_tone(items[0]["waveform"], items[0]["midi"] + 2, items[0]["contour"])
    assert abs(read_tone(shifted).midi - items[0]["midi"]) > 1.5
    other = "sine" if items[0]["waveform"] != "sine" else "sawtooth"
    assert read_tone(synthesize_tone(other, items[0]["midi"], items[0]["contour"])).waveform == other


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="waveform"):
        synthesize_tone("noise", 60)
    with pytest.raises(ValueError, match="contour"):
        synthesize_tone("sine", 60, "wobbling")
    with pytest.raises(ValueError, match="templates"):
        Tones(templates="test")


def test_the_notes_above_the_range_are_an_option_that_leaves_the_default_stream_alone():
    from mediadiff.audio.tones import ALL_PITCHES, EXTRA_PITCHES, PITCHES

    plain, same = Tones(8, seed=3), Tones(8, seed=3, pitches=PITCHES)
    assert [plain.labels(i) for i in range(8)] == [same.labels(i) for i in range(8)]
    new = Tones(20, seed=3, pitches=EXTRA_PITCHES)
    items = [new[i] for i in range(20)]
    assert {it["midi"] for it in items} == set(EXTRA_PITCHES)
    assert all(ALL_PITCHES[it["pitch_id"]] == it["midi"] and it["pitch"] in it["text"] for it in items)
    readings = [read_tone(it["audio"][0], 16000) for it in items]
    assert score_tones(readings, items)["pitch"] == 1.0  # the detector reads them
    with pytest.raises(ValueError, match="pitches must be distinct MIDI numbers"):
        Tones(pitches=(30,))
