"""Analytic oracles: samplers against the exact denoiser and the exact ODE solution."""

import itertools
import math

import numpy as np
import pytest
import torch

from mediadiff.diffusion import SAMPLERS, EDMSchedule, FlowSchedule, VPSchedule, default_grid, randn, sample
from mediadiff.diffusion.oracle import Gaussian, GaussianMixture

F64 = torch.float64
GAUSS = Gaussian(torch.tensor([0.5, -1.0, 0.0], dtype=F64), torch.tensor([0.2, 1.0, 2.0], dtype=F64))
MIX = GaussianMixture(
    torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=F64),
    torch.full((3,), 0.05, dtype=F64),
    torch.tensor([0.5, 0.3, 0.2], dtype=F64),
)
# schedules whose first level is (close to) pure noise, each with a natural prediction type
SCHEDULES = {
    "vp_cosine": (VPSchedule("cosine"), "v"),
    "vp_zero_snr": (VPSchedule("scaled_linear", rescale_zero_terminal_snr=True), "v"),
    "vp_scaled_linear_eps": (VPSchedule("scaled_linear"), "eps"),
    "flow": (FlowSchedule(), "flow"),
    "flow_shift3": (FlowSchedule(3.0), "flow"),
    "edm": (EDMSchedule(), "x0"),
}
DETERMINISTIC = ["euler", "ddim", "heun", "dpmpp_2m", "unipc"]


def ode_error(schedule, prediction, sampler, levels, noise, **kw):
    out = sample(GAUSS.model(schedule, prediction), noise, schedule, prediction, sampler, levels=levels, **kw)
    start = noise * math.sqrt(levels[0].alpha ** 2 + levels[0].sigma ** 2)
    return (out - GAUSS.ode_endpoint(start, levels[0])).pow(2).mean().sqrt().item()


@pytest.mark.parametrize("name", ["vp_cosine", "vp_zero_snr", "flow", "flow_shift3", "edm"])
@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_deterministic_samplers_reach_the_exact_ode_end_point(name, sampler):
    schedule, pred = SCHEDULES[name]
    noise = torch.randn(256, 3, dtype=F64)
    steps = 25 if sampler == "heun" else 50
    err = ode_error(schedule, pred, sampler, default_grid(schedule, sampler, steps), noise)
    assert err < {"euler": 0.06, "ddim": 0.06, "heun": 0.03}.get(sampler, 0.02), err


@pytest.mark.parametrize(
    "schedule,pred,spacing",
    [
        (EDMSchedule(), "x0", "karras"),
        (VPSchedule("scaled_linear"), "eps", "karras"),
        (FlowSchedule(), "flow", "karras"),
    ],
    ids=["edm", "vp", "flow"],
)
@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_order_of_convergence(schedule, pred, spacing, sampler):
    """The global error against the exact ODE end point falls as steps^-order (the registry's order)."""
    order = SAMPLERS[sampler].order
    noise = torch.randn(256, 3, dtype=F64)
    errs = [ode_error(schedule, pred, sampler, schedule.grid(n, spacing), noise) for n in (20, 40, 80)]
    slopes = [math.log2(a / b) for a, b in itertools.pairwise(errs)]
    measured = float(np.mean(slopes))
    assert abs(measured - order) < 0.35, (errs, slopes)


def test_higher_order_beats_euler_at_equal_evaluations():
    schedule = FlowSchedule()
    noise = torch.randn(256, 3, dtype=F64)
    e_euler = ode_error(schedule, "flow", "euler", schedule.grid(20), noise)
    for sampler in ("dpmpp_2m", "unipc"):
        assert ode_error(schedule, "flow", sampler, schedule.grid(20), noise) < e_euler / 5
    assert ode_error(schedule, "flow", "heun", schedule.grid(10), noise) < e_euler / 2  # 19 evaluations


def test_unipc_orders_improve_accuracy():
    schedule = EDMSchedule()
    noise = torch.randn(256, 3, dtype=F64)
    errs = [ode_error(schedule, "x0", "unipc", schedule.grid(20), noise, order=p) for p in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2], errs
    no_corr = ode_error(schedule, "x0", "unipc", schedule.grid(20), noise, corrector=False)
    assert errs[1] < no_corr, (errs[1], no_corr)


