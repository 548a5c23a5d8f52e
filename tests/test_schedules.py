import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from mediadiff.diffusion import (
    EDMSchedule,
    FlowSchedule,
    Level,
    VPSchedule,
    build_schedule,
    exponential_sigmas,
    karras_sigmas,
    vp_timesteps,
)


@pytest.mark.parametrize(
    "ours,theirs",
    [
        ("linear", {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}),
        ("scaled_linear", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
        ("cosine", {"beta_schedule": "squaredcos_cap_v2"}),
    ],
)
@pytest.mark.parametrize("zsnr", [False, True])
def test_vp_tables_equal_diffusers(ours, theirs, zsnr):
    schedule = VPSchedule(ours, rescale_zero_terminal_snr=zsnr)
    ref = DDIMScheduler(**theirs, rescale_betas_zero_snr=zsnr).alphas_cumprod.double()
    assert torch.equal(schedule.alphas_cumprod, ref)
    if zsnr:
        assert schedule.level(0.999) == Level(0.999, 0.0, 1.0)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 7, 20, 50])
def test_vp_timesteps_match_ddim(spacing, steps):
    if spacing == "linspace" and steps == 1:
        assert vp_timesteps(1, 1000, "linspace") == [999.0]  # diffusers gives [0]: one step at t = 0
        return
    ref = DDIMScheduler(timestep_spacing=spacing)
    ref.set_timesteps(steps)
    assert vp_timesteps(steps, 1000, spacing) == ref.timesteps.double().tolist()


def test_vp_level_is_exact_at_timesteps_and_interpolates_log_sigma():
    schedule = VPSchedule("scaled_linear")
    acp = schedule.alphas_cumprod
    for k in [0, 1, 499, 998, 999]:
        lv = schedule.level(k / 1000)
        assert lv.alpha == pytest.approx(math.sqrt(acp[k]), rel=1e-12)
        assert lv.sigma == pytest.approx(math.sqrt(1 - acp[k]), rel=1e-12)
    s_lo, s_hi = schedule.level(0.5).s, schedule.level(0.501).s
    assert schedule.level(0.5005).s == pytest.approx(math.sqrt(s_lo * s_hi), rel=1e-12)


@pytest.mark.parametrize(
    "schedule", [VPSchedule("cosine"), VPSchedule("linear"), FlowSchedule(), EDMSchedule()]
)
def test_inverse_map_round_trips(schedule):
    t = torch.linspace(0.01, 0.99, 57, dtype=torch.float64)
    a, s = schedule.alpha_sigma(t)
    assert torch.allclose(schedule.t_from_s(s / a), t, atol=1e-9)


@pytest.mark.parametrize("kind", ["karras", "exponential"])
def test_karras_and_exponential_grids_match_diffusers(kind):
    schedule = VPSchedule("scaled_linear")
    ref = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **{f"use_{kind}_sigmas": True}
    )
    ref.set_timesteps(12)
    levels = schedule.grid(12, kind)
    assert len(levels) == 13 and levels[-1] == Level(0.0, 1.0, 0.0)
    np.testing.assert_allclose([lv.s for lv in levels[:-1]], ref.sigmas[:-1].double().numpy(), rtol=1e-6)
    np.testing.assert_allclose([lv.t * 1000 for lv in levels[:-1]], ref.timesteps.double().numpy(), atol=1e-3)


def test_karras_formula_and_edm_grid():
    sig = karras_sigmas(0.002, 80.0, 5, rho=7.0)
    assert sig[0] == pytest.approx(80.0) and sig[-1] == pytest.approx(0.002)
    ramp = [(s ** (1 / 7) - 0.002 ** (1 / 7)) / (80 ** (1 / 7) - 0.002 ** (1 / 7)) for s in sig]
    np.testing.assert_allclose(ramp, [1, 0.75, 0.5, 0.25, 0], atol=1e-12)  # uniform in s^(1/rho)
    edm = EDMSchedule()
    levels = edm.grid(5)
    np.testing.assert_allclose([lv.sigma for lv in levels[:-1]], sig, rtol=1e-12)
    assert all(lv.alpha == 1.0 for lv in levels)
    ex = exponential_sigmas(0.1, 10.0, 3)
    np.testing.assert_allclose(ex, [10.0, 1.0, 0.1], rtol=1e-12)


