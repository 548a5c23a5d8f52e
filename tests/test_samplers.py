"""Sampler mechanics: rank, generators, host syncs, options, errors, callbacks."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from mediadiff.diffusion import SAMPLERS, EDMSchedule, FlowSchedule, VPSchedule, nfe, randn, sample
from mediadiff.diffusion.oracle import Gaussian

SCHEDULES = [(VPSchedule("cosine"), "v"), (FlowSchedule(2.0), "flow"), (EDMSchedule(), "x0")]
SYNC_OPS = {"aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::nonzero", "aten::equal"}


def oracle(shape):
    g = torch.Generator().manual_seed(9)
    return Gaussian(torch.randn(shape, generator=g), torch.rand(shape, generator=g) + 0.1)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("schedule,pred", SCHEDULES, ids=["vp", "flow", "edm"])
def test_every_rank_gives_the_same_numbers(sampler, schedule, pred):
    """The oracle acts per element, so a [b, n] run and its reshape to 3-D, 4-D and 5-D must agree."""
    flat = oracle((2 * 3 * 4 * 4,))
    noise = torch.randn(2, 96)
    ref = sample(
        flat.model(schedule, pred),
        noise,
        schedule,
        pred,
        sampler,
        6,
        generator=torch.Generator().manual_seed(1),
    )
    for shape in [(2, 6, 16), (2, 6, 4, 4), (2, 2, 3, 4, 4)]:
        data = Gaussian(flat.mean.reshape(shape[1:]), flat.var.reshape(shape[1:]))
        out = sample(
            data.model(schedule, pred),
            noise.reshape(shape),
            schedule,
            pred,
            sampler,
            6,
            generator=torch.Generator().manual_seed(1),
        )
        assert out.shape == shape
        assert torch.allclose(out.reshape(2, -1), ref, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "euler_a", "dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_per_sample_generators_make_samples_independent_of_the_batch(sampler):
    schedule, pred = FlowSchedule(), "flow"
    data = oracle((3, 4, 4))
    model = data.model(schedule, pred)
    seeds = [11, 12, 13]
    noise = randn((3, 3, 4, 4), [torch.Generator().manual_seed(s) for s in seeds])
    gens = [torch.Generator().manual_seed(100 + s) for s in seeds]
    batch = sample(model, noise, schedule, pred, sampler, 8, generator=gens)
    for i, s in enumerate(seeds):
        single_noise = randn((1, 3, 4, 4), [torch.Generator().manual_seed(s)])
        single = sample(
            model,
            single_noise,
            schedule,
            pred,
            sampler,
            8,
            generator=[torch.Generator().manual_seed(100 + s)],
        )
        assert torch.allclose(batch[i : i + 1], single, atol=1e-6)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_no_host_sync_inside_the_sampling_loop(sampler):
    schedule, pred = VPSchedule("scaled_linear", rescale_zero_terminal_snr=True), "v"
    model = oracle((4, 8)).model(schedule, pred)
    noise = torch.randn(2, 4, 8)
    levels = schedule.grid(10)  # the grid is built on the host, before the loop
    gen = torch.Generator().manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sample(model, noise, schedule, pred, sampler, levels=levels, generator=gen)
    names = [e.name for e in prof.events()]
    syncs = [n for n in names if n in SYNC_OPS]
    assert syncs == [], syncs
    assert sum(n == "aten::add" or n == "aten::mul" for n in names) > 0  # the profiler did see the loop


def test_callback_progress_and_nfe(capsys):
    schedule, pred = EDMSchedule(), "x0"
    base = oracle((5,)).model(schedule, pred)
    calls = []

    def model(x, t):
        calls.append(t.clone())
        return base(x, t)

    seen = []
    sample(model, torch.randn(2, 5), schedule, pred, "heun", 7, callback=seen.append, progress=True)
    assert [d["i"] for d in seen] == list(range(7))
    assert len(calls) == nfe("heun", 7) == 13
    assert all(c.shape == (2,) and c.dtype == torch.float32 for c in calls)
    assert set(seen[0]) == {"i", "x", "denoised", "level", "next"}
    assert "heun" in capsys.readouterr().err  # tqdm bar


def test_clear_errors():
    schedule = FlowSchedule()
    model = oracle((5,)).model(schedule, "flow")
    noise = torch.randn(2, 5)
    with pytest.raises(ValueError, match=r"unknown sampler 'dpm'; known: \['ddim'"):
        sample(model, noise, schedule, "flow", "dpm")
    with pytest.raises(ValueError, match=r"sampler 'euler' does not take \['order'\]; it takes no options"):
        sample(model, noise, schedule, "flow", "euler", order=2)
    with pytest.raises(
        ValueError,
        match=r"sampler 'unipc' does not take \['eta'\]; it takes \['corrector', 'order', 'variant'\]",
    ):
        sample(model, noise, schedule, "flow", "unipc", eta=1.0)
    with pytest.raises(ValueError, match="eps prediction cannot recover x0 at pure noise"):
        sample(model, noise, schedule, "eps", "euler")
    with pytest.raises(ValueError, match="unknown prediction type"):
        sample(model, noise, schedule, "score", "euler")
    with pytest.raises(TypeError, match="floating-point"):
        sample(model, torch.ones(2, 5, dtype=torch.long), schedule, "flow", "euler")
    with pytest.raises(ValueError, match="unipc order"):
        sample(model, noise, schedule, "flow", "unipc", order=4)
    with pytest.raises(ValueError, match="generators for a batch"):
        randn((3, 2), [torch.Generator()])


def test_bf16_model_output_keeps_float32_state():
    schedule, pred = FlowSchedule(), "flow"
    base = oracle((8,)).model(schedule, pred)
    out = sample(lambda x, t: base(x, t).bfloat16(), torch.randn(2, 8), schedule, pred, "dpmpp_2m", 6)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_cuda_matches_cpu_and_never_syncs(sampler):
    schedule, pred = FlowSchedule(), "flow"
    data = oracle((4, 8))
    noise = torch.randn(2, 4, 8)
    cpu = sample(
        data.model(schedule, pred),
        noise,
        schedule,
        pred,
        sampler,
        8,
        generator=torch.Generator().manual_seed(0),
    )
    cuda_data = Gaussian(data.mean.cuda(), data.var.cuda())
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu = sample(
            cuda_data.model(schedule, pred),
            noise.cuda(),
            schedule,
            pred,
            sampler,
            8,
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_is_a_plain_function_with_the_same_core_signature(sampler):
    """The registry entry says what the function takes: sample() reads the entry, never the signature."""
    import inspect

    spec = SAMPLERS[sampler]
    params = inspect.signature(spec.fn).parameters
    assert list(params)[:3] == ["denoiser", "x", "levels"]
    assert params["generator"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["callback"].kind is inspect.Parameter.KEYWORD_ONLY
    keyword = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert spec.options == keyword - {"generator", "callback"}
    # stochastic samplers (by default options) give different samples for different seeds
    schedule, pred = FlowSchedule(), "flow"
    model = oracle((6,)).model(schedule, pred)
    noise = torch.randn(4, 6)
    a, b = (
        sample(model, noise, schedule, pred, sampler, 5, generator=torch.Generator().manual_seed(s))
        for s in (1, 2)
    )
    assert (not torch.equal(a, b)) == spec.stochastic
    assert nfe(sampler, 5) == (9 if spec.evals_per_step == 2 else 5)
