"""diffusers video pipelines as mediadiff pipelines: parity with diffusers' own pipelines (issue 16).

Each family: tiny random components built from configs, saved as a diffusers folder
(``pipe.save_pretrained``), then diffusers' pipeline and ``VideoPipeline.from_diffusers`` run on that
folder from the same initial latents, with the same sampler, steps and guidance. Everything is float32
on the CPU. The two sides run the same modules on the same inputs; what differs is the arithmetic
around them: our samplers step in the variance-exploding form in float64 scalars, diffusers in
float32 (and CogVideoX's scheduler builds its beta table in float64, ours in float32), and the
guidance batch is ordered (cond, uncond) here, (uncond, cond) in CogVideoXPipeline (WanPipeline runs
the two apart). So the agreement is float32 rounding amplified by a few steps of a random network:
1e-6 relative measured (printed by each test with -s), tolerances 2e-5 (about 10x).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mediadiff.diffusion import randn
from mediadiff.pipelines.video import VideoPipeline

from .diffusers_tiny import NEGATIVE, PROMPT, rel_err, t5_tokenizer, tiny_t5, tiny_umt5

diffusers = pytest.importorskip("diffusers")

SEED = 3
# CogVideoX: 4 trailing DDIM steps (4 divides 1000, so diffusers' prev_timestep = t - 1000 // 4 is the
# next grid time, as ours), guidance 6, 9 frames of 16x16 -> latents [1 4 3 4 4].
COG = {"height": 16, "width": 16, "steps": 4, "guidance_scale": 6.0}
COG_VARIANTS = {  # name -> (build_cogvideox options, frames): 1 + 4 * 2 frames -> 3 latent frames, 1 + 4 -> 2
    "rope": ({"rotary": True}, 9),
    "sincos": ({"rotary": False}, 9),
    "rope-1.5": ({"rotary": True, "patch_size_t": 2}, 5),
}
COG_TOL = {"latents": 2e-5, "frames": 2e-5}  # relative to the max |value|; measured 1.0e-6 to 1.6e-6
COG_TEXT = 12  # the tiny transformer's max_text_seq_length: the T5 tokens both sides encode


def build_cogvideox(folder, rotary: bool, patch_size_t: int | None = None):
    """A tiny random CogVideoXPipeline (1 layer, 2 heads of 16, T5 of width 16) saved to ``folder``."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    tokenizer = t5_tokenizer()
    text_encoder = tiny_t5(len(tokenizer))
    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,  # 3D RoPE splits it 4 / 6 / 6 over (f, h, w): it must be a multiple of 16
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=16,
        num_layers=1,
        sample_width=4,
        sample_height=4,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=COG_TEXT,
        use_rotary_positional_embeddings=rotary,
        patch_size_t=patch_size_t,  # CogVideoX 1.5: patches of 2 latent frames, "slice" RoPE grid
    )
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        block_out_channels=(8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    # the released CogVideoX-2b scheduler config: v-prediction, trailing, zero SNR, SNR shift 3
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=3.0,
        timestep_spacing="trailing",
    )
    pipe = CogVideoXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cogvideox_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogvideox")
    return {name: build_cogvideox(root / name, **kw) for name, (kw, _) in COG_VARIANTS.items()}


def run_both(pipeline_class, folder, sizes, text_length: int, frames_first: bool = False):
    """(ours, diffusers') latents [1 c f h w] and frames [1 3 f h w] in [0, 1], and our pipeline:
    VideoPipeline.from_diffusers(folder) and diffusers' ``pipeline_class`` on the folder, from the same
    initial latents, at ``sizes`` (num_frames, height, width, steps, guidance_scale) for PROMPT / NEGATIVE.
    text_length: diffusers' max_sequence_length; frames_first: its latents are [b f c h w] (CogVideoX)."""
    ours = VideoPipeline.from_diffusers(folder)
    settings, _ = ours.prepare_edit(**sizes)
    _, seeds, cond, uncond = ours.prepare(PROMPT, NEGATIVE, SEED, 1)
    z = ours.sample_latents(settings, cond, uncond, seeds)  # [1 c f h w]
    frames = (ours.autoencoder.decode(z) / 2 + 0.5).clamp(0, 1)  # [1 3 f h w]

    ref_pipe = pipeline_class.from_pretrained(folder, dtype=torch.float32)
    ref_pipe.set_progress_bar_config(disable=True)
    noise = randn((1, *ours.latent_shape(settings)), [torch.Generator().manual_seed(SEED)])  # [1 c f h w]
    call = dict(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_frames=sizes["num_frames"],
        height=sizes["height"],
        width=sizes["width"],
        num_inference_steps=sizes["steps"],
        guidance_scale=sizes["guidance_scale"],
        latents=noise.permute(0, 2, 1, 3, 4) if frames_first else noise,  # [1 f c h w] or [1 c f h w]
        max_sequence_length=text_length,
    )
    ref_z = ref_pipe(**call, output_type="latent").frames  # as the latents went in
    if frames_first:
        ref_z = ref_z.permute(0, 2, 1, 3, 4)  # [1 c f h w]
    ref_frames = ref_pipe(**call, output_type="pt").frames.permute(0, 2, 1, 3, 4)  # [1 3 f h w]
    return (z, frames), (ref_z, ref_frames), ours


