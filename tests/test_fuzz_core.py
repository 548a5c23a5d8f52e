"""Fuzzing the diffusion core and the pipelines (issue 17): random schedule parameters and grids, random
arguments to ``sample`` (every sampler name and invalid ones, steps, prediction types, shapes, dtypes,
NaN noise, sampler options, SDEdit strengths, guidance) and random prompts to both shipped pipelines and
a tiny one. Every outcome is a result (finite wherever the input was finite) or a clear ``ValueError`` /
``TypeError``; never another exception, a crash or a hang. Deterministic (``derandomize``)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from mediadiff.diffusion import (
    PREDICTIONS,
    SAMPLERS,
    FlowSchedule,
    Level,
    build_schedule,
    cfg,
    sample,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
CLEAR = (ValueError, TypeError)

# ----------------------------------------------------------------------------------------- values

ODD_NUMBERS = st.sampled_from(
    [0, -1, -1e-9, 1e-300, 1e300, float("nan"), float("inf"), -float("inf"), True, None, "1", [1]]
)
POSITIVE = st.floats(min_value=1e-4, max_value=1e3, allow_nan=False)


def maybe_odd(good: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly ``good`` values, sometimes an odd one (zero, negative, NaN, inf, a bool, None, a string)."""
    return st.one_of(good, good, good, ODD_NUMBERS)


SCHEDULE_CONFIGS = {
    "vp": st.fixed_dictionaries(
        {},
        optional={
            "beta_schedule": maybe_odd(st.sampled_from(["linear", "scaled_linear", "cosine"])),
            "num_train_timesteps": maybe_odd(st.integers(2, 2000)),
            "beta_start": maybe_odd(st.floats(1e-6, 0.05)),
            "beta_end": maybe_odd(st.floats(1e-3, 0.2)),
            "rescale_zero_terminal_snr": maybe_odd(st.booleans()),
            "snr_shift_scale": maybe_odd(st.floats(0.1, 5.0)),
        },
    ),
    "flow": st.fixed_dictionaries(
        {}, optional={"shift": maybe_odd(st.floats(0.05, 20.0)), "t_min": maybe_odd(st.floats(1e-5, 0.4))}
    ),
    "edm": st.fixed_dictionaries(
        {},
        optional={
            "sigma_min": maybe_odd(st.floats(1e-4, 1.0)),
            "sigma_max": maybe_odd(st.floats(1.0, 500.0)),
            "rho": maybe_odd(st.floats(0.5, 10.0)),
            "sigma_data": maybe_odd(POSITIVE),
        },
    ),
    "cosine": st.fixed_dictionaries(
        {},
        optional={
            "sigma_min": maybe_odd(st.floats(1e-3, 1.0)),
            "sigma_max": maybe_odd(st.floats(1.0, 1000.0)),
            "rho": maybe_odd(st.floats(0.5, 10.0)),
        },
    ),
}
SCHEDULE_SPECS = st.one_of(
    *(st.builds(lambda c, k=kind: {"type": k, "config": c}, cfg_) for kind, cfg_ in SCHEDULE_CONFIGS.items()),
    st.sampled_from(
        [{"type": "nope"}, {"type": None}, {"type": ["vp"]}, "flow", None, {"type": "flow", "config": [1]}]
    ),
    st.builds(lambda k: {"type": "flow", "config": {k: 1.0}}, st.sampled_from(["gamma", "sigma_min", ""])),
)
SPACINGS = st.sampled_from([None, "karras", "exponential", "linspace", "leading", "trailing", "bogus", 3])
STEPS = st.one_of(st.integers(-2, 40), st.sampled_from([2.5, True, "4", None]))


def check_levels(levels: list, steps: int | None = None) -> None:
    """A grid: decreasing finite levels ending at the clean level (``steps + 1`` of them when known)."""
    assert all(isinstance(lv, Level) for lv in levels)
    if steps is not None:
        assert len(levels) == steps + 1
    assert levels[-1] == Level(0.0, 1.0, 0.0)
    for lv in levels:
        assert 0.0 <= lv.t <= 1.0 and math.isfinite(lv.alpha) and math.isfinite(lv.sigma), lv
        assert lv.alpha >= 0 and lv.sigma >= 0 and (lv.alpha > 0 or lv.sigma > 0), lv
    s = [lv.s for lv in levels]
    assert all(b < a for a, b in itertools.pairwise(s)), s  # strictly decreasing noise


