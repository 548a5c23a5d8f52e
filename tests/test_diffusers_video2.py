"""LTX-Video and text-to-video SD from diffusers folders: parity with diffusers' own pipelines.

Each family: tiny random components built from configs, saved with ``pipe.save_pretrained`` as a
diffusers folder, then diffusers' pipeline and mediadiff run on that folder with the same initial
latents, sampler and steps. fp32 on the CPU; tolerances are stated next to each test with what was
measured (both sides do the same float32 arithmetic in a different order: ~1e-7 relative per step).
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("diffusers")

from mediadiff.diffusion import FlowSchedule, VPSchedule, sample
from mediadiff.diffusion.guidance import cfg
from mediadiff.diffusion.interop import scheduler_settings
from mediadiff.pipelines import VideoPipeline
from mediadiff.video.diffusers_ltx import LTXAutoencoder, LTXBackbone, LTXGrid, calculate_shift
from mediadiff.video.diffusers_sdvideo import SDVideoAutoencoder, SDVideoBackbone

from .diffusers_tiny import PROMPT, clip_tokenizer, rel_err, t5_tokenizer, tiny_clip_text, tiny_t5

LTX_SIZE = {"num_frames": 9, "height": 32, "width": 32}  # latent 3 x 8 x 8: 192 tokens
SD_SIZE = {"num_frames": 3, "height": 16, "width": 16}  # latent 3 x 8 x 8
LTX_TEXT = 128  # LTXPipeline's max_sequence_length, which components() uses
TOL = 1e-5  # relative to max |reference|; see the module docstring


# ---------------------------------------------------------------------------------- tiny parts


def build_ltx(folder, timestep_conditioning: bool = False) -> None:
    """Tiny LTXPipeline (1-layer transformer, 4x spatial / 4x temporal VAE, non-trivial latent stats,
    dynamic shifting) saved to ``folder``."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    tokenizer = t5_tokenizer()
    text_encoder = tiny_t5(len(tokenizer), d_model=16)
    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=16,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        timestep_conditioning=timestep_conditioning,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    with torch.no_grad():  # latent statistics that are not the identity, so normalisation is tested
        vae.latents_mean.copy_(0.1 * torch.randn(8))
        vae.latents_std.copy_(0.5 + torch.rand(8))
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_image_seq_len=64, max_image_seq_len=512, base_shift=0.5, max_shift=1.5
    )
    pipe = LTXPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    pipe.save_pretrained(folder)


