"""Numerical parity with the diffusers schedulers that implement the same methods.

Same model function, same initial noise, same timestep grid, float64 where the scheduler allows
(diffusers keeps its sigma tables in float32, so agreement is ~1e-6, not 1e-12).
"""

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from mediadiff.diffusion import FlowSchedule, VPSchedule, sample

from .helpers import near_gaussian_model

TOL = 1e-4
BETAS = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "cosine": (None, None)}
PREDS = {"eps": "epsilon", "v": "v_prediction"}
VE_SCHEDULERS = (EulerDiscreteScheduler, HeunDiscreteScheduler, EulerAncestralDiscreteScheduler)


def diffusers_kwargs(beta: str, pred: str, **kw) -> dict:
    b0, b1 = BETAS[beta]
    name = "squaredcos_cap_v2" if beta == "cosine" else beta
    out = {"beta_schedule": name, "prediction_type": PREDS[pred], **kw}
    if b0 is not None:
        out.update(beta_start=b0, beta_end=b1)
    return out


def run_diffusers(scheduler, f, noise, steps, generator=None, **step_kw):
    """The standard diffusers loop; VE-space schedulers start from the same VP noise as ours."""
    scheduler.set_timesteps(steps)
    x = noise.clone()
    if isinstance(scheduler, VE_SCHEDULERS):
        x = x * (scheduler.sigmas[0].double() ** 2 + 1) ** 0.5
    for t in scheduler.timesteps:
        out = f(scheduler.scale_model_input(x, t), t)
        if generator is not None:
            step_kw["generator"] = generator
        x = scheduler.step(out, t, x, **step_kw).prev_sample
    return x


def run_ours(schedule, f, noise, prediction, sampler, steps, **kw):
    return sample(lambda x, t: f(x, t * 1000), noise, schedule, prediction, sampler, steps, **kw)


@pytest.fixture
def noise():
    return torch.randn(2, 4, 3, 5, dtype=torch.float64)


CASES = [
    # (diffusers scheduler, extra config, our sampler, our options, spacings, steps)
    (
        DDIMScheduler,
        {"clip_sample": False, "set_alpha_to_one": True},
        "ddim",
        {},
        ["leading", "trailing"],
        20,
    ),
    (EulerDiscreteScheduler, {}, "euler", {}, ["leading", "trailing"], 20),
    (HeunDiscreteScheduler, {}, "heun", {}, ["leading", "trailing"], 10),
    (DPMSolverMultistepScheduler, {}, "dpmpp_2m", {}, ["trailing", "leading"], 20),
    (UniPCMultistepScheduler, {}, "unipc", {"order": 2}, ["trailing"], 20),
    (UniPCMultistepScheduler, {"solver_order": 3}, "unipc", {"order": 3}, ["trailing"], 20),
]


