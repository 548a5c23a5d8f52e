import math

import pytest
import torch

from mediadiff.diffusion import (
    PREDICTIONS,
    EDMSchedule,
    FlowSchedule,
    LogitNormalT,
    LogNormalT,
    UniformT,
    VPSchedule,
    append_dims,
    convert_prediction,
    diffusion_loss,
    loss_weight,
    pred_to_eps,
    pred_to_x0,
    prediction_target,
    sample,
)
from mediadiff.diffusion.oracle import GaussianMixture

F64 = torch.float64


def alpha_sigma_pairs():
    # VP pairs, flow pairs (not variance preserving) and EDM pairs (alpha = 1)
    return [(0.8, 0.6), (0.3, math.sqrt(1 - 0.09)), (0.7, 0.3), (0.1, 0.9), (1.0, 2.5)]


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("pair", alpha_sigma_pairs())
def test_prediction_conversions_round_trip(prediction, pair):
    a, s = pair
    x0, eps = torch.randn(2, 3, 4, 5, 6, dtype=F64).unbind(0)
    x = a * x0 + s * eps
    target = prediction_target(x0, eps, a, s, prediction)
    assert torch.allclose(pred_to_x0(target, x, a, s, prediction), x0, atol=1e-12)
    assert torch.allclose(pred_to_eps(target, x, a, s, prediction), eps, atol=1e-12)
    for dst in PREDICTIONS:
        assert torch.allclose(
            convert_prediction(target, prediction, dst, x, a, s),
            prediction_target(x0, eps, a, s, dst),
            atol=1e-12,
        )


def test_v_and_flow_definitions():
    x0, eps = torch.randn(2, 8, dtype=F64)
    assert torch.allclose(prediction_target(x0, eps, 0.6, 0.8, "v"), 0.6 * eps - 0.8 * x0)
    assert torch.allclose(prediction_target(x0, eps, 0.6, 0.4, "flow"), eps - x0)


@pytest.mark.parametrize("weighting", ["min_snr", "edm"])
@pytest.mark.parametrize("schedule", [VPSchedule("cosine"), FlowSchedule(), EDMSchedule()])
def test_weightings_mean_the_same_for_every_prediction_type(weighting, schedule):
    """A model whose x0 estimate is x0_hat gets the same weighted loss whatever it predicts."""
    b = 16
    x0 = torch.randn(b, 3, 4, dtype=F64)
    noise = torch.randn(b, 3, 4, dtype=F64)
    x0_hat = x0 + 0.1 * torch.randn(b, 3, 4, dtype=F64)
    t = torch.rand(b, dtype=F64) * 0.98 + 0.01
    losses = []
    for pred in PREDICTIONS:

        def model(x, tt, pred=pred):
            a, s = (append_dims(v, x.ndim) for v in schedule.alpha_sigma(tt))
            eps_hat = (x - a * x0_hat) / s
            return prediction_target(x0_hat, eps_hat, a, s, pred)

        losses.append(diffusion_loss(model, x0, schedule, pred, t=t, noise=noise, weighting=weighting))
    for other in losses[1:]:
        assert torch.allclose(losses[0], other, rtol=1e-5)


def test_min_snr_matches_the_paper_for_eps_and_v():
    """Hang et al. 2023: eps -> min(SNR, g) / SNR, v -> min(SNR, g) / (SNR + 1) on a VP schedule."""
    schedule = VPSchedule("scaled_linear")
    t = torch.linspace(0.01, 0.99, 50, dtype=F64)
    a, s = schedule.alpha_sigma(t)
    snr = (a / s) ** 2
    assert torch.allclose(loss_weight(a, s, "eps", "min_snr", gamma=5), snr.clamp(max=5) / snr)
    assert torch.allclose(loss_weight(a, s, "v", "min_snr", gamma=5), snr.clamp(max=5) / (snr + 1))
    assert torch.equal(loss_weight(a, s, "v", "uniform"), torch.ones_like(a))


def test_edm_weighting_is_karras_lambda():
    a = torch.ones(5, dtype=F64)
    s = torch.tensor([0.01, 0.1, 0.5, 2.0, 40.0], dtype=F64)
    lam = (s**2 + 0.25) / (s * 0.5) ** 2
    assert torch.allclose(loss_weight(a, s, "x0", "edm", sigma_data=0.5), lam)


def test_loss_is_per_sample_and_matches_hand_computation():
    schedule = FlowSchedule()
    x0 = torch.randn(4, 2, 3, 8, 8)
    noise = torch.randn_like(x0)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])

    def model(x, tt):
        return x * 0.5

    loss = diffusion_loss(model, x0, schedule, "flow", t=t, noise=noise)
    tb = t.view(-1, 1, 1, 1, 1)
    x_t = (1 - tb) * x0 + tb * noise
    expected = ((0.5 * x_t - (noise - x0)) ** 2).flatten(1).mean(1)
    assert loss.shape == (4,)
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown weighting"):
        diffusion_loss(model, x0, schedule, "flow", weighting="p2")
    with pytest.raises(ValueError, match="unknown prediction"):
        diffusion_loss(model, x0, schedule, "score")
    with pytest.raises(ValueError, match="model returned shape"):
        diffusion_loss(lambda x, tt: x[:, :1], x0, schedule, "flow")


def test_t_samplers():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    u = UniformT()(n, FlowSchedule(), generator=g)
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean() - 0.5) < 0.01
    ln = LogitNormalT(0.0, 1.0)(n, FlowSchedule(), generator=g)
    logit = torch.log(ln / (1 - ln))
    assert abs(logit.mean()) < 0.01 and abs(logit.std() - 1) < 0.01
    edm = EDMSchedule(sigma_min=1e-4, sigma_max=1e4)
    t = LogNormalT(-1.2, 1.2)(n, edm, generator=g)
    _, s = edm.alpha_sigma(t)
    assert abs(s.log().mean() + 1.2) < 0.02 and abs(s.log().std() - 1.2) < 0.02
    flow_t = LogNormalT()(n, FlowSchedule(), generator=g)
    s = flow_t / (1 - flow_t)
    assert abs(s.log().mean() + 1.2) < 0.02
    with pytest.raises(ValueError, match="unknown t_sampler"):
        diffusion_loss(lambda x, tt: x, torch.zeros(2, 3), FlowSchedule(), "flow", t_sampler="beta")


def test_training_with_the_loss_learns_a_mixture():
    """A small MLP trained with diffusion_loss samples the right mixture weights: the loss,
    target and schedule agree with the samplers."""
    torch.manual_seed(0)
    mix = GaussianMixture(
        torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), torch.full((2,), 0.04), torch.tensor([0.7, 0.3])
    )
    schedule = FlowSchedule()
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 128),
        torch.nn.SiLU(),
        torch.nn.Linear(128, 128),
        torch.nn.SiLU(),
        torch.nn.Linear(128, 2),
    )

    def model(x, t):
        return net(torch.cat([x, t[:, None]], dim=1))

    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(1500):
        loss = diffusion_loss(model, mix.sample(256), schedule, "flow", t_sampler="logit_normal").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = sample(model, torch.randn(4000, 2), schedule, "flow", "dpmpp_2m", 20)
    k = mix.assign(out)
    frac = (k == 0).float().mean().item()
    assert abs(frac - 0.7) < 0.06, frac
    assert (out - mix.means[k]).pow(2).mean() < 0.2