def build_sdvideo(folder, scheduler: str = "ddim") -> None:
    """Tiny TextToVideoSDPipeline (2-level UNet3D, 2x VAE, CLIP) with ModelScope's DDIM config
    (scaled_linear, steps_offset 1, leading) or DPM-Solver++ (trailing) saved to ``folder``."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        TextToVideoSDPipeline,
        UNet3DConditionModel,
    )

    tokenizer = clip_tokenizer()
    text_encoder = tiny_clip_text(len(tokenizer), hidden=16)
    torch.manual_seed(0)
    unet = UNet3DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        sample_size=16,
        norm_num_groups=4,
        scaling_factor=0.18215,
    )
    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    if scheduler == "ddim":
        sched = DDIMScheduler(**betas, clip_sample=False, set_alpha_to_one=True, steps_offset=1)
    else:
        sched = DPMSolverMultistepScheduler(**betas, timestep_spacing="trailing")
    pipe = TextToVideoSDPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sched
    )
    pipe.save_pretrained(folder)


@pytest.fixture(scope="module")
def ltx_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ltx")
    build_ltx(folder)
    return folder


@pytest.fixture(scope="module")
def ltx_pipe(ltx_folder):
    from diffusers import LTXPipeline

    pipe = LTXPipeline.from_pretrained(ltx_folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module", params=["ddim", "dpm"])
def sd_folder(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"sdvideo_{request.param}")
    build_sdvideo(folder, request.param)
    return folder


def load_sd_pipe(folder):
    from diffusers import TextToVideoSDPipeline

    pipe = TextToVideoSDPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------- LTX-Video


def ltx_latent(pipe) -> tuple[int, ...]:
    rt, rs = pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio
    f, h, w = LTX_SIZE["num_frames"], LTX_SIZE["height"], LTX_SIZE["width"]
    return (pipe.transformer.config.in_channels, 1 + (f - 1) // rt, h // rs, w // rs)


def test_ltx_backbone_is_the_transformer_call(ltx_pipe):
    """One call of the adapter equals the transformer called as LTXPipeline calls it (packed tokens,
    timestep sigma * 1000, T5 mask, RoPE scale (4 / 25, 4, 4)): bit-identical."""
    pipe = ltx_pipe
    backbone = LTXBackbone(pipe.transformer, temporal_ratio=4, spatial_ratio=4)
    c, f, h, w = ltx_latent(pipe)
    x = torch.randn(2, c, f, h, w, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.7, 0.2])
    emb, mask, _, _ = pipe.encode_prompt(
        [PROMPT, "blue square"], do_classifier_free_guidance=False, max_sequence_length=LTX_TEXT
    )
    with torch.no_grad():
        ref = pipe.transformer(
            hidden_states=pipe._pack_latents(x, 1, 1),
            encoder_hidden_states=emb,
            timestep=t * 1000,
            encoder_attention_mask=mask,
            num_frames=f,
            height=h,
            width=w,
            rope_interpolation_scale=(4 / 25, 4, 4),
            return_dict=False,
        )[0]
        ours = backbone(x, t, emb, mask)
    assert torch.equal(pipe._unpack_latents(ref, f, h, w, 1, 1), ours)
    assert backbone.config.context_dim == emb.shape[-1]


def test_ltx_shift_is_the_schedulers_time_shift(ltx_pipe):
    """FlowSchedule(shift=exp(mu)) on its linspace grid gives the sigmas LTXPipeline sets (float32 ulps)."""
    pipe, steps = ltx_pipe, 6
    _, f, h, w = ltx_latent(pipe)
    sc = pipe.scheduler.config
    mu = calculate_shift(f * h * w, sc.base_image_seq_len, sc.max_image_seq_len, sc.base_shift, sc.max_shift)
    pipe.scheduler.set_timesteps(sigmas=[1 - i / steps for i in range(steps)], mu=mu)
    ours = [lv.t for lv in FlowSchedule(shift=math.exp(mu)).grid(steps)]
    assert ours == pytest.approx(pipe.scheduler.sigmas.tolist(), abs=1e-7)


def test_ltx_sampling_matches_ltxpipeline(ltx_pipe):
    """Euler on FlowSchedule(exp(mu)) with CFG 3 through the adapters == LTXPipeline (same T5 tokens,
    same initial latents, 4 steps): latents and decoded frames. Measured: latents max-abs 1.2e-6
    (2.5e-7 relative), frames 9.2e-7; tolerance 1e-5 relative (float32 rounding in a different order)."""
    pipe, steps = ltx_pipe, 4
    c, f, h, w = ltx_latent(pipe)
    backbone = LTXBackbone(pipe.transformer, temporal_ratio=4, spatial_ratio=4)
    autoencoder = LTXAutoencoder(pipe.vae)
    assert autoencoder.latent_shape((1, 3, *LTX_SIZE.values()))[1:] == (c, f, h, w)
    pe, pm, ne, nm = pipe.encode_prompt(PROMPT, "", max_sequence_length=LTX_TEXT)
    noise = torch.randn(1, c, f, h, w, generator=torch.Generator().manual_seed(0))
    kwargs = dict(
        prompt_embeds=pe,
        prompt_attention_mask=pm,
        negative_prompt_embeds=ne,
        negative_prompt_attention_mask=nm,
        num_inference_steps=steps,
        guidance_scale=3.0,
        latents=pipe._pack_latents(noise, 1, 1),
        **LTX_SIZE,
    )
    ref = pipe(**kwargs, output_type="latent").frames
    ref = pipe._unpack_latents(ref, f, h, w, 1, 1)  # [b c f h w]
    ref_frames = pipe(**kwargs, output_type="pt").frames  # [b f 3 h w] in [0, 1]

    sc = pipe.scheduler.config
    mu = calculate_shift(f * h * w, sc.base_image_seq_len, sc.max_image_seq_len, sc.base_shift, sc.max_shift)
    guided = cfg(
        backbone, {"context": pe, "context_mask": pm}, {"context": ne, "context_mask": nm}, scale=3.0
    )
    z = sample(guided, noise, FlowSchedule(shift=math.exp(mu)), "flow", "euler", steps)
    with torch.no_grad():
        frames = (autoencoder.decode(z) / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)  # [b f 3 h w]
    assert rel_err(z, ref)[1] < 1e-5
    assert rel_err(frames, ref_frames)[1] < 1e-5


def test_ltx_autoencoder_normalises_as_the_pipeline(ltx_pipe):
    """encode = LTXPipeline's _normalize_latents of the posterior mean; decode inverts it."""
    pipe = ltx_pipe
    ae = LTXAutoencoder(pipe.vae)
    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        z = ae.encode(video)
        raw = pipe.vae.encode(video).latent_dist.mode()
        ref = pipe._normalize_latents(
            raw, pipe.vae.latents_mean, pipe.vae.latents_std, pipe.vae.config.scaling_factor
        )
        assert torch.allclose(z, ref, atol=1e-6)
        assert torch.allclose(ae.decode(z), pipe.vae.decode(raw, None, return_dict=False)[0], atol=1e-5)
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        ae.latent_shape((1, 3, 8, 32, 32))