@pytest.mark.parametrize("beta", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("pred", ["eps", "v"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[2]}-{c[1]}")
def test_deterministic_parity(case, beta, pred, noise):
    cls, extra, sampler, options, spacings, steps = case
    if beta == "cosine" and cls in (DPMSolverMultistepScheduler,) and "leading" in spacings:
        spacings = ["trailing"]
    schedule = VPSchedule(beta)
    f = near_gaussian_model(schedule, pred)
    for spacing in spacings:
        if beta == "cosine" and spacing == "trailing" and (pred == "eps" or cls in VE_SCHEDULERS):
            # the cosine grid's last timestep has s = 2e4; diffusers' float32 sigma arithmetic
            # loses precision there (see test_heun_matches_float64_hand_computation)
            continue
        if cls is DPMSolverMultistepScheduler and spacing == "leading":
            continue  # diffusers' multistep "leading" grid is steps+1-based, not Lin et al.'s
        scheduler = cls(**diffusers_kwargs(beta, pred, timestep_spacing=spacing, **extra))
        ref = run_diffusers(scheduler, f, noise, steps)
        ours = run_ours(schedule, f, noise, pred, sampler, steps, spacing=spacing, **options)
        err = (ref - ours).abs().max().item()
        assert err < TOL, f"{sampler} {beta} {pred} {spacing}: max-abs {err:.2e}"


@pytest.mark.parametrize("pred", ["eps", "v"])
def test_unipc_bh1_parity(pred, noise):
    """bh1 up to the last step: diffusers' bh1 turns the final step to sigma = 0 into NaN
    (``alpha_t * B_h * 0`` with ``B_h = -inf``); ours takes the exact first-order limit there."""
    schedule = VPSchedule("scaled_linear")
    f = near_gaussian_model(schedule, pred)
    scheduler = UniPCMultistepScheduler(
        **diffusers_kwargs("scaled_linear", pred, timestep_spacing="trailing", solver_type="bh1")
    )
    scheduler.set_timesteps(20)
    x = noise.clone()
    for t in scheduler.timesteps[:-1]:
        x = scheduler.step(f(x, t), t, x).prev_sample
    states = []
    final = run_ours(
        schedule, f, noise, pred, "unipc", 20, variant="bh1", callback=lambda d: states.append(d["x"])
    )
    assert (x - states[-2]).abs().max().item() < TOL
    assert torch.isfinite(final).all()


@pytest.mark.parametrize("pred", ["eps", "v"])
@pytest.mark.parametrize(
    "sampler,cls", [("euler", EulerDiscreteScheduler), ("dpmpp_2m", DPMSolverMultistepScheduler)]
)
def test_karras_parity(sampler, cls, pred, noise):
    """Karras noise levels mapped back to (fractional) timesteps by log-sigma interpolation."""
    schedule = VPSchedule("scaled_linear")
    f = near_gaussian_model(schedule, pred)
    scheduler = cls(**diffusers_kwargs("scaled_linear", pred, use_karras_sigmas=True))
    if cls is DPMSolverMultistepScheduler:
        # diffusers rounds the model's timesteps on this grid; give ours the same levels
        scheduler.set_timesteps(15)
        levels = schedule.grid(15, "karras")
        levels = [lv._replace(t=float(t) / 1000) for lv, t in zip(levels[:-1], scheduler.timesteps)] + levels[
            -1:
        ]
        ours = run_ours(schedule, f, noise, pred, sampler, 15, levels=levels)
    else:
        ours = run_ours(schedule, f, noise, pred, sampler, 15, spacing="karras")
    ref = run_diffusers(scheduler, f, noise, 15)
    assert (ref - ours).abs().max().item() < TOL


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_zero_terminal_snr_ddim_parity(spacing, noise):
    """Zero terminal SNR: the first level is pure noise (alpha = 0), v prediction."""
    schedule = VPSchedule("scaled_linear", rescale_zero_terminal_snr=True)
    f = near_gaussian_model(schedule, "v")
    scheduler = DDIMScheduler(
        **diffusers_kwargs("scaled_linear", "v", timestep_spacing=spacing, clip_sample=False),
        rescale_betas_zero_snr=True,
    )
    ref = run_diffusers(scheduler, f, noise, 20)
    ours = run_ours(schedule, f, noise, "v", "ddim", 20, spacing=spacing)
    assert (ref - ours).abs().max().item() < TOL


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_match_euler_parity(shift, noise):
    """FlowMatchEulerDiscreteScheduler with shift: diffusers shifts the sigmas it is given, so
    handing it the unshifted uniform grid gives exactly our FlowSchedule(shift).grid(steps)."""
    schedule = FlowSchedule(shift=shift)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.5

    def f(x, timestep):  # a velocity model in diffusers' convention (timestep = 1000 t)
        t = torch.as_tensor(timestep, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1))) / 1000
        return torch.tanh(torch.einsum("ij,bj...->bi...", w, x)) * (1 + t) + 0.3 * x

    steps = 20
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=np.linspace(1, 0, steps + 1)[:-1])
    ours_levels = schedule.grid(steps)
    assert np.allclose(scheduler.sigmas.numpy(), [lv.t for lv in ours_levels], atol=1e-6)
    x = noise.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(f(x, t), t, x).prev_sample
    ours = run_ours(schedule, f, noise, "flow", "euler", steps)
    assert (x - ours).abs().max().item() < TOL

    # diffusers' own default grid, given to us as explicit timesteps
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    x = noise.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(f(x, t), t, x).prev_sample
    ours = run_ours(schedule, f, noise, "flow", "euler", steps, timesteps=scheduler.sigmas[:-1].tolist())
    assert (x - ours).abs().max().item() < TOL


