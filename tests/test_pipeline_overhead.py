"""Guidance stacks the conditional and unconditional contexts once per batch size, not at every step
(benchmarks/generate.py, issue 18: the sampling loop's time outside the networks), and the samples
are the ones the per-step stacking gave."""

import torch

from mediadiff.diffusion import FlowSchedule, cfg, sample
from mediadiff.diffusion.objectives import append_dims


class RecordingModel:
    """Records the context tensor of every call; the prediction depends on x, t and the context."""

    def __init__(self):
        self.contexts = []

    def __call__(self, x, t, context=None, context_mask=None):
        self.contexts.append(context)
        shift = (context * context_mask[..., None]).mean(dim=(1, 2))  # [b]
        return torch.tanh(x) * (1 + append_dims(t, x.ndim)) + append_dims(shift, x.ndim)


def contexts(b, length=5, dim=4):
    g = torch.Generator().manual_seed(b)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[:, -1] = False
    cond = {"context": torch.randn(b, length, dim, generator=g), "context_mask": mask}
    uncond = {
        "context": torch.randn(1, length, dim, generator=g),
        "context_mask": torch.ones(1, length, dtype=torch.bool),
    }
    return cond, uncond


def per_step_reference(model, cond, uncond, scale, x, t):
    """The guided prediction with the contexts stacked afresh (the code before the cache)."""
    b = x.shape[0]
    both = {k: torch.cat([cond[k], uncond[k].expand(b, *uncond[k].shape[1:])]) for k in cond}  # [2b ...]
    pred_c, pred_u = model(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
    return pred_u + scale * (pred_c - pred_u)


def test_contexts_are_stacked_once_across_steps():
    model = RecordingModel()
    cond, uncond = contexts(2)
    guided = cfg(model, cond, uncond, 4.0)
    x = torch.randn(2, 3, 8)
    for t in (0.9, 0.5, 0.1):
        guided(x, torch.full((2,), t))
    assert len(model.contexts) == 3
    assert all(c is model.contexts[0] for c in model.contexts)  # one stacked tensor, reused
    assert model.contexts[0].shape == (4, 5, 4)


def test_cached_contexts_give_the_per_step_prediction_for_each_batch_size():
    model = RecordingModel()
    cond, uncond = contexts(1)  # a batch of 1 conditional context broadcasts to any batch
    guided = cfg(model, cond, uncond, 3.0)
    reference_model = RecordingModel()
    for b in (1, 3, 1, 3):  # a second batch size gets its own stacking, the first one's is kept
        x, t = torch.randn(b, 2, 4, 4), torch.rand(b)
        want = per_step_reference(
            reference_model, {k: v.expand(b, *v.shape[1:]) for k, v in cond.items()}, uncond, 3.0, x, t
        )
        assert torch.equal(guided(x, t), want)
    assert len({id(c) for c in model.contexts}) == 2


def test_a_sampling_loop_is_bitwise_the_per_step_one():
    cond, uncond = contexts(2)
    noise = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0))
    model = RecordingModel()
    ours = sample(cfg(model, cond, uncond, 4.0), noise, FlowSchedule(), "flow", "dpmpp_2m", 8)

    def reference(x, t):
        return per_step_reference(RecordingModel(), cond, uncond, 4.0, x, t)

    want = sample(reference, noise, FlowSchedule(), "flow", "dpmpp_2m", 8)
    assert torch.equal(ours, want)
    assert len({id(c) for c in model.contexts}) == 1 and len(model.contexts) == 8
