"""The text-to-audio recipes run end to end for a few steps: periodic pitch / contour / waveform
evaluation, export to an AudioPipeline, the mel path, a folder of real files with a corrupt one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from accelerate.state import AcceleratorState

from mediadiff import AudioPipeline
from mediadiff.audio import DiT1D, MelAutoencoder, UNet1D, UNet2D, WaveformVAE
from mediadiff.audio.io import write_audio
from mediadiff.audio.tones import HELDOUT_SEED, synthesize_tone
from tests.test_audio_recipes import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

COMMON = ["--max-steps", "2", "--batch-size", "2", "--eval-num", "2", "--warmup-steps", "0", "--items", "4"]
TINY_DIT = [*COMMON, "--width", "32", "--depth", "1", "--heads", "2"]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    AcceleratorState._reset_state(True)  # each recipe run builds its own Accelerator
    yield
    AcceleratorState._reset_state(True)


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tones_latent_trains_logs_prompt_following_and_exports(tmp_path):
    recipe = load_recipe("tones_latent")
    argv = [*TINY_DIT, "--output-dir", str(tmp_path)]
    recipe.main(argv)
    samples = [e for e in events(tmp_path) if e.get("event") == "samples"]
    assert samples and {"pitch_acc", "contour_acc", "waveform_acc", "all_acc"} <= samples[-1].keys()
    assert all(0.0 <= samples[-1][f"{k}_acc"] <= 1.0 for k in ("pitch", "contour", "waveform", "all"))
    assert (tmp_path / "samples" / "step-00000002" / "spectrograms.png").is_file()
    assert (tmp_path / "cache").is_dir()  # latents + MiniLM tokens encoded once

    folder = recipe.main([*argv, "--export", str(tmp_path / "pipe")])
    pipe = AudioPipeline.from_pretrained(folder)
    assert isinstance(pipe.backbone, DiT1D) and isinstance(pipe.autoencoder, WaveformVAE)
    assert pipe.info["steps"] == 2 and pipe.info["recipe"] == "recipes/audio/tones_latent.py"
    assert pipe.info["periodic_eval"][-1]["step"] == 2
    assert pipe.defaults["num_samples"] == 16384 and pipe.sample_rate == 16000
    out = pipe("a sine tone at C4", steps=2, seed=0)
    assert out.audio.shape == (1, 1, 16384) and np.isfinite(out.audio).all()


def test_tones_latent_with_the_unet1d(tmp_path):
    recipe = load_recipe("tones_latent")
    argv = [
        *COMMON,
        "--backbone",
        "unet",
        "--width",
        "32",
        "--output-dir",
        str(tmp_path),
        "--sample-every",
        "0",
    ]
    recipe.main(argv)
    pipe = AudioPipeline.from_pretrained(recipe.main([*argv, "--export", str(tmp_path / "pipe")]))
    assert isinstance(pipe.backbone, UNet1D)
    assert pipe("a square wave", steps=1, seed=0, seconds=0.5).audio.shape == (1, 1, 8000)


def test_tones_mel_trains_on_standardised_log_mels(tmp_path):
    recipe = load_recipe("tones_mel")
    argv = [*COMMON, "--channels", "8", "--channel-mult", "1", "2", "--output-dir", str(tmp_path)]
    recipe.main(argv)
    samples = [e for e in events(tmp_path) if e.get("event") == "samples"]
    assert samples and "pitch_acc" in samples[-1]
    pipe = AudioPipeline.from_pretrained(recipe.main([*argv, "--export", str(tmp_path / "pipe")]))
    assert isinstance(pipe.backbone, UNet2D) and isinstance(pipe.autoencoder, MelAutoencoder)
    # the log-mel is standardised by the training clips' statistics, stored in the folder
    (shift,), (scale,) = pipe.autoencoder.config.latent_shift, pipe.autoencoder.config.latent_scale
    assert -1 < shift < 0 and scale > 1
    assert pipe.latent_shape(pipe.resolve()) == (1, 128, 64)
    assert pipe("a sine tone", steps=1, seed=0).audio.shape == (1, 1, 16384)


def test_text_to_audio_recipes_refuse_the_heldout_seed(tmp_path):
    for name in ("tones_latent", "tones_mel"):
        with pytest.raises(SystemExit, match=str(HELDOUT_SEED)):
            load_recipe(name).main(["--data-seed", str(HELDOUT_SEED), "--output-dir", str(tmp_path)])


def test_folder_recipe_on_real_files_skips_a_corrupt_one(tmp_path, capsys):
    root = tmp_path / "sounds"
    root.mkdir()
    notes = [("sine", 60), ("square", 64), ("sawtooth", 67)]
    for i, (wave, midi) in enumerate(notes):
        write_audio(
            root / f"{i}.{'wav' if i % 2 else 'flac'}", synthesize_tone(wave, midi, num_samples=6000), 16000
        )
        (root / f"{i}.txt").write_text(f"a {wave} note")
    (root / "broken.wav").write_bytes(b"RIFF not really")
    (root / "broken.txt").write_text("a broken note")
    run = tmp_path / "run"
    argv = [
        "--data", str(root), "--output-dir", str(run), "--max-steps", "3", "--batch-size", "2",
        "--warmup-steps", "0", "--width", "32", "--depth", "1", "--heads", "2", "--seconds", "0.5",
        "--sample-every", "3", "--prompt", "a sine note",
    ]  # fmt: skip
    load_recipe("folder").main(argv)
    out = run / "samples" / "step-00000003"
    assert (out / "spectrograms.png").is_file() and (out / "sample.wav").is_file()
    pipe = AudioPipeline.from_pretrained(
        load_recipe("folder").main([*argv, "--export", str(tmp_path / "pipe")])
    )
    assert pipe.defaults["num_samples"] == 8192  # 0.5 s rounded up to whole tokens (2 x 256 samples)
    logged = (run / "log.txt").read_text() if (run / "log.txt").is_file() else capsys.readouterr().out
    assert "broken.wav" in logged + capsys.readouterr().err