@pytest.mark.parametrize("pred", ["eps", "v"])
def test_stochastic_parity_same_generator(pred, noise):
    """Ancestral samplers draw their noise in the same order as diffusers: same seed, same sample."""
    schedule = VPSchedule("scaled_linear")
    f = near_gaussian_model(schedule, pred)
    kw = diffusers_kwargs("scaled_linear", pred)

    def gen():
        return torch.Generator().manual_seed(3)

    ref = run_diffusers(DDPMScheduler(**kw, clip_sample=False), f, noise, 20, generator=gen())
    ours = run_ours(schedule, f, noise, pred, "ddpm", 20, spacing="leading", generator=gen())
    assert (ref - ours).abs().max().item() < TOL

    ref = run_diffusers(DDIMScheduler(**kw, clip_sample=False), f, noise, 20, generator=gen(), eta=0.7)
    ours = run_ours(schedule, f, noise, pred, "ddim", 20, spacing="leading", generator=gen(), eta=0.7)
    assert (ref - ours).abs().max().item() < TOL

    sched = EulerAncestralDiscreteScheduler(**kw, timestep_spacing="trailing")
    ref = run_diffusers(sched, f, noise, 20, generator=gen())
    ours = run_ours(schedule, f, noise, pred, "euler_a", 20, generator=gen())
    assert (ref - ours).abs().max().item() < TOL

    # diffusers draws the SDE noise in float32, so compare in float32
    n32 = noise.float()

    def f32(x, t):
        return f(x.double(), t).float()

    sched = DPMSolverMultistepScheduler(**kw, timestep_spacing="trailing", algorithm_type="sde-dpmsolver++")
    ref = run_diffusers(sched, f32, n32, 20, generator=gen())
    ours = run_ours(schedule, f32, n32, pred, "dpmpp_2m_sde", 20, generator=gen())
    assert (ref - ours).abs().max().item() < 1e-5


def test_heun_matches_float64_hand_computation():
    """Where diffusers' float32 arithmetic drifts (cosine, s = 2e4), ours matches float64 by hand."""
    schedule = VPSchedule("cosine")
    f = near_gaussian_model(schedule, "v")
    noise = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    levels = schedule.grid(10, "trailing")
    first = []
    sample(lambda x, t: f(x, t * 1000), noise, schedule, "v", "heun", levels=levels, callback=first.append)
    l0, l1 = levels[0], levels[1]
    s0, s1 = l0.s, l1.s

    def x0_at(x_ve, lv, s):
        a = 1 / (1 + s * s) ** 0.5
        v = f(x_ve * a, torch.tensor([lv.t * 1000]))
        return x_ve * a * a - s * a * v

    x_ve = noise * (1 + s0 * s0) ** 0.5
    d = (x_ve - x0_at(x_ve, l0, s0)) / s0
    x_e = x_ve + d * (s1 - s0)
    d1 = (x_e - x0_at(x_e, l1, s1)) / s1
    expected = (x_ve + (d + d1) / 2 * (s1 - s0)) / (1 + s1 * s1) ** 0.5
    assert (first[0]["x"] - expected).abs().max().item() < 1e-8


@pytest.mark.parametrize("pred", ["eps", "v"])
def test_third_order_multistep_parity(pred, noise):
    """dpmpp_3m_sde with eta = 0 is DPM-Solver++(3M): diffusers' solver_order=3 (>= 15 steps, where
    diffusers does not lower the order before the last step)."""
    schedule = VPSchedule("scaled_linear")
    f = near_gaussian_model(schedule, pred)
    scheduler = DPMSolverMultistepScheduler(
        **diffusers_kwargs("scaled_linear", pred, timestep_spacing="trailing", solver_order=3)
    )
    ref = run_diffusers(scheduler, f, noise, 20)
    ours = run_ours(schedule, f, noise, pred, "dpmpp_3m_sde", 20, eta=0.0)
    assert (ref - ours).abs().max().item() < TOL