def build_or_none(spec):
    try:
        return build_schedule(spec)
    except CLEAR:
        return None


# ----------------------------------------------------------------------------------------- schedules


@FUZZ
@given(
    spec=SCHEDULE_SPECS,
    steps=STEPS,
    spacing=SPACINGS,
    bounds=st.tuples(maybe_odd(POSITIVE), maybe_odd(POSITIVE)),
)
def test_schedules_and_grids_are_valid_or_a_clear_error(spec, steps, spacing, bounds):
    schedule = build_or_none(spec)
    if schedule is None:
        return
    lo, hi = schedule.s_range()
    assert 0 < lo <= hi < math.inf
    check_levels(schedule.grid(2), 2)  # a schedule that builds has a default grid
    try:
        levels = schedule.grid(steps, spacing)
    except CLEAR:
        pass
    else:
        check_levels(levels, steps)
    if spacing in ("karras", "exponential"):
        try:
            levels = schedule.grid(5, spacing, sigma_min=bounds[0], sigma_max=bounds[1])
        except CLEAR:
            return
        check_levels(levels, 5)


@FUZZ
@given(
    spec=SCHEDULE_SPECS,
    ts=st.lists(maybe_odd(st.floats(0, 1)), max_size=6),
    ss=st.lists(maybe_odd(POSITIVE), max_size=6),
)
def test_explicit_timesteps_and_noise_levels(spec, ts, ss):
    schedule = build_or_none(spec)
    if schedule is None:
        return
    for make, values in ((schedule.levels, ts), (schedule.levels_from_s, ss)):
        try:
            levels = make(values)
        except CLEAR:
            continue
        check_levels(levels, len(values))


# ----------------------------------------------------------------------------------------- samplers

BAD_SAMPLERS = st.sampled_from(["", "DDIM", "euler ", "lms", None, 3, ["euler"]])
BAD_PREDICTIONS = st.sampled_from(["score", "", None, 0])
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16])
SHAPES = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)
OPTION_VALUES = {
    "eta": maybe_odd(st.floats(0, 2)),
    "s_noise": maybe_odd(st.floats(0, 2)),
    "order": st.sampled_from([1, 2, 3, 3, 0, 4]),
    "variant": st.sampled_from(["bh1", "bh2", "bh2", "bh3"]),
    "corrector": st.booleans(),
}
# the grids a pipeline samples on: valid schedules (the schedules' own fuzzing above covers the rest)
GOOD_SCHEDULES = st.one_of(
    st.builds(lambda b, n, z: {"type": "vp", "config": {"beta_schedule": b, "num_train_timesteps": n,
                                                      "rescale_zero_terminal_snr": z}},
              st.sampled_from(["linear", "scaled_linear", "cosine"]), st.integers(50, 1000), st.booleans()),
    st.builds(lambda sh: {"type": "flow", "config": {"shift": sh}}, st.floats(0.2, 10)),
    st.builds(lambda lo, hi: {"type": "edm", "config": {"sigma_min": lo, "sigma_max": hi}},
              st.floats(1e-3, 0.5), st.floats(1.0, 200.0)),
    st.builds(lambda lo, hi: {"type": "cosine", "config": {"sigma_min": lo, "sigma_max": hi}},
              st.floats(1e-2, 0.5), st.floats(1.0, 1000.0)),
)  # fmt: skip


def model(x: torch.Tensor, t: torch.Tensor, **_) -> torch.Tensor:
    """A smooth, bounded, non-linear stand-in for a backbone: finite for finite input."""
    return torch.tanh(x) * 0.5 + t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) * 0.1


