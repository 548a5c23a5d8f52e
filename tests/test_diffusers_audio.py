"""Stable Audio Open from a diffusers folder: parity with ``StableAudioPipeline`` (issue 16).

Tiny random components (StableAudioDiTModel, AutoencoderOobleck, T5, StableAudioProjectionModel) built
from configs and saved as a diffusers folder; diffusers' pipeline and ``AudioPipeline.from_diffusers``
then run on that folder from the same initial latents, with CFG and the scheduler's own solver
(SDE-DPM-Solver++(2M) over the exponential sigma grid). diffusers draws its SDE noise from a Brownian
tree (``torchsde``, not installed here); the test swaps it for the noise our sampler draws from the
clip's generator, so the two sides see the same numbers. Everything is float32 on the CPU; what differs
is the arithmetic around the same modules (our step coefficients in float64 scalars from the cosine
schedule, diffusers' in float32 from its sigma table; the guidance batch ordered (cond, uncond) here,
(uncond, cond) there), so the agreement is float32 rounding: measured ~1e-7 relative, tolerance 1e-5.
"""

from __future__ import annotations

import json
import math
import time
from typing import ClassVar

import numpy as np
import pytest
import torch

from mediadiff.diffusion import randn
from mediadiff.pipelines.audio import AudioPipeline

from .diffusers_tiny import NEGATIVE, PROMPT, rel_err, t5_tokenizer, tiny_t5

diffusers = pytest.importorskip("diffusers")

SEED = 5
STEPS = 6
GUIDANCE = 4.0
RATE = 1000  # Hz: a 64-frame window of hop 4 is 0.256 s
SAMPLE_SIZE = 64  # latent frames of the model's window
TOL = {"latents": 1e-5, "audio": 1e-5}  # relative to the max |value|; measured: printed by the test
OTHER = "a dog playing a sine wave"


def cosine_scheduler_module():
    """diffusers' ``scheduling_cosine_dpmsolver_multistep`` module, imported even without ``torchsde``
    (which only its Brownian-tree noise needs, and the tests replace that): a stand-in ``torchsde`` is
    in ``sys.modules`` for the import only. Without torchsde, ``diffusers.CosineDPMSolverMultistepScheduler``
    is a placeholder that refuses to build, so the tests take the class from this module."""
    import importlib
    import sys
    import types

    name = "diffusers.schedulers.scheduling_cosine_dpmsolver_multistep"
    if name in sys.modules:
        return sys.modules[name]
    try:
        import torchsde  # noqa: F401
    except ImportError:
        sys.modules["torchsde"] = types.ModuleType("torchsde")
        try:
            return importlib.import_module(name)
        finally:
            del sys.modules["torchsde"]
    return importlib.import_module(name)


def build_stable_audio(folder):
    """A tiny StableAudioPipeline saved to ``folder``: DiT (1 layer, 2 heads of 8, GQA 2->1), Oobleck VAE
    (hop 4, 2 channels), T5 (width 16, 16 tokens), projection (16 -> 16, seconds in [0, 4])."""
    from diffusers import (
        AutoencoderOobleck,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )

    tokenizer = t5_tokenizer(model_max_length=16)
    text_encoder = tiny_t5(len(tokenizer), d_model=16)
    torch.manual_seed(0)
    transformer = StableAudioDiTModel(
        sample_size=SAMPLE_SIZE,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        num_key_value_attention_heads=1,
        out_channels=4,
        cross_attention_dim=16,
        time_proj_dim=8,
        global_states_input_dim=32,
        cross_attention_input_dim=16,
    )
    vae = AutoencoderOobleck(
        encoder_hidden_size=6,
        downsampling_ratios=[2, 2],
        channel_multiples=[1, 2],
        decoder_channels=6,
        decoder_input_channels=4,
        audio_channels=2,
        sampling_rate=RATE,
    )
    projection = StableAudioProjectionModel(
        text_encoder_dim=16, conditioning_dim=16, min_value=0, max_value=4
    )
    scheduler = cosine_scheduler_module().CosineDPMSolverMultistepScheduler(
        sigma_min=0.3, sigma_max=500.0, sigma_data=1.0, sigma_schedule="exponential", solver_order=2
    )
    pipe = StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def stable_audio_folder(tmp_path_factory):
    return build_stable_audio(tmp_path_factory.mktemp("stable_audio") / "pipe")