def draw(data, name, sampler, n, seed):
    """``n`` samples of ``data`` through ``sampler`` on the named schedule, at a step count it needs."""
    schedule, pred = SCHEDULES[name]
    # heun: 40 steps (79 evaluations); at 25 its trailing grid on zero-SNR VP is 14% off in variance
    steps = 40 if sampler == "heun" else 200 if sampler in ("ddpm", "euler_a", "ddim", "euler") else 50
    gen = torch.Generator().manual_seed(seed)
    noise = randn((n, *data.sample(1).shape[1:]), gen, dtype=F64)
    return sample(data.model(schedule, pred), noise, schedule, pred, sampler, steps, generator=gen)


@pytest.mark.parametrize("name", ["vp_cosine", "vp_zero_snr", "flow", "edm"])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_output_distribution_matches_gaussian_data(name, sampler):
    out = draw(GAUSS, name, sampler, 8000, seed=0)
    assert (out.mean(0) - GAUSS.mean).abs().max() < 0.05
    rel_var = ((out.var(0) - GAUSS.var).abs() / GAUSS.var).max()
    assert rel_var < 0.12, rel_var
    cov = torch.cov(out.T)
    off = cov - torch.diag(torch.diagonal(cov))
    assert off.abs().max() < 0.06


@pytest.mark.parametrize("name", ["vp_cosine", "flow", "edm"])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_output_distribution_matches_gaussian_mixture(name, sampler):
    out = draw(MIX, name, sampler, 4000, seed=1)
    k = MIX.assign(out)
    weights = torch.bincount(k, minlength=3).to(F64) / len(k)
    assert (weights - MIX.weights).abs().max() < 0.03, weights
    within = (out - MIX.means[k]).pow(2).mean()  # per-coordinate variance inside a component
    assert 0.035 < within < 0.065, within
    for j in range(3):
        assert (out[k == j].mean(0) - MIX.means[j]).abs().max() < 0.05


def test_stochastic_samplers_are_stochastic_and_seeded():
    schedule, pred = SCHEDULES["flow"]
    noise = torch.randn(64, 2, dtype=F64)
    model = MIX.model(schedule, pred)
    for sampler in ("ddpm", "euler_a", "dpmpp_2m_sde", "dpmpp_3m_sde"):
        a = sample(model, noise, schedule, pred, sampler, 20, generator=torch.Generator().manual_seed(5))
        b = sample(model, noise, schedule, pred, sampler, 20, generator=torch.Generator().manual_seed(5))
        c = sample(model, noise, schedule, pred, sampler, 20, generator=torch.Generator().manual_seed(6))
        assert torch.equal(a, b)
        assert (a - c).abs().max() > 1e-3


def test_uncorrected_start_bias_of_a_nonzero_snr_schedule_is_visible():
    """scaled_linear's last timestep still holds 7% of the signal (Lin et al. 2023); starting from
    pure noise leaves that fraction of the mean out, which the oracle measures."""
    schedule, pred = SCHEDULES["vp_scaled_linear_eps"]
    noise = torch.randn(8000, 3, dtype=F64)
    out = sample(GAUSS.model(schedule, pred), noise, schedule, pred, "dpmpp_2m", 50)
    alpha_max = schedule.grid(50)[0].alpha
    np.testing.assert_allclose(out.mean(0) - GAUSS.mean, -alpha_max * GAUSS.mean, atol=0.03)


def test_heun_first_step():
    """From s ~ 2e4 (VP cosine, trailing) Heun's trapezoid rule averages the slope at s = 2e4 with
    the slope near s = 6 over the whole step: a poor quadrature, the method's own behaviour
    (diffusers' HeunDiscreteScheduler does the same). Karras grids cap s_max and avoid it, and so
    heun's default grid does (SamplerSpec.grid); the trailing grid is still there when asked for."""
    schedule = VPSchedule("cosine")
    noise = torch.randn(512, 3, dtype=F64)
    bad = ode_error(schedule, "v", "heun", schedule.grid(10, "trailing"), noise)
    good = ode_error(schedule, "v", "heun", schedule.grid(10, "karras", sigma_max=80.0), noise)
    assert bad > 10.0 and good < 0.25, (bad, good)


