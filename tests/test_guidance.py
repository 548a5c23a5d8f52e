import pytest
import torch

from mediadiff.diffusion import FlowSchedule, cfg, sample


class CondModel:
    """A toy conditional model that records its calls: the prediction depends on x, t and context."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, context=None, context_mask=None):
        self.calls.append(x.shape[0])
        shift = context.mean(dim=(1, 2)) * context_mask.float().mean(1)  # [b]
        view = (-1,) + (1,) * (x.ndim - 1)
        return torch.tanh(x) * (1 + t.view(view)) + shift.view(view)


def contexts(b=3, length=5, dim=4):
    cond = {"context": torch.randn(b, length, dim), "context_mask": torch.ones(b, length, dtype=torch.bool)}
    uncond = {"context": torch.zeros(1, length, dim), "context_mask": torch.ones(1, length, dtype=torch.bool)}
    return cond, uncond


@pytest.mark.parametrize("shape", [(3, 4, 16), (3, 4, 8, 8), (3, 4, 2, 8, 8)])
def test_scale_one_is_the_conditional_model(shape):
    model = CondModel()
    cond, uncond = contexts()
    x, t = torch.randn(shape), torch.rand(3)
    guided = cfg(model, cond, uncond, 1.0)
    assert torch.equal(guided(x, t), model(x, t, **cond))


@pytest.mark.parametrize("shape", [(3, 4, 16), (3, 4, 8, 8), (3, 4, 2, 8, 8)])
def test_guidance_formula_in_one_batched_call(shape):
    model = CondModel()
    cond, uncond = contexts()
    x, t = torch.randn(shape), torch.rand(3)
    guided = cfg(model, cond, uncond, 4.0)
    model.calls.clear()
    out = guided(x, t)
    assert model.calls == [6]  # cond and uncond together
    c = model(x, t, **cond)
    u = model(x, t, **{k: v.expand(3, *v.shape[1:]) for k, v in uncond.items()})
    assert torch.allclose(out, u + 4.0 * (c - u), atol=1e-6)


def test_rescale_restores_the_conditional_std():
    model = CondModel()
    cond, uncond = contexts()
    x, t = torch.randn(3, 4, 8, 8), torch.rand(3)
    c = model(x, t, **cond)
    full = cfg(model, cond, uncond, 7.0, rescale=1.0)(x, t)
    assert torch.allclose(full.std(dim=(1, 2, 3)), c.std(dim=(1, 2, 3)), rtol=1e-5)
    plain = cfg(model, cond, uncond, 7.0)(x, t)
    half = cfg(model, cond, uncond, 7.0, rescale=0.5)(x, t)
    assert torch.allclose(half, 0.5 * full + 0.5 * plain, atol=1e-5)  # Lin et al. 2023, Eq. 16


def test_interval_switches_guidance_off_outside():
    model = CondModel()
    cond, uncond = contexts()
    x = torch.randn(3, 4, 8)
    t = torch.tensor([0.1, 0.5, 0.9])
    out = cfg(model, cond, uncond, 5.0, interval=(0.3, 0.7))(x, t)
    c = model(x, t, **cond)
    full = cfg(model, cond, uncond, 5.0)(x, t)
    assert torch.allclose(out[0], c[0]) and torch.allclose(out[2], c[2])
    assert torch.allclose(out[1], full[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("scale", [4.0, 4.3, -1.7])
def test_full_interval_skips_the_mask_with_the_same_numbers(dtype, scale):
    """The default interval (0, 1) takes a path without the per-step mask; it must give the masked
    path's numbers bit for bit, the weight rounded as the mask rounds it (float32, then the dtype)."""
    toy = CondModel()

    def model(x, t, **kw):
        return toy(x, t, **kw).to(x.dtype)  # a prediction in the input's dtype, as backbones give

    cond, uncond = contexts()
    cond = {**cond, "context": cond["context"].to(dtype)}
    uncond = {**uncond, "context": uncond["context"].to(dtype)}
    x, t = torch.randn(3, 4, 8).to(dtype), torch.tensor([0.0, 0.5, 0.99])
    fast = cfg(model, cond, uncond, scale)(x, t)
    masked = cfg(model, cond, uncond, scale, interval=(0.0, 0.995))(x, t)  # every t inside: the mask path
    assert fast.dtype == dtype and torch.equal(fast, masked)
    if dtype == torch.float64 and scale == 4.3:  # the weight is float32's 4.3, not float64's
        c, u = model(x, t, **cond), model(x, t, **uncond)
        assert not torch.equal(fast, u + 4.3 * (c - u))


def test_guided_model_samples_and_errors():
    model = CondModel()
    cond, uncond = contexts()
    guided = cfg(model, cond, uncond, 3.0, rescale=0.7, interval=(0.0, 0.8))
    out = sample(guided, torch.randn(3, 4, 8), FlowSchedule(), "flow", "dpmpp_2m", 8)
    assert out.shape == (3, 4, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="same keys"):
        cfg(model, cond, {"context": uncond["context"]}, 2.0)
    with pytest.raises(ValueError, match="differ in shape"):
        cfg(model, cond, {"context": torch.zeros(1, 7, 4), "context_mask": uncond["context_mask"]}, 2.0)
    with pytest.raises(ValueError, match="rescale"):
        cfg(model, cond, uncond, 2.0, rescale=1.5)
    with pytest.raises(ValueError, match="interval"):
        cfg(model, cond, uncond, 2.0, interval=(0.8, 0.2))
