"""The text-to-audio models shipped inside the package: they load with nothing downloaded, the CLI
writes a real wav from the default one, and the notes are the ones the prompts ask for."""

from __future__ import annotations

import numpy as np
import pytest

from mediadiff import AudioPipeline
from mediadiff.audio import read_audio
from mediadiff.audio.detect import read_tone, read_tones, score_tones
from mediadiff.audio.evaluate import eval_items
from mediadiff.cli import main

DEFAULT_MODEL, SHIPPED_MODELS = AudioPipeline.DEFAULT_MODEL, AudioPipeline.SHIPPED_MODELS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_shipped_audio_model_is_installed():
    assert sorted(AudioPipeline.installed_models()) == sorted(SHIPPED_MODELS)
    assert DEFAULT_MODEL in SHIPPED_MODELS


def test_cli_default_model_writes_the_prompted_note(tmp_path, capsys):
    target = tmp_path / "x.wav"
    assert main(["generate", "audio", "a square wave playing E4", "-o", str(target), "--seed", "0"]) == 0
    assert "wrote" in capsys.readouterr().out
    audio, rate = read_audio(target)  # float32 [1 t] decoded back from the 16-bit wav
    defaults = AudioPipeline.from_pretrained(None).defaults
    assert rate == defaults["sample_rate"] and audio.shape == (1, defaults["num_samples"])
    reading = read_tone(audio, rate)
    assert reading.pitch == "E4" and abs(reading.midi - 64) <= 0.5  # pYIN: within half a semitone
    assert reading.waveform == "square" and reading.contour == "steady"


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_model_follows_pitch_contour_and_waveform(name):
    pipe = AudioPipeline.from_pretrained(name)
    items = eval_items(12, templates="heldout")  # wordings never trained on
    out = pipe([it["text"] for it in items], seed=0)
    acc = score_tones(read_tones(out.audio, out.sample_rate), items)
    assert acc["pitch"] >= 10 / 12 and acc["contour"] >= 10 / 12 and acc["waveform"] >= 9 / 12, acc
    assert np.all(out.audio.reshape(len(items), -1).std(axis=1) > 0.01)  # not silent


def test_default_model_at_twice_the_training_length():
    pipe = AudioPipeline.from_pretrained(None)
    seconds = 2 * pipe.defaults["num_samples"] / pipe.sample_rate
    out = pipe(["a sine tone at C4", "a sawtooth wave playing A3"], seed=0, seconds=seconds)
    assert out.audio.shape == (2, 1, 2 * pipe.defaults["num_samples"])
    readings = read_tones(out.audio, out.sample_rate)
    assert [r.pitch for r in readings] == ["C4", "A3"]