# ---------------------------------------------------------------------------------- TextToVideoSD


def test_sdvideo_sampling_matches_pipeline(sd_folder):
    """DDIM (leading + steps_offset 1, set_alpha_to_one) or DPM-Solver++(2M) (trailing) with CFG 3 on
    VPSchedule through the adapters == TextToVideoSDPipeline, 4 steps, same CLIP tokens and latents:
    latents and decoded frames. Measured: latents <= 2.4e-7 relative (max-abs 1.5e-5 on latents up to 60:
    eps-prediction x0 of a random UNet), frames <= 3.3e-7; tolerance 1e-5 relative."""
    pipe, steps = load_sd_pipe(sd_folder), 4
    backbone = SDVideoBackbone(pipe.unet)
    autoencoder = SDVideoAutoencoder(pipe.vae)
    latent = autoencoder.latent_shape((1, 3, *SD_SIZE.values()))[1:]
    pe, ne = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="")
    noise = torch.randn(1, *latent, generator=torch.Generator().manual_seed(0))
    kwargs = dict(
        prompt_embeds=pe,
        negative_prompt_embeds=ne,
        num_inference_steps=steps,
        guidance_scale=3.0,
        latents=noise,
        **SD_SIZE,
    )
    ref = pipe(**kwargs, output_type="latent").frames
    ref_frames = pipe(**kwargs, output_type="pt").frames  # [b f 3 h w] in [0, 1]

    settings = scheduler_settings(dict(pipe.scheduler.config, _class_name=type(pipe.scheduler).__name__))
    assert isinstance(settings.schedule, VPSchedule)
    guided = cfg(backbone, {"context": pe}, {"context": ne}, scale=3.0)
    z = sample(
        guided,
        noise,
        settings.schedule,
        settings.prediction,
        settings.sampler,
        steps,
        **settings.sampler_options,
    )
    with torch.no_grad():
        frames = (autoencoder.decode(z) / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)  # [b f 3 h w]
    assert rel_err(z, ref)[1] < 1e-5, rel_err(z, ref)
    assert rel_err(frames, ref_frames)[1] < 1e-5


# ---------------------------------------------------------------------------------- end to end