def test_flow_schedule_grid_shift_and_resolution():
    flow = FlowSchedule(shift=3.0)
    levels = flow.grid(4)
    ts = [lv.t for lv in levels]
    expected = [3 * u / (1 + 2 * u) for u in (1.0, 0.75, 0.5, 0.25)] + [0.0]
    np.testing.assert_allclose(ts, expected, atol=1e-15)
    assert levels[0] == Level(1.0, 0.0, 1.0)  # pure noise
    assert all(lv.alpha == pytest.approx(1 - lv.t) and lv.sigma == pytest.approx(lv.t) for lv in levels)
    # Esser et al. 2024, Eq. 23: shift = sqrt(m / n)
    assert FlowSchedule.for_resolution(64 * 64, base_tokens=32 * 32).shift == pytest.approx(2.0)
    assert FlowSchedule.for_resolution(256).shift == pytest.approx(1.0)


@pytest.mark.parametrize("spacing", ["linspace", "karras", "exponential"])
@pytest.mark.parametrize("shift", [0.5, 3.0])
def test_flow_shift_acts_on_every_spacing_as_s_times_shift(spacing, shift):
    """Esser et al. 2024, Eq. 23 in the noise level s = t / (1 - t) is s -> shift * s: the shifted
    grid of every spacing is shift times the unshifted one (the shift was once ignored by karras and
    exponential grids)."""
    plain = [lv.s for lv in FlowSchedule().grid(12, spacing)[:-1]]
    shifted = [lv.s for lv in FlowSchedule(shift=shift).grid(12, spacing)[:-1]]
    np.testing.assert_allclose(shifted, [shift * s for s in plain], rtol=1e-12)
    assert all(lv.alpha == pytest.approx(1 - lv.t) for lv in FlowSchedule(shift=shift).grid(12, spacing))
    # explicit bounds are unshifted levels, as t is for the uniform grid
    if spacing != "linspace":
        levels = FlowSchedule(shift=shift).grid(4, spacing, sigma_min=0.1, sigma_max=10.0)
        assert levels[0].s == pytest.approx(10.0 * shift) and levels[-2].s == pytest.approx(0.1 * shift)


def test_explicit_timesteps_and_errors():
    vp = VPSchedule()
    levels = vp.levels([0.9, 0.5, 0.1])
    assert [lv.t for lv in levels] == [0.9, 0.5, 0.1, 0.0] and levels[-1].sigma == 0
    with pytest.raises(ValueError, match="strictly decreasing"):
        vp.levels([0.1, 0.5])
    with pytest.raises(ValueError, match="spacing 'bogus' is not available for VPSchedule"):
        vp.grid(10, "bogus")
    with pytest.raises(ValueError, match="not available for FlowSchedule"):
        FlowSchedule().grid(10, "leading")
    with pytest.raises(ValueError, match="unknown beta_schedule"):
        VPSchedule("quadratic")
    with pytest.raises(ValueError, match="cannot exceed"):
        vp.grid(2000)


def test_level_properties():
    lv = Level(0.5, 0.6, 0.8)
    assert lv.s == pytest.approx(0.8 / 0.6) and lv.lam == pytest.approx(math.log(0.6 / 0.8))
    assert Level(1.0, 0.0, 1.0).s == math.inf and Level(1.0, 0.0, 1.0).lam == -math.inf
    assert Level(0.0, 1.0, 0.0).lam == math.inf


@pytest.mark.parametrize(
    "schedule",
    [VPSchedule("cosine", rescale_zero_terminal_snr=True), FlowSchedule(2.0), EDMSchedule(0.01, 50)],
)
def test_config_round_trip(schedule):
    rebuilt = build_schedule(schedule.to_config())
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    for u, v in zip(schedule.alpha_sigma(t), rebuilt.alpha_sigma(t)):
        assert torch.equal(u, v)
    with pytest.raises(ValueError, match="unknown schedule 've'"):
        build_schedule({"type": "ve"})
