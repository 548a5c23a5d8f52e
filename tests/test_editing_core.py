"""The diffusion core's editing: SDEdit's start on the grid, and the replacement of known values.

Oracles: for Gaussian data the probability-flow ODE from ``x = alpha x0 + sigma eps`` ends at a known
point (:meth:`Gaussian.ode_endpoint`); the replacement method keeps a known entry on
``alpha y + sigma eps`` at every step of a deterministic sampler and ends it at ``y`` for every
sampler. Parity: diffusers' img2img loop (``get_timesteps`` + ``add_noise``) with its DDIM scheduler.
"""

import pytest
import torch
from diffusers import DDIMScheduler

from mediadiff.diffusion import SAMPLERS, FlowSchedule, VPSchedule, sample, strength_levels
from mediadiff.diffusion.oracle import Gaussian

from .helpers import near_gaussian_model


def gaussian() -> Gaussian:
    g = torch.Generator().manual_seed(3)
    mean = torch.randn(2, 6, generator=g, dtype=torch.float64)
    var = torch.rand(2, 6, generator=g, dtype=torch.float64) + 0.2
    return Gaussian(mean, var)


def make(seed: int, shape=(3, 2, 6)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_strength_picks_the_tail_of_the_grid():
    levels = FlowSchedule().grid(10)
    assert strength_levels(levels, 1.0) == levels
    assert strength_levels(levels, 0.3) == levels[7:]  # 3 steps, not 2 (0.3 * 10 = 2.9999...)
    assert strength_levels(levels, 0.05) == levels[10:]  # less than one step: none
    assert len(strength_levels(levels, 0.0)) == 1
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            strength_levels(levels, bad)


def test_strength_zero_returns_the_input_and_strength_needs_init():
    schedule = FlowSchedule()
    model = gaussian().model(schedule, "flow")
    init = make(1)
    out = sample(model, make(2), schedule, "flow", "dpmpp_2m", 10, init=init, strength=0.0)
    assert torch.equal(out, init)
    with pytest.raises(ValueError, match="needs an init"):
        sample(model, make(2), schedule, "flow", "euler", 10, strength=0.5)


@pytest.mark.parametrize("schedule,prediction", [(FlowSchedule(), "flow"), (VPSchedule("cosine"), "v")])
@pytest.mark.parametrize("strength", [0.4, 0.8])
def test_sdedit_lands_on_the_ode_endpoint_from_the_noised_input(schedule, prediction, strength):
    oracle = gaussian()
    init, noise = make(1), make(2)
    steps = 200
    out = sample(oracle.model(schedule, prediction), noise, schedule, prediction, "unipc", steps,
                 init=init, strength=strength)  # fmt: skip
    start = strength_levels(schedule.grid(steps), strength)[0]
    expected = oracle.ode_endpoint(start.alpha * init + start.sigma * noise, start)
    assert (out - expected).abs().max() < 1e-3  # the solver's own error at 200 steps is 2e-4 to 3e-4
    wrong = strength_levels(schedule.grid(steps), strength + 1 / steps)[0]  # one step higher
    assert (out - oracle.ode_endpoint(wrong.alpha * init + wrong.sigma * noise, wrong)).abs().max() > 2e-3
    # the input shows through in proportion to how little noise was added
    near = (out - init).pow(2).mean()
    far = (sample(oracle.model(schedule, prediction), noise, schedule, prediction, "dpmpp_2m", 20)
           - init).pow(2).mean()  # fmt: skip
    assert near < far


def test_sdedit_matches_diffusers_img2img_loop():
    """diffusers' img2img: ``init_timestep = int(steps * strength)``, ``timesteps[steps - init_timestep:]``,
    ``add_noise(init, noise, timesteps[:1])``, then the scheduler's loop."""
    schedule = VPSchedule("scaled_linear")
    f = near_gaussian_model(schedule, "eps")
    init, noise = make(1, (2, 4, 3, 5)), make(2, (2, 4, 3, 5))
    steps, strength = 20, 0.6
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="epsilon",
        clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading",
    )  # fmt: skip
    scheduler.set_timesteps(steps)
    t_start = steps - int(steps * strength)
    timesteps = scheduler.timesteps[t_start:]
    x = scheduler.add_noise(init, noise, timesteps[:1])
    for t in timesteps:
        x = scheduler.step(f(x, t), t, x).prev_sample
    ours = sample(lambda x, t: f(x, t * 1000), noise, schedule, "eps", "ddim", steps, spacing="leading",
                  init=init, strength=strength)  # fmt: skip
    assert (ours - x).abs().max() < 1e-5


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_known_entries_end_exactly_known(sampler):
    schedule = FlowSchedule()
    oracle = gaussian()
    known = make(5)
    mask = torch.zeros(1, 1, 6, dtype=torch.bool)
    mask[..., :2] = True  # the first two "frames" are given
    gen = [torch.Generator().manual_seed(i) for i in range(3)]
    out = sample(oracle.model(schedule, "flow"), make(2), schedule, "flow", sampler, 8,
                 generator=gen, known=known, mask=mask)  # fmt: skip
    assert torch.equal(out[..., :2], known[..., :2])
    assert not torch.allclose(out[..., 2:], known[..., 2:])


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "unipc"])
def test_known_entries_follow_their_noised_path_and_the_rest_is_untouched(sampler):
    """Deterministic samplers: every state holds ``alpha y + sigma eps`` in the known entries; the
    oracle's dimensions are independent, so the free entries end where they would without a mask."""
    schedule = VPSchedule("cosine")
    oracle = gaussian()
    model = oracle.model(schedule, "v")
    known, noise = make(5), make(2)
    mask = torch.zeros(1, 1, 6, dtype=torch.bool)
    mask[..., 3:] = True
    errors = []

    def check(info):
        lv = info["next"]
        path = lv.alpha * known + lv.sigma * noise
        errors.append((info["x"] - path)[..., 3:].abs().max().item())

    out = sample(model, noise, schedule, "v", sampler, 12, known=known, mask=mask, callback=check)
    assert max(errors) < 1e-9
    free = sample(model, noise, schedule, "v", sampler, 12)
    assert (out - free)[..., :3].abs().max() < 1e-9
