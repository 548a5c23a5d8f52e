"""The audio training recipes: exact resume (with and without the adversarial phase), a folder of
real files, diffusers' Oobleck through the same recipe, and the held-out seed kept out of training."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState

from mediadiff.audio.autoencoder import OobleckVAE, WaveformVAE, load_autoencoder
from mediadiff.audio.io import write_audio
from mediadiff.audio.tones import HELDOUT_SEED, synthesize_tone
from mediadiff.audio.vocoder import Vocoder

ROOT = Path(__file__).resolve().parents[1]

COMMON = [
    "--precision", "no", "--threads", "1", "--batch-size", "2", "--num-samples", "2048", "--crop", "1024",
    "--warmup-steps", "1", "--min-lr-ratio", "1", "--eval-clips", "2", "--score-tones", "0",
    "--checkpoint-every", "2", "--eval-every", "2", "--log-every", "1",
]  # fmt: skip
TINY_VAE = ["--channels", "8,8,8,8", "--latent-channels", "4", "--head-blocks", "1", "--stats-clips", "2"]
TINY_VOCODER = ["--dim", "8", "--blocks", "1"]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / "audio" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    AcceleratorState._reset_state(True)  # each recipe run builds its own Accelerator
    yield
    AcceleratorState._reset_state(True)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, atol=0, rtol=0, msg=name)


@pytest.mark.parametrize(
    ("recipe_name", "tiny", "load"),
    [("train_vae", TINY_VAE, load_autoencoder), ("train_vocoder", TINY_VOCODER, Vocoder.from_pretrained)],
)
@pytest.mark.parametrize("adversarial", [False, True])
def test_recipe_resumes_exactly(tmp_path, recipe_name, tiny, load, adversarial):
    recipe = load_recipe(recipe_name)
    extra = ["--adversarial-from", "1", "--disc-channels", "4"] if adversarial else []

    def run(out, steps, *more):
        return recipe.main(
            ["--output-dir", str(out), "--max-steps", str(steps), *COMMON, *tiny, *extra, *more]
        )

    summary = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    run(tmp_path / "b", 4, "--resume")
    a, b = load(tmp_path / "a" / "final"), load(tmp_path / "b" / "final")
    _same_weights(a, b)
    assert summary["steps"] == 4 and summary["skipped_steps"] == 0
    assert np.isfinite(summary["heldout_eval_mrstft"])
    if recipe_name == "train_vae":
        assert isinstance(a, WaveformVAE) and len(a.config.latent_scale) == 4
        assert a.config.latent_scale == b.config.latent_scale
    if adversarial:
        assert (tmp_path / "b" / "checkpoints" / "step_0000004" / "discriminator.safetensors").is_file()


def test_vocoder_recipe_with_locked_phase_prior_and_spectrum_loss(tmp_path):
    """The locked-phase prior vocoder trains through the recipe with the spectral term, which is logged."""
    recipe = load_recipe("train_vocoder")
    summary = recipe.main(
        ["--output-dir", str(tmp_path), "--max-steps", "6", *COMMON, *TINY_VOCODER,
         "--phase", "locked", "--prior", "--spectrum-weight", "1"]
    )  # fmt: skip
    v = Vocoder.from_pretrained(tmp_path / "final")
    assert v.config.phase == "locked" and v.config.prior
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    spectral = [r["spectrum_l1"] for r in logs if "spectrum_l1" in r]
    assert len(spectral) >= 5 and all(np.isfinite(spectral))
    assert summary["steps"] == 6


def test_vae_recipe_with_a_frozen_pretrained_vocoder_head(tmp_path):
    """--head vocoder --vocoder DIR starts the head from a trained vocoder; --freeze-vocoder keeps it
    exactly (on resume too) while the encoder and decoder learn, with the decoded-mel term logged."""
    vocoder = Vocoder(dim=8, num_blocks=1, phase="locked", prior=True, prior_iterations=2)
    vocoder.save_pretrained(tmp_path / "vocoder")
    recipe = load_recipe("train_vae")
    flags = [*COMMON, "--analysis", "mel", "--patch", "256", "--strides", "", "--decoder-strides", "",
             "--channels", "8", "--latent-channels", "4", "--stats-clips", "2", "--head", "vocoder",
             "--vocoder", str(tmp_path / "vocoder"), "--freeze-vocoder", "--decoded-mel-weight", "1"]  # fmt: skip
    recipe.main(["--output-dir", str(tmp_path / "a"), "--max-steps", "4", *flags])
    recipe.main(["--output-dir", str(tmp_path / "b"), "--max-steps", "2", *flags])
    recipe.main(["--output-dir", str(tmp_path / "b"), "--max-steps", "4", "--resume", *flags])
    a, b = load_autoencoder(tmp_path / "a" / "final"), load_autoencoder(tmp_path / "b" / "final")
    _same_weights(a, b)
    assert a.config.head == "vocoder" and a.config.vocoder == vocoder.config
    _same_weights(a.vocoder, vocoder)  # frozen: not one number moved
    fresh = WaveformVAE(a.config)
    assert any(not torch.equal(p, q) for p, q in zip(a.encoder.parameters(), fresh.encoder.parameters()))
    logs = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert logs[0]["trainable_params"] == logs[0]["params"] - sum(p.numel() for p in vocoder.parameters())
    assert all(np.isfinite(r["decoded_mel_l1"]) for r in logs if "loss" in r)
    with pytest.raises(SystemExit):  # a vocoder flag without the vocoder head
        recipe.main(["--output-dir", str(tmp_path / "c"), *COMMON, *TINY_VAE, "--freeze-vocoder"])
    with pytest.raises(SystemExit):  # nothing to learn
        recipe.main(["--output-dir", str(tmp_path / "c"), *COMMON, *TINY_VAE, "--mrstft-weight", "0",
                     "--mel-weight", "0", "--l1-weight", "0"])  # fmt: skip
    # the log-mel alone: the vocoder does not run in training (no waveform terms logged), and it learns
    summary = recipe.main(["--output-dir", str(tmp_path / "d"), "--max-steps", "30", *flags, "--mrstft-weight",
                           "0", "--mel-weight", "0", "--l1-weight", "0", "--lr", "3e-3"])  # fmt: skip
    logs = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "loss" in r]
    assert not any("mrstft" in r for r in steps) and np.isfinite(summary["heldout_eval_mrstft"])
    assert np.mean([r["decoded_mel_l1"] for r in steps[-5:]]) < 0.8 * np.mean(
        [r["decoded_mel_l1"] for r in steps[:5]]
    )


def test_recipes_refuse_the_heldout_seed(tmp_path):
    for name in ("train_vae", "train_vocoder"):
        with pytest.raises(SystemExit):
            load_recipe(name).main(["--output-dir", str(tmp_path / name), "--seed", str(HELDOUT_SEED)])


def test_vae_recipe_trains_on_a_folder_of_real_files(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    for i, (wave, midi) in enumerate([("sine", 60), ("square", 64), ("sawtooth", 67), ("triangle", 55)]):
        write_audio(
            root / f"{i}.{'wav' if i % 2 else 'flac'}", synthesize_tone(wave, midi, num_samples=3000), 16000
        )
    (root / "broken.wav").write_bytes(b"RIFF not really")
    summary = load_recipe("train_vae").main(
        [
            "--output-dir",
            str(tmp_path / "run"),
            "--max-steps",
            "2",
            "--data",
            str(root),
            *COMMON,
            *TINY_VAE,
            "--eval-clips",
            "1",
        ]
    )
    assert summary["steps"] == 2 and summary["data"] == str(root)
    assert isinstance(load_autoencoder(tmp_path / "run" / "final"), WaveformVAE)


def test_oobleck_trains_through_the_same_recipe(tmp_path):
    summary = load_recipe("train_vae").main(
        [
            "--output-dir",
            str(tmp_path / "oob"),
            "--max-steps",
            "2",
            "--arch",
            "oobleck",
            *COMMON,
            *TINY_VAE,
            "--strides",
            "2,4,4,8",
        ]
    )
    assert summary["arch"] == "oobleck"
    model = load_autoencoder(tmp_path / "oob" / "final")
    assert isinstance(model, OobleckVAE) and model.latent_shape((1, 1, 2048)) == (1, 4, 8)


def test_oobleck_wrapper_keeps_diffusers_numbers():
    """The wrapper's posterior and decode are diffusers' own (same weights, same outputs)."""
    torch.manual_seed(0)
    vae = OobleckVAE(latent_channels=4, encoder_hidden_size=8, decoder_channels=8).eval()
    x = torch.rand(2, 1, 1024) * 2 - 1
    with torch.no_grad():
        dist = vae.model.encode(x).latent_dist
        posterior = vae.encode_posterior(x)
        torch.testing.assert_close(posterior.mean, dist.mean)
        torch.testing.assert_close(posterior.std, dist.std, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(vae.decode(vae.encode(x)), vae.model.decode(dist.mean).sample.clamp(-1, 1))
        kl = 0.5 * (dist.mean.pow(2) + dist.std.pow(2) - 1 - dist.std.pow(2).log()).flatten(1).sum(1)
        torch.testing.assert_close(posterior.kl(), kl, rtol=1e-4, atol=1e-4)