def load_reference(folder):
    """diffusers' StableAudioPipeline from the folder, component by component (its ``from_pretrained``
    checks the scheduler against the torchsde placeholder and fails without torchsde)."""
    from diffusers import (
        AutoencoderOobleck,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import AutoTokenizer, T5EncoderModel

    pipe = StableAudioPipeline(
        vae=AutoencoderOobleck.from_pretrained(folder / "vae"),
        text_encoder=T5EncoderModel.from_pretrained(folder / "text_encoder"),
        projection_model=StableAudioProjectionModel.from_pretrained(folder / "projection_model"),
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
        transformer=StableAudioDiTModel.from_pretrained(folder / "transformer"),
        scheduler=cosine_scheduler_module().CosineDPMSolverMultistepScheduler.from_pretrained(
            folder / "scheduler"
        ),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class ReplayNoise:
    """Stands in for diffusers' ``BrownianTreeNoiseSampler``: each call draws ``[b c f]`` from the clips'
    generators in the order our ``dpmpp_2m_sde`` draws its fresh noise (one draw per step; diffusers'
    extra draw on the last step to sigma = 0 is multiplied by 0)."""

    generators: ClassVar[list[torch.Generator]] = []

    def __init__(self, x, sigma_min=None, sigma_max=None, seed=None, transform=None):
        self.shape = x.shape[1:]

    def __call__(self, sigma, sigma_next):
        return torch.stack([torch.randn(self.shape, generator=g) for g in ReplayNoise.generators])


def run_both(folder, monkeypatch, prompts, negative, seconds=None):
    """(ours, diffusers') latents [b 4 64] and waveforms [b 2 t] (t: 256, the window, or ``seconds``)
    from the same noise."""
    cosine = cosine_scheduler_module()

    ours = AudioPipeline.from_diffusers(folder)
    settings, _ = ours.prepare_edit(steps=STEPS, guidance_scale=GUIDANCE, seconds=seconds)
    _, seeds, cond, uncond = ours.prepare(prompts, negative, SEED, 1)
    start = time.perf_counter()
    z = ours.sample_latents(settings, cond, uncond, seeds)  # [b c f]
    audio = ours.autoencoder.decode(z)[..., : settings["num_samples"]]  # [b 2 t]
    ours_s = time.perf_counter() - start

    ref_pipe = load_reference(folder)
    ref_pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    noise = randn((len(seeds), *ours.latent_shape(settings)), generators)  # [b c f], as sample_latents draws
    ReplayNoise.generators = generators  # then the per-step noise continues from the same generators
    monkeypatch.setattr(cosine, "BrownianTreeNoiseSampler", ReplayNoise)
    captured = []
    start = time.perf_counter()
    ref_audio = ref_pipe(
        prompts,
        negative_prompt=negative,
        audio_end_in_s=seconds,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        latents=noise,  # scaled by init_noise_sigma = sqrt(sigma_max^2 + 1): our unit-variance start / alpha
        callback=lambda i, t, latents: captured.append(latents.clone()),
        output_type="pt",
    ).audios  # [b 2 t]
    ref_s = time.perf_counter() - start
    print(f"stable audio: ours {ours_s:.2f} s, diffusers {ref_s:.2f} s")
    return (z, audio), (captured[-1], ref_audio), ours


@pytest.mark.parametrize(
    "case",
    [(PROMPT, None, None), ([PROMPT, OTHER], [NEGATIVE, "a cat"], None), (PROMPT, None, 0.2)],
    ids=["zero-uncond", "negative-prompts-batch2", "0.2s-of-the-window"],
)
def test_stable_audio_matches_diffusers_pipeline(stable_audio_folder, monkeypatch, case):
    """StableAudioPipeline and AudioPipeline.from_diffusers on one folder, CFG 4, 6 SDE-DPM-Solver++(2M)
    steps: the same final latents (compared to diffusers' variance-exploding latents; at sigma = 0 the
    two scalings agree) and the same decoded waveforms. Cases: no negative prompt (diffusers' zero
    unconditional input = our empty prompt); two prompts with a negative prompt each (T5 of the
    negative prompt, its timing tokens included); a 0.2 s clip (seconds_total 0.2: the whole 0.256 s
    window is sampled and the waveform cut to 200 samples, on both sides)."""
    prompts, negative, seconds = case
    (z, audio), (ref_z, ref_audio), ours = run_both(
        stable_audio_folder, monkeypatch, prompts, negative, seconds
    )
    b = 1 if isinstance(prompts, str) else len(prompts)
    samples = SAMPLE_SIZE * 4 if seconds is None else round(seconds * RATE)
    assert z.shape == ref_z.shape == (b, 4, SAMPLE_SIZE)
    assert audio.shape == ref_audio.shape == (b, 2, samples)
    abs_z, rel_z = rel_err(z, ref_z)
    abs_a, rel_a = rel_err(audio, ref_audio)
    print(
        f"stable audio {case}: latents max-abs {abs_z:.2e} rel {rel_z:.2e}; audio {abs_a:.2e} rel {rel_a:.2e}"
    )
    assert rel_z < TOL["latents"], (abs_z, rel_z)
    assert rel_a < TOL["audio"], (abs_a, rel_a)
    assert ref_z.abs().max() > 0.1 and ref_audio.abs().max() > 1e-3
    assert ours.prediction == "v" and ours.defaults["sampler"] == "dpmpp_2m_sde"
    assert ours.sampler_options == {"spacing": "exponential"}


def test_stable_audio_conditioning_reaches_the_model(stable_audio_folder, monkeypatch):
    """The result depends on the prompt, on the guidance and on seconds_total (the timing tokens), so
    the parity above compared all three; the clip's length sets seconds_total."""
    ours = AudioPipeline.from_diffusers(stable_audio_folder)
    settings, _ = ours.prepare_edit(steps=2, guidance_scale=GUIDANCE)
    _, seeds, cond, uncond = ours.prepare(PROMPT, None, SEED, 1)
    base = ours.sample_latents(settings, cond, uncond, seeds)
    _, _, other, _ = ours.prepare(OTHER, None, SEED, 1)
    assert (ours.sample_latents(settings, other, uncond, seeds) - base).abs().max() > 1e-3
    unguided = dict(settings, guidance_scale=1.0)
    assert (ours.sample_latents(unguided, cond, uncond, seeds) - base).abs().max() > 1e-3
    shorter, _ = ours.prepare_edit(steps=2, guidance_scale=GUIDANCE, seconds=0.1)
    timed = ours.sample_latents(shorter, cond, uncond, seeds)  # the same window, seconds_total 0.1
    assert timed.shape == base.shape and (timed - base).abs().max() > 1e-3
    seen = []
    timing = ours.text_encoder.timing
    monkeypatch.setattr(
        ours.text_encoder, "timing", lambda b, s0, s1: seen.append((s0, s1)) or timing(b, s0, s1)
    )
    out = ours(PROMPT, seconds=0.2, steps=2, seed=SEED)
    assert seen == [(0.0, 0.2), (0.0, 0.2)]  # cond and uncond
    assert out.audio.shape == (1, 2, 200) and out.sample_rate == RATE
    # the empty prompt is diffusers' zero input: no real token, and the cross-attention sees zeros
    tokens, mask = ours.text_encoder.encode(["", PROMPT])
    assert not mask[0].any() and mask[1].any() and tokens[0].abs().max() == 0


def test_stable_audio_public_call_matches(stable_audio_folder, monkeypatch):
    """``AudioPipeline(prompt, seed=...)``: the float waveform equals diffusers' clamped to [-1, 1]."""
    ours = AudioPipeline.from_pretrained(stable_audio_folder)  # model_index.json -> from_diffusers
    out = ours(PROMPT, steps=STEPS, guidance_scale=GUIDANCE, seed=SEED)
    (_, audio), (_, ref_audio), _ = run_both(stable_audio_folder, monkeypatch, PROMPT, None)
    assert out.audio.shape == (1, 2, SAMPLE_SIZE * 4) and out.sample_rate == RATE
    np.testing.assert_allclose(out.audio, audio.clamp(-1, 1).numpy(), atol=1e-6)
    assert math.isclose(out.seconds, SAMPLE_SIZE * 4 / RATE)
    assert (torch.from_numpy(out.audio) - ref_audio.clamp(-1, 1)).abs().max() < 1e-5


def test_stable_audio_saves_as_a_diffusers_folder(stable_audio_folder, tmp_path):
    """save_pretrained writes a diffusers folder again (projection model and scheduler copied); it loads
    back to the same clip."""
    ours = AudioPipeline.from_diffusers(stable_audio_folder)
    saved = ours.save_pretrained(tmp_path / "saved")
    assert (saved / "projection_model").is_dir() and (saved / "model_index.json").is_file()
    again = AudioPipeline.from_pretrained(saved)
    a = ours(PROMPT, steps=2, seed=SEED).audio
    np.testing.assert_array_equal(again(PROMPT, steps=2, seed=SEED).audio, a)
    assert again.defaults == ours.defaults and again.sampler_options == ours.sampler_options


def test_stable_audio_generate_command(stable_audio_folder, tmp_path, capsys):
    """``mediadiff generate audio PROMPT --model FOLDER -o out.wav`` writes a real wav at the model's rate."""
    import soundfile as sf

    from mediadiff.cli import main

    out = tmp_path / "out.wav"
    argv = ["generate", "audio", PROMPT, "--model", str(stable_audio_folder), "-o", str(out)]
    argv += ["--steps", "3", "--seed", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    data, rate = sf.read(out, always_2d=True)  # [t c]
    assert rate == RATE and data.shape == (SAMPLE_SIZE * 4, 2)
    assert np.abs(data).max() > 0
    assert "dpmpp_2m_sde 3 steps" in capsys.readouterr().out


def test_cosine_scheduler_settings():
    """The scheduler config read: cosine schedule with the config's range, whose t is diffusers' c_noise,
    and whose exponential grid is diffusers' sigma grid; unsupported options are named."""
    from mediadiff.diffusion.interop import scheduler_settings

    ref = cosine_scheduler_module().CosineDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500.0)
    settings = scheduler_settings(dict(ref.config, _class_name="CosineDPMSolverMultistepScheduler"))
    ref.set_timesteps(10)
    levels = settings.schedule.grid(10, settings.sampler_options["spacing"])
    assert len(levels) == 11 and levels[-1].sigma == 0
    np.testing.assert_allclose([lv.s for lv in levels[:-1]], ref.sigmas[:-1].double().numpy(), rtol=1e-6)
    np.testing.assert_allclose([lv.t for lv in levels[:-1]], ref.timesteps.double().numpy(), rtol=1e-6)
    # c_in = 1 / sqrt(s^2 + 1) is alpha: diffusers' model input is our sample in the cosine scaling
    np.testing.assert_allclose(
        [lv.alpha for lv in levels[:-1]], [1 / math.sqrt(lv.s**2 + 1) for lv in levels[:-1]]
    )
    for key, value in {
        "sigma_data": 0.5,
        "solver_type": "heun",
        "solver_order": 1,
        "prediction_type": "epsilon",
    }.items():
        with pytest.raises(ValueError, match=key if key != "prediction_type" else "epsilon"):
            scheduler_settings(
                dict(ref.config, _class_name="CosineDPMSolverMultistepScheduler", **{key: value})
            )


def test_stable_audio_folder_is_an_audio_pipeline(stable_audio_folder):
    """The registry names the folder's class: VideoPipeline refuses it, naming it and the audio modality."""
    from mediadiff.pipelines.video import VideoPipeline

    assert (
        json.loads((stable_audio_folder / "model_index.json").read_text())["_class_name"]
        == "StableAudioPipeline"
    )
    with pytest.raises(ValueError, match=r"StableAudioPipeline.*audio"):
        VideoPipeline.from_diffusers(stable_audio_folder)