def run_both_cogvideox(folder, num_frames: int = 9):
    """:func:`run_both` for COG at ``num_frames``."""
    from diffusers import CogVideoXPipeline

    sizes = {"num_frames": num_frames, **COG}
    return run_both(CogVideoXPipeline, folder, sizes, text_length=COG_TEXT, frames_first=True)


@pytest.mark.parametrize("variant", list(COG_VARIANTS))
def test_cogvideox_matches_diffusers_pipeline(cogvideox_folders, variant):
    """CogVideoXPipeline and VideoPipeline.from_diffusers on one folder: same latents after 4 DDIM steps
    with CFG 6 and a negative prompt, and the same decoded frames (3D RoPE of 1.0 and 1.5, sincos)."""
    num_frames = COG_VARIANTS[variant][1]
    (z, frames), (ref_z, ref_frames), ours = run_both_cogvideox(cogvideox_folders[variant], num_frames)
    assert z.shape == ref_z.shape == (1, 4, 1 + (num_frames - 1) // 4, 4, 4)
    # the VAE decodes an odd count F of latent frames to 1 + 4 (F - 1) frames and an even one to 4 F (its
    # frame batching, in diffusers' pipeline alike): 1.5's even latent counts give 8 frames for 5
    out_frames = num_frames if z.shape[2] % 2 else 4 * z.shape[2]
    assert frames.shape == ref_frames.shape == (1, 3, out_frames, 16, 16)
    abs_z, rel_z = rel_err(z, ref_z)
    abs_f, rel_f = rel_err(frames, ref_frames)
    print(
        f"cogvideox {variant}: latents max-abs {abs_z:.2e} rel {rel_z:.2e}; frames {abs_f:.2e} rel {rel_f:.2e}"
    )
    assert rel_z < COG_TOL["latents"], (abs_z, rel_z)
    assert rel_f < COG_TOL["frames"], (abs_f, rel_f)
    # guidance 6 > 1: both sides run classifier-free guidance, so our CFG is compared too
    assert ref_z.abs().max() > 0.1
    assert ours.sampler_options["timesteps"](4) == [0.999, 0.749, 0.499, 0.249]
    assert ours.schedule.snr_shift_scale == 3.0 and ours.schedule.rescale_zero_terminal_snr
    assert ours.prediction == "v" and ours.defaults["sampler"] == "ddim"


def test_cogvideox_generate_end_to_end(cogvideox_folders):
    """The public call: uint8 frames equal to diffusers' np output up to one level of rounding."""
    from diffusers import CogVideoXPipeline

    folder = cogvideox_folders["rope"]
    ours = VideoPipeline.from_pretrained(folder)  # a model_index.json folder goes through from_diffusers
    ours.autocast = False  # float32 on any CPU (auto would take bf16 on a CPU with native bf16)
    out = ours(PROMPT, num_frames=9, height=16, width=16, steps=4, guidance_scale=6.0, seed=SEED)
    assert out.frames.shape == (1, 9, 16, 16, 3) and out.frames.dtype == np.uint8
    ref_pipe = CogVideoXPipeline.from_pretrained(folder, dtype=torch.float32)
    ref_pipe.set_progress_bar_config(disable=True)
    noise = randn((1, 4, 3, 4, 4), [torch.Generator().manual_seed(SEED)])  # [1 c f h w]
    ref = ref_pipe(
        PROMPT,
        num_frames=9,
        height=16,
        width=16,
        num_inference_steps=4,
        guidance_scale=6.0,
        latents=noise.permute(0, 2, 1, 3, 4),
        max_sequence_length=COG_TEXT,
        output_type="np",
    ).frames  # [1 f h w 3] in [0, 1]
    assert np.abs(out.frames.astype(np.float64) - ref * 255).max() <= 1.0


def test_cogvideox_generate_command(cogvideox_folders, tmp_path, capsys):
    """``mediadiff generate video PROMPT --model FOLDER -o out.mp4 --steps 2`` on a diffusers folder
    (the command's main in-process) writes a real mp4 of the asked size."""
    from mediadiff.cli import main
    from mediadiff.video.io import read_video

    out = tmp_path / "out.mp4"
    argv = ["generate", "video", PROMPT, "--model", str(cogvideox_folders["rope"]), "-o", str(out)]
    argv += ["--steps", "2", "--num-frames", "9", "--size", "16x16", "--seed", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    frames = read_video(out)  # [f h w 3] uint8, decoded back from the file
    assert frames.shape == (9, 16, 16, 3) and frames.dtype == np.uint8
    assert "ddim 2 steps" in capsys.readouterr().out


# Wan: 9 frames of 16x16 -> latents [1 4 3 2 2] (patch 1x2x2: 3 x 1 x 1 tokens), 6 steps, guidance 5.
WAN = {"num_frames": 9, "height": 16, "width": 16, "steps": 6, "guidance_scale": 5.0}
WAN_TOL = {"latents": 2e-5, "frames": 2e-5}  # relative to the max |value|; measured: see the test ids


def build_wan(folder, scheduler_name: str):
    """A tiny random WanPipeline (1 layer, 2 heads of 12, UMT5 of width 16, 16 text tokens) saved to ``folder``."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    tokenizer = t5_tokenizer(model_max_length=16)  # Wan's tokenizer is UMT5's, a T5 Unigram tokenizer
    text_encoder = tiny_umt5(len(tokenizer))
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,  # RoPE splits it 4 / 4 / 4 over (f, h, w)
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=1,
        rope_max_seq_len=32,
    )
    vae = AutoencoderKLWan(
        base_dim=4,
        z_dim=4,
        dim_mult=[1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.8, 2.0, 1.1],
        scale_factor_spatial=4,
    )
    if scheduler_name == "unipc":  # the released Wan 2.1 scheduler
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
        )
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def wan_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    return {name: build_wan(root / name, name) for name in ("unipc", "flow_match")}


def run_both_wan(folder):
    """:func:`run_both` for WAN."""
    from diffusers import WanPipeline

    return run_both(WanPipeline, folder, WAN, text_length=16)


@pytest.mark.parametrize("scheduler", ["unipc", "flow_match"])
def test_wan_matches_diffusers_pipeline(wan_folders, scheduler):
    """WanPipeline and VideoPipeline.from_diffusers on one folder: UniPC (bh2, order 2, flow sigmas,
    shift 3) or flow-matching Euler (shift 3), 6 steps, CFG 5 with a negative prompt; same latents and
    decoded frames."""
    (z, frames), (ref_z, ref_frames), ours = run_both_wan(wan_folders[scheduler])
    assert z.shape == ref_z.shape == (1, 4, 3, 4, 4)
    assert frames.shape == ref_frames.shape == (1, 3, 9, 16, 16)
    abs_z, rel_z = rel_err(z, ref_z)
    abs_f, rel_f = rel_err(frames, ref_frames)
    print(f"wan {scheduler}: latents max-abs {abs_z:.2e} rel {rel_z:.2e}; frames {abs_f:.2e} rel {rel_f:.2e}")
    assert rel_z < WAN_TOL["latents"], (abs_z, rel_z)
    assert rel_f < WAN_TOL["frames"], (abs_f, rel_f)
    assert ref_z.abs().max() > 0.1
    assert ours.prediction == "flow" and ours.schedule.shift == 3.0
    assert ours.defaults["sampler"] == {"unipc": "unipc", "flow_match": "euler"}[scheduler]


@pytest.mark.parametrize("family", ["cogvideox", "wan"])
def test_text_context_matches_encode_prompt(cogvideox_folders, wan_folders, family):
    """Our context for a prompt (and for the empty negative prompt) is the pipeline's own ``encode_prompt``:
    CogVideoX's T5 over pad tokens with no mask, Wan's cleaned prompt, masked UMT5, zero-padded."""
    from diffusers import CogVideoXPipeline, WanPipeline

    folder, cls, length = {
        "cogvideox": (cogvideox_folders["rope"], CogVideoXPipeline, COG_TEXT),
        "wan": (wan_folders["unipc"], WanPipeline, 16),
    }[family]
    prompt = " a red&#32;circle  moving right "  # an HTML entity and extra spaces: Wan cleans them
    ours = VideoPipeline.from_diffusers(folder)
    ref = cls.from_pretrained(folder, dtype=torch.float32)
    cond, neg = ref.encode_prompt(prompt, "", do_classifier_free_guidance=True, max_sequence_length=length)
    mine, empty = ours.encode([prompt]), ours.encode([""])  # {"context": [1 l d], "context_mask": [1 l]}
    assert mine["context"].shape == cond.shape == (1, length, 16) and bool(mine["context_mask"].all())
    assert torch.allclose(mine["context"], cond, atol=1e-6) and torch.allclose(
        empty["context"], neg, atol=1e-6
    )


def test_diffusers_pipeline_saves_as_a_diffusers_folder(wan_folders, tmp_path):
    """save_pretrained of a pipeline built from a diffusers folder writes a diffusers folder again (the
    models it holds, the other components copied, mediadiff's defaults beside them): it reloads to the
    same samples, and diffusers reads it."""
    from diffusers import WanPipeline

    pipe = VideoPipeline.from_diffusers(wan_folders["unipc"])
    pipe.defaults.update(num_frames=9, height=16, width=16, steps=3, fps=12)
    with torch.no_grad():  # a changed weight must travel (as after fine-tuning or merging a LoRA)
        pipe.backbone.model.proj_out.bias.add_(0.5)
    out = pipe.save_pretrained(tmp_path / "saved")
    again = VideoPipeline.from_pretrained(out)
    pipe.autocast = again.autocast = False
    assert again.defaults == pipe.defaults and again.sampler_options == pipe.sampler_options
    a = pipe(PROMPT, seed=1).frames
    b = again(PROMPT, seed=1).frames
    assert np.array_equal(a, b)
    ref = WanPipeline.from_pretrained(out, dtype=torch.float32)
    assert torch.equal(ref.transformer.proj_out.bias, pipe.backbone.model.proj_out.bias)


def test_unsupported_diffusers_folder_is_refused(tmp_path):
    bad = tmp_path / "flux"
    bad.mkdir()
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(
        ValueError,
        match=r"flux: diffusers pipeline 'FluxPipeline' is not a supported video.*CogVideoXPipeline",
    ):
        VideoPipeline.from_pretrained(bad)
    (bad / "model_index.json").write_text(json.dumps({"not": "diffusers"}))
    with pytest.raises(ValueError, match=r"model_index.json: no _class_name"):
        VideoPipeline.from_diffusers(bad)
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    from mediadiff.pipelines.audio import AudioPipeline

    with pytest.raises(
        ValueError, match=r"'CogVideoXPipeline' \(a video pipeline\) is not a supported audio"
    ):
        AudioPipeline.from_diffusers(bad)


# ----------------------------------------------------------------------------------------- schedulers

SCHEDULERS = {
    # id -> (diffusers scheduler class name, config, steps)
    "ddim-leading-offset": ("DDIMScheduler", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1, "clip_sample": False}, 10),
    "cogvideox-ddim": ("CogVideoXDDIMScheduler", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "snr_shift_scale": 3.0, "timestep_spacing": "trailing", "clip_sample": False}, 10),
    "euler-trailing": ("EulerDiscreteScheduler", {"beta_schedule": "scaled_linear", "timestep_spacing": "trailing"}, 10),
    "dpmpp-2m-vp": ("DPMSolverMultistepScheduler", {"beta_schedule": "scaled_linear", "timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 10),
    "dpmpp-2m-flow": ("DPMSolverMultistepScheduler", {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "flow_prediction"}, 10),
    "unipc-vp": ("UniPCMultistepScheduler", {"beta_schedule": "scaled_linear", "timestep_spacing": "trailing"}, 10),
    "unipc-flow": ("UniPCMultistepScheduler", {"use_flow_sigmas": True, "flow_shift": 5.0, "prediction_type": "flow_prediction"}, 10),
    "flow-match": ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, 10),
}  # fmt: skip
SCHEDULER_TOL = (
    5e-5  # max-abs on unit-variance noise; measured 1.7e-7 to 8.4e-6: diffusers keeps float32 sigma
)
# tables, and Euler / UniPC on the VP table step from s = 14.6 there; a wrong coefficient or start gives > 5e-4


@pytest.mark.parametrize("case", list(SCHEDULERS))
def test_scheduler_settings_reproduce_the_diffusers_loop(case):
    """scheduler_settings(config) + sample() against the scheduler's own set_timesteps / step loop, with a
    model that depends on x and on the timestep it is handed (int64 where diffusers casts it)."""
    import diffusers as d

    from mediadiff.diffusion import sample
    from mediadiff.diffusion.interop import scheduler_settings
    from mediadiff.nn.diffusers import DiffusersBackbone

    from .test_parity import make_noise, run_diffusers

    name, config, steps = SCHEDULERS[case]
    scheduler = getattr(d, name)(**config)
    settings = scheduler_settings(dict(scheduler.config, _class_name=name))
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5

    def f(x, timestep):  # in diffusers' units
        t = torch.as_tensor(timestep, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1))) / 1000
        return torch.tanh(torch.einsum("ij,bj...->bi...", w, x)) * (1 + t) + 0.3 * x

    clock = DiffusersBackbone(
        torch.nn.Identity(), context_dim=1, in_channels=1, integer_timesteps=settings.integer_timesteps
    )  # only its t -> timestep conversion
    noise = make_noise(0)  # [2 4 3 5] float64
    if hasattr(scheduler, "scale_model_input"):
        ref = run_diffusers(scheduler, f, noise, steps)
    else:  # flow matching: no input scaling
        scheduler.set_timesteps(steps)
        ref = noise.clone()
        for t in scheduler.timesteps:
            ref = scheduler.step(f(ref, t), t, ref).prev_sample
    ours = sample(
        lambda x, t: f(x, clock.timestep(t).double()),
        noise,
        settings.schedule,
        settings.prediction,
        settings.sampler,
        steps,
        **settings.sampler_options,
    )
    err = (ref - ours).abs().max().item()
    print(f"{case}: max-abs {err:.2e}")
    assert err < SCHEDULER_TOL, f"{case}: max-abs {err:.2e}"


def test_cogvideox_dpm_scheduler_is_dpmpp_2m_sde(monkeypatch):
    """CogVideoXDPMScheduler (CogVideoX-5b's) is SDE-DPM-Solver++(2M): with the fresh noise switched off on
    both sides (its randn_tensor -> zeros, our s_noise 0) the deterministic parts agree step for step.
    With noise on, the two draw different (equally distributed) noise: not compared."""
    import diffusers.schedulers.scheduling_dpm_cogvideox as cog_dpm
    from diffusers import CogVideoXDPMScheduler

    from mediadiff.diffusion import sample
    from mediadiff.diffusion.interop import scheduler_settings

    from .test_parity import make_noise

    monkeypatch.setattr(
        cog_dpm, "randn_tensor", lambda shape, **kw: torch.zeros(shape, dtype=kw.get("dtype"))
    )
    config = {
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
    }
    scheduler = CogVideoXDPMScheduler(beta_schedule="scaled_linear", clip_sample=False, **config)
    settings = scheduler_settings(dict(scheduler.config, _class_name="CogVideoXDPMScheduler"))
    assert settings.sampler == "dpmpp_2m_sde" and settings.schedule.snr_shift_scale == 3.0
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5

    def f(x, timestep):
        return torch.tanh(torch.einsum("ij,bj...->bi...", w, x)) * (1 + timestep / 1000) + 0.3 * x

    steps, noise = 10, make_noise(0)  # [2 4 3 5] float64
    scheduler.set_timesteps(steps)
    x, old = noise.clone(), None
    for i, t in enumerate(scheduler.timesteps):
        back = scheduler.timesteps[i - 1] if i > 0 else None
        x, old = scheduler.step(f(x, float(t)), old, t, back, x, return_dict=False)
    ours = sample(
        lambda x, t: f(x, float(t[0]) * 1000),
        noise,
        settings.schedule,
        settings.prediction,
        settings.sampler,
        steps,
        s_noise=0.0,
        **settings.sampler_options,
    )
    err = (x - ours).abs().max().item()
    print(f"cogvideox-dpm (noise off): max-abs {err:.2e}")
    assert err < SCHEDULER_TOL, f"max-abs {err:.2e}"


def test_unsupported_schedulers_are_named():
    from mediadiff.diffusion.interop import scheduler_settings

    with pytest.raises(
        ValueError, match=r"diffusers scheduler 'LCMScheduler' is not supported; supported: \["
    ):
        scheduler_settings({"_class_name": "LCMScheduler"})
    with pytest.raises(ValueError, match=r"FlowMatchEulerDiscreteScheduler: use_dynamic_shifting=True"):
        scheduler_settings({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True})
    with pytest.raises(
        ValueError, match=r"UniPCMultistepScheduler: timestep_spacing 'linspace' of a multistep"
    ):
        scheduler_settings({"_class_name": "UniPCMultistepScheduler"})