# Every sampler on its default grid (``sample`` given only ``steps``), for every kind of schedule. The
# steps and the tolerances go by the registry's order and stochasticity; each tolerance is the largest
# error measured over the five schedules (seeds as below, torch 2.x CPU) plus about 25%:
#   kind                      steps  measured max |std / true - 1|   measured max |mean - true|
#   deterministic, order 1    100    0.036 (euler, ddim: scaled_linear)  0.0000
#   deterministic, order >= 2  40    0.047 (heun: scaled_linear)         0.0001
#   stochastic, order 1       200    0.042 (ddpm, euler_a: linear)       0.018 (sampling error)
#   stochastic, order >= 2    100    0.025 (dpmpp_2m_sde: linear)        0.011 (sampling error)
# Before heun's default grid was capped at s = 80, heun on VP cosine (trailing, from s = 2e4) gave a
# std 2.2 times the data's at 40 steps and 1.14 times at 80.
DEFAULT_GRID_SCHEDULES = {
    "vp_linear": (VPSchedule("linear"), "eps"),
    "vp_scaled_linear": (VPSchedule("scaled_linear"), "eps"),
    "vp_cosine": (VPSchedule("cosine"), "v"),
    "flow": (FlowSchedule(), "flow"),
    "edm": (EDMSchedule(), "x0"),
}
DEFAULT_GRID_RUNS = {  # (stochastic, order >= 2) -> (steps, std tolerance, mean tolerance)
    (False, False): (100, 0.045, 0.002),
    (False, True): (40, 0.06, 0.002),
    (True, False): (200, 0.055, 0.03),
    (True, True): (100, 0.035, 0.02),
}


@pytest.mark.parametrize("name", sorted(DEFAULT_GRID_SCHEDULES))
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_converges_on_its_default_grid(name, sampler):
    """Gaussian data, exact denoiser: the output's per-coordinate mean and std match the data's.

    The start noise is standardised, so a deterministic sampler's error is its own (it is an affine map
    per coordinate here), and the mean is compared after the start bias of a grid whose first level
    keeps some signal (alpha > 0: scaled_linear's 7%, Lin et al. 2023; heun's s = 80 start, 1.2%):
    the exact ODE end point of zero noise."""
    schedule, pred = DEFAULT_GRID_SCHEDULES[name]
    spec = SAMPLERS[sampler]
    steps, std_tol, mean_tol = DEFAULT_GRID_RUNS[(spec.stochastic, spec.order >= 2)]
    gen = torch.Generator().manual_seed(0)
    noise = randn((10000 if spec.stochastic else 4000, 3), gen, dtype=F64)
    noise = (noise - noise.mean(0)) / noise.std(0)
    out = sample(GAUSS.model(schedule, pred), noise, schedule, pred, sampler, steps, generator=gen)
    first = default_grid(schedule, sampler, steps)[0]
    start_bias = (GAUSS.ode_endpoint(torch.zeros(3, dtype=F64), first) - GAUSS.mean).abs()  # [3]
    start_std = math.hypot(first.alpha, first.sigma) / (first.alpha**2 * GAUSS.var + first.sigma**2).sqrt()
    mean_err = ((out.mean(0) - GAUSS.mean).abs() - start_bias).max().item()
    std_err = ((out.std(0) / GAUSS.var.sqrt() - 1).abs() - (start_std - 1).abs()).max().item()
    assert mean_err < mean_tol and std_err < std_tol, (mean_err, std_err)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_default_grid_of_flow_is_the_uniform_grid_for_every_sampler(sampler):
    """The shipped video models sample on FlowSchedule's default grid: t = 1 - i / steps, exactly."""
    schedule = FlowSchedule()
    for steps in (1, 6, 8, 20, 50, 200):
        levels = default_grid(schedule, sampler, steps)
        assert [lv.t for lv in levels] == [1 - i / steps for i in range(steps)] + [0.0]
        assert levels == schedule.grid(steps)


def test_heun_default_grid_caps_a_finite_start_at_80():
    """Heun's default grid starts at s = 80 where the schedule's would start higher at a finite level
    (VP cosine 2e4, linear 157); below 80 (scaled_linear 14.6, EDM 80) or at pure noise (flow,
    zero terminal SNR) it is the schedule's own; other samplers always get the schedule's own."""
    for schedule in (VPSchedule("cosine"), VPSchedule("linear")):
        assert schedule.grid(20)[0].s > 150
        assert default_grid(schedule, "heun", 20)[0].s == pytest.approx(80.0)
        assert default_grid(schedule, "dpmpp_2m", 20) == schedule.grid(20)
    for schedule in (
        VPSchedule("scaled_linear"),
        EDMSchedule(),
        SCHEDULES["vp_zero_snr"][0],
        FlowSchedule(3.0),
    ):
        assert default_grid(schedule, "heun", 20) == schedule.grid(20)