@st.composite
def sampling_cases(draw):
    """(schedule spec, noise, prediction, sample() keyword arguments): mostly valid, each part sometimes not."""
    odd = draw(
        st.sampled_from(
            ["none"] * 6 + ["schedule", "sampler", "prediction", "steps", "dtype", "shape", "option"]
        )
    )
    spec = draw(SCHEDULE_SPECS if odd == "schedule" else GOOD_SCHEDULES)
    sampler = draw(BAD_SAMPLERS if odd == "sampler" else st.sampled_from(sorted(SAMPLERS)))
    prediction = draw(BAD_PREDICTIONS if odd == "prediction" else st.sampled_from(PREDICTIONS))
    steps = draw(STEPS if odd == "steps" else st.integers(1, 25))
    shape = draw(st.sampled_from([(), (0,), (0, 3)]) if odd == "shape" else SHAPES)
    dtype = torch.int64 if odd == "dtype" else draw(DTYPES)
    seed = draw(st.integers(0, 2**16))
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    noise = noise.to(dtype) if dtype.is_floating_point else noise.round().to(dtype)
    if draw(st.integers(0, 9)) == 0 and noise.numel() and dtype.is_floating_point:  # NaN / inf inputs
        noise.view(-1)[draw(st.integers(0, noise.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf]))
    kwargs = {"sampler": sampler, "steps": steps}
    takes = sorted(SAMPLERS[sampler].options) if isinstance(sampler, str) and sampler in SAMPLERS else []
    names = [*sorted(OPTION_VALUES), "colour"] if odd == "option" else takes
    for name in draw(st.lists(st.sampled_from(names), unique=True)) if names else []:
        kwargs[name] = 1 if name == "colour" else draw(OPTION_VALUES[name])
    if draw(st.integers(0, 3)) == 0:
        kwargs["spacing"] = draw(SPACINGS)
    if draw(st.integers(0, 3)) == 0:  # SDEdit from a clean input (or a mismatched one)
        kwargs["strength"] = draw(maybe_odd(st.floats(0, 1)))
        if draw(st.integers(0, 4)):
            kwargs["init"] = torch.zeros_like(noise) if draw(st.integers(0, 4)) else torch.zeros(3)
    if draw(st.integers(0, 4)) == 0 and noise.ndim:  # continuation: keep the first entries of the last axis
        mask = torch.zeros(noise.shape[-1], dtype=torch.bool)
        mask[: noise.shape[-1] // 2] = True
        kwargs["known"], kwargs["mask"] = (
            torch.zeros_like(noise),
            mask if draw(st.integers(0, 4)) else mask.float(),
        )
    gens = draw(st.sampled_from(["none", "one", "per item", "per item", "wrong count"]))
    if gens == "one":
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    elif gens != "none" and noise.ndim:
        n = noise.shape[0] + (gens == "wrong count")
        kwargs["generator"] = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    return spec, noise, prediction, kwargs


@settings(FUZZ, max_examples=300)
@given(case=sampling_cases())
def test_sample_returns_a_finite_result_or_a_clear_error(case):
    spec, noise, prediction, kwargs = case
    schedule = build_or_none(spec)
    assume(schedule is not None)
    try:
        out = sample(model, noise, schedule, prediction, **kwargs)
    except CLEAR as err:
        event(f"{type(err).__name__}: {str(err)[:40]}")
        return
    event("sampled")
    assert out.shape == noise.shape and out.dtype == noise.dtype
    if bool(torch.isfinite(noise).all()):
        assert bool(torch.isfinite(out).all()), (spec, prediction, kwargs, noise.dtype)


@FUZZ
@given(
    scale=maybe_odd(st.floats(-2, 20)),
    rescale=maybe_odd(st.floats(0, 1)),
    interval=st.tuples(maybe_odd(st.floats(0, 1)), maybe_odd(st.floats(0, 1))),
    batch=st.integers(1, 3),
    uncond_batch=st.sampled_from([1, "same", 2]),
)
def test_guidance_is_finite_or_a_clear_error(scale, rescale, interval, batch, uncond_batch):
    context = torch.randn(batch, 3, 4)
    u = batch if uncond_batch == "same" else uncond_batch
    try:
        guided = cfg(lambda x, t, context: x * context.mean((1, 2)).view(-1, 1) + t.view(-1, 1), {"context": context},
                     {"context": torch.zeros(u, 3, 4)}, scale=scale, rescale=rescale, interval=interval)  # fmt: skip
        out = guided(torch.randn(batch, 5), torch.full((batch,), 0.5))
    except CLEAR:
        return
    assert out.shape == (batch, 5) and bool(torch.isfinite(out).all())


# ----------------------------------------------------------------------------------------- pipelines

TEXT = st.text(st.characters(codec="utf-8"), max_size=60)  # any code point but the surrogates: controls too
PROMPTS = st.one_of(
    TEXT,
    TEXT,
    st.text(st.characters(codec="utf-8"), min_size=300, max_size=3000),  # over every encoder's token limit
    st.sampled_from(
        ["", " ", "\t\n", "\x00", "\x1b[31mred\x1b[0m", "a\u200bred\u00a0circle", "\ud800", "a \udcff b"]
    ),
    st.sampled_from(["🔴 moving ➡️", "ein roter Kreis", "красный круг", "赤い丸", "دائرة حمراء", "a" * 5000]),
    st.lists(TEXT, min_size=1, max_size=3),
    st.sampled_from([[], None, 3, ["a", 3], b"a red circle"]),
)
NEGATIVES = st.one_of(st.none(), TEXT, st.lists(TEXT, min_size=1, max_size=3))


@pytest.fixture(scope="module")
def shipped_audio():
    from mediadiff.pipelines import AudioPipeline

    pipe = AudioPipeline.from_pretrained("tones-dit")
    pipe.autocast = False
    return pipe


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    """A tiny random video pipeline with a 16-d BERT (a word-level tokenizer of 32 positions)."""
    from mediadiff.pipelines import VideoPipeline
    from mediadiff.text import load_text_encoder
    from mediadiff.video import CausalVideoVAE, DiT
    from tests.test_pipeline import randomize
    from tests.test_text import tiny_folder

    text = load_text_encoder(tiny_folder(tmp_path_factory.mktemp("text"), "bert"))
    vae = randomize(CausalVideoVAE(latent_channels=4, channels=(8, 8)), 1, std=0.3)
    dit = randomize(DiT(in_channels=4, width=32, depth=1, heads=2, context_dim=16), 2)
    defaults = {"num_frames": 5, "height": 16, "width": 16, "steps": 1, "fps": 6}
    pipe = VideoPipeline(dit.eval(), vae.eval(), text, FlowSchedule(), defaults=defaults)
    pipe.autocast = False
    return pipe


def check_prompts(pipe, prompt, negative, **settings) -> None:
    """``pipe(prompt, negative)`` is a finite output with one item per prompt, or a clear error."""
    try:
        out = pipe(prompt, negative_prompt=negative, seed=1, **settings)
    except CLEAR as err:
        event(f"{type(err).__name__}: {str(err)[:50]}")
        return
    event("generated")
    data = out.frames if hasattr(out, "frames") else out.audio
    assert len(data) == (1 if isinstance(prompt, str) else len(prompt))
    assert np.isfinite(data.astype(np.float64)).all()


@settings(
    FUZZ, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(prompt=PROMPTS, negative=NEGATIVES)
def test_random_prompts_to_the_shipped_audio_model(shipped_audio, prompt, negative):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a prompt over the token limit is cut, with a warning
        check_prompts(shipped_audio, prompt, negative, steps=1, seconds=0.25)


@settings(
    FUZZ, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(prompt=PROMPTS, negative=NEGATIVES)
def test_random_prompts_to_a_tiny_video_pipeline(tiny_video, prompt, negative):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_prompts(tiny_video, prompt, negative)


@pytest.fixture(scope="module")
def shipped_video():
    from mediadiff.pipelines import VideoPipeline

    return VideoPipeline.from_pretrained("shapes-dit")


@pytest.mark.parametrize(
    "prompt",
    ["\x00\x01\x02 a red circle \x7f", "🔴➡️ " * 200, "a\u0301\u0302\u0303 " * 40, "\u202eright\u202c"],
)
def test_odd_prompts_to_the_shipped_video_model(shipped_video, prompt):
    """The shipped video model (MiniLM's WordPiece tokenizer) on control characters, emoji, combining marks
    and a right-to-left override: a clip, in its default precision."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = shipped_video(prompt, seed=0, steps=1).frames
    assert frames.shape == (1, 17, 64, 64, 3) and frames.dtype == np.uint8