def seed_noise(latent: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The initial latents DiffusionPipeline.sample_latents draws for ``seed`` (a CPU generator per item)."""
    return torch.randn(latent, generator=torch.Generator().manual_seed(seed))[None]  # [1 c f h w]


def ours_latents_and_frames(
    pipe: VideoPipeline, prompt: str, **settings
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pipe``'s sampled latents for seed 0 and their decoded frames ``[b f 3 h w]`` in [0, 1] (float)."""
    resolved = pipe.resolve(**settings)
    _, seeds, cond, uncond = pipe.prepare(prompt, None, 0, 1)
    with torch.inference_mode():
        z = pipe.sample_latents(resolved, cond, uncond, seeds)  # [1 c f h w]
        frames = (pipe.autoencoder.decode(z) / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)  # [1 f 3 h w]
    return z, frames


@pytest.mark.parametrize(
    "shift_terminal,time_shift_type", [(None, "exponential"), (0.1, "exponential"), (0.1, "linear")]
)
def test_ltx_grid_is_ltxpipelines_sigmas(ltx_pipe, shift_terminal, time_shift_type):
    """LTXGrid(steps) == the sigmas LTXPipeline sets (linspace, exp(mu) shift, terminal stretch), float32 ulps."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sc = dict(ltx_pipe.scheduler.config, shift_terminal=shift_terminal, time_shift_type=time_shift_type)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(sc)
    seq_len, steps = 3 * 8 * 8, 7
    mu = calculate_shift(
        seq_len, sc["base_image_seq_len"], sc["max_image_seq_len"], sc["base_shift"], sc["max_shift"]
    )
    scheduler.set_timesteps(sigmas=[1 - i / steps for i in range(steps)], mu=mu)
    grid = LTXGrid(
        sc["base_image_seq_len"],
        sc["max_image_seq_len"],
        sc["base_shift"],
        sc["max_shift"],
        shift_terminal,
        time_shift_type,
    )
    ours = grid.for_latent((8, 3, 8, 8))(steps)
    assert ours == pytest.approx(scheduler.sigmas[:-1].tolist(), abs=2e-7)
    with pytest.raises(ValueError, match="for_latent"):
        grid(steps)


def test_ltx_from_diffusers_matches_ltxpipeline(ltx_folder, ltx_pipe):
    """VideoPipeline.from_diffusers(LTX folder) == LTXPipeline on the same folder: same prompt (T5 over 128
    tokens, no mask in T5, the mask in the transformer), same seed-0 latents, Euler on LTXPipeline's
    dynamically shifted sigmas at the size asked for, CFG 3, 4 steps. Compared: the text tokens, the
    sampled latents and the decoded frames. Measured: tokens 7.5e-7 relative, latents 3.5e-7 relative,
    frames 9.2e-7; tolerance 1e-5 relative (float32, same operations in a different order)."""
    pipe = VideoPipeline.from_diffusers(ltx_folder)
    assert isinstance(pipe.backbone, LTXBackbone) and pipe.prediction == "flow"
    assert pipe.defaults["sampler"] == "euler" and pipe.defaults["num_frames"] == 161
    ref_pipe, steps = ltx_pipe, 4
    c, f, h, w = ltx_latent(ref_pipe)

    pe, pm, _, _ = ref_pipe.encode_prompt(
        PROMPT, do_classifier_free_guidance=False, max_sequence_length=LTX_TEXT
    )
    cond = pipe.encode([PROMPT])
    n = int(pm.sum())
    assert cond["context_mask"][0].sum() == n and rel_err(cond["context"][0, :n], pe[0, :n])[1] < 1e-6

    z, frames = ours_latents_and_frames(pipe, PROMPT, steps=steps, guidance_scale=3.0, **LTX_SIZE)
    noise = seed_noise((c, f, h, w))
    kwargs = dict(
        prompt=PROMPT,
        num_inference_steps=steps,
        guidance_scale=3.0,
        latents=ref_pipe._pack_latents(noise, 1, 1),
        max_sequence_length=LTX_TEXT,
        **LTX_SIZE,
    )
    ref = ref_pipe._unpack_latents(
        ref_pipe(**kwargs, output_type="latent").frames, f, h, w, 1, 1
    )  # [1 c f h w]
    ref_frames = ref_pipe(**kwargs, output_type="pt").frames  # [1 f 3 h w] in [0, 1]
    assert rel_err(z, ref)[1] < TOL, rel_err(z, ref)
    assert rel_err(frames, ref_frames)[1] < TOL, rel_err(frames, ref_frames)


def test_sdvideo_from_diffusers_matches_pipeline(sd_folder):
    """VideoPipeline.from_diffusers(TextToVideoSD folder) == TextToVideoSDPipeline on the same folder:
    same prompt (CLIP, 77 tokens, no mask), same seed-0 latents, the scheduler's own sampler and grid
    (DDIM leading + steps_offset 1, or DPM-Solver++(2M) trailing), CFG 3, 4 steps. Compared: text
    tokens, latents, decoded frames. Measured: tokens bit-identical, latents <= 3.9e-7 relative,
    frames <= 4.8e-7; tolerance 1e-5 relative."""
    pipe = VideoPipeline.from_diffusers(sd_folder)
    assert isinstance(pipe.backbone, SDVideoBackbone) and pipe.prediction == "eps"
    ref_pipe, steps = load_sd_pipe(sd_folder), 4
    pe, _ = ref_pipe.encode_prompt(PROMPT, "cpu", 1, False)
    assert rel_err(pipe.encode([PROMPT])["context"], pe)[1] < 1e-6

    z, frames = ours_latents_and_frames(pipe, PROMPT, steps=steps, guidance_scale=3.0, **SD_SIZE)
    noise = seed_noise(tuple(z.shape[1:]))
    kwargs = dict(prompt=PROMPT, num_inference_steps=steps, guidance_scale=3.0, latents=noise, **SD_SIZE)
    ref = ref_pipe(**kwargs, output_type="latent").frames
    ref_frames = ref_pipe(**kwargs, output_type="pt").frames
    assert rel_err(z, ref)[1] < TOL, rel_err(z, ref)
    assert rel_err(frames, ref_frames)[1] < TOL, rel_err(frames, ref_frames)


def test_sdvideo_set_alpha_to_one_false_is_one_renoising_step(tmp_path_factory):
    """ModelScope's own DDIM config has ``set_alpha_to_one=False``: diffusers' last step then ends at
    ``alpha_bar[0]`` (timestep 0, noise 0.029) instead of the clean level, which our grids always end at
    (the difference is that noise, ~3e-2, and is stated in the pipeline's info). Shown exactly: diffusers'
    result is ours re-noised to timestep 0 with our last estimates, ``sqrt(ab0) x0 + sqrt(1 - ab0) eps``.
    Measured 2.9e-7 relative; tolerance 1e-5."""
    from diffusers import DDIMScheduler

    folder = tmp_path_factory.mktemp("sdvideo_alpha")
    build_sdvideo(folder, "ddim")
    ref_pipe, steps = load_sd_pipe(folder), 4
    ref_pipe.scheduler = DDIMScheduler.from_config(ref_pipe.scheduler.config, set_alpha_to_one=False)
    pe, ne = ref_pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="")
    noise = seed_noise((4, 3, 8, 8))
    ref = ref_pipe(
        prompt_embeds=pe,
        negative_prompt_embeds=ne,
        num_inference_steps=steps,
        guidance_scale=3.0,
        latents=noise,
        output_type="latent",
        **SD_SIZE,
    ).frames

    pipe = VideoPipeline.from_diffusers(folder)
    guided = cfg(pipe.backbone, {"context": pe}, {"context": ne}, scale=3.0)
    seen: list[dict] = []
    z = sample(
        guided,
        noise,
        pipe.schedule,
        "eps",
        "ddim",
        steps,
        callback=seen.append,
        **pipe.sampler_options,
    )
    last = seen[-1]["level"]  # timestep 1: the last model level
    x_in, x0 = seen[-2]["x"], seen[-1]["denoised"]
    assert torch.equal(z, x0)  # ours ends at the clean level: the x0 estimate
    eps = (x_in - last.alpha * x0) / last.sigma
    ab0 = float(pipe.schedule.alphas_cumprod[0])
    renoised = math.sqrt(ab0) * x0 + math.sqrt(1 - ab0) * eps
    assert rel_err(renoised, ref)[1] < TOL, rel_err(renoised, ref)
    assert rel_err(z, ref)[0] > 1e-2  # the difference is real (measured 3.6e-2 max-abs), and it is this step


def test_ltx_generate_and_command(ltx_folder, ltx_pipe, tmp_path, capsys):
    """``VideoPipeline.generate`` on the LTX folder gives LTXPipeline's frames as uint8 (at most one
    level apart: rounding), and ``mediadiff generate video PROMPT --model FOLDER`` writes a clip of the
    asked size with the folder's sampler (Euler)."""
    import numpy as np

    from mediadiff.cli import main
    from mediadiff.video.io import read_video

    pipe = VideoPipeline.from_pretrained(ltx_folder)  # a model_index.json folder goes to from_diffusers
    pipe.autocast = False  # float32 as LTXPipeline runs here (auto would take bf16 on a CPU with native bf16)
    out = pipe.generate(PROMPT, seed=3, steps=2, guidance_scale=3.0, **LTX_SIZE)
    c, f, h, w = ltx_latent(ltx_pipe)
    ref = ltx_pipe(
        prompt=PROMPT,
        num_inference_steps=2,
        guidance_scale=3.0,
        latents=ltx_pipe._pack_latents(seed_noise((c, f, h, w), seed=3), 1, 1),
        max_sequence_length=LTX_TEXT,
        output_type="np",
        **LTX_SIZE,
    ).frames  # [1 f h w 3] in [0, 1]
    assert np.abs(out.frames.astype(np.float64) - ref * 255).max() <= 1.0

    clip = tmp_path / "ltx.mp4"
    argv = ["generate", "video", PROMPT, "--model", str(ltx_folder), "-o", str(clip)]
    argv += ["--steps", "2", "--num-frames", "9", "--size", "32x32", "--seed", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    frames = read_video(clip)  # [f h w 3] uint8, read back from the file
    assert frames.shape == (9, 32, 32, 3) and frames.dtype == np.uint8
    assert "euler 2 steps" in capsys.readouterr().out


def test_ltx_timestep_conditioned_vae(tmp_path_factory):
    """A VAE with ``timestep_conditioning`` (LTX-Video 0.9.1 on) decodes at LTXPipeline's default
    ``decode_timestep`` 0 with no noise blended in: from_diffusers' frames == LTXPipeline's. Measured
    6e-7 relative; tolerance 1e-5. (LTXPipeline's optional decode noise, ``decode_noise_scale`` > 0,
    draws fresh noise and is not reproduced.)"""
    from diffusers import LTXPipeline

    folder = tmp_path_factory.mktemp("ltx_tc")
    build_ltx(folder, timestep_conditioning=True)
    ref_pipe = LTXPipeline.from_pretrained(folder)
    ref_pipe.set_progress_bar_config(disable=True)
    assert ref_pipe.vae.config.timestep_conditioning
    pipe = VideoPipeline.from_diffusers(folder)
    _, frames = ours_latents_and_frames(pipe, PROMPT, steps=2, guidance_scale=3.0, **LTX_SIZE)
    c, f, h, w = ltx_latent(ref_pipe)
    ref_frames = ref_pipe(
        prompt=PROMPT,
        num_inference_steps=2,
        guidance_scale=3.0,
        latents=ref_pipe._pack_latents(seed_noise((c, f, h, w)), 1, 1),
        max_sequence_length=LTX_TEXT,
        output_type="pt",
        **LTX_SIZE,
    ).frames  # [1 f 3 h w] in [0, 1]
    assert rel_err(frames, ref_frames)[1] < TOL, rel_err(frames, ref_frames)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"_class_name": "DDIMScheduler"}, "only FlowMatchEulerDiscreteScheduler"),
        ({"use_dynamic_shifting": False}, "use_dynamic_shifting=True"),
        ({"stochastic_sampling": True}, "stochastic_sampling=True is not supported"),
    ],
)
def test_ltx_unsupported_scheduler_is_refused(ltx_folder, tmp_path, change, message):
    """A scheduler LTXPipeline's grid cannot be reproduced from is one clear error naming the folder."""
    import json
    import shutil

    folder = tmp_path / "ltx"
    shutil.copytree(ltx_folder, folder)
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ValueError, match=message) as err:
        VideoPipeline.from_diffusers(folder)
    assert str(folder) in str(err.value)
