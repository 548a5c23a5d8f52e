"""Samplers as plain functions over a grid of noise levels, and the public entry :func:`sample`.

Every sampler has the form ``sampler(denoiser, x, levels, *, generator=None, callback=None, **options)``:

- ``denoiser(x, level) -> x0``: the clean-sample estimate at ``level`` (see :func:`make_denoiser`);
- ``x``: ``[b ...]``, any rank, in the schedule's own scaling at ``levels[0]``;
- ``levels``: decreasing :class:`~mediadiff.diffusion.schedules.Level` s, ending at the clean level.

The state stays in the schedule's scaling ``x = alpha x0 + sigma eps`` and every update is
written with ratios of ``alpha`` and ``sigma`` (the exponential-integrator form of Lu et al.),
so grids that start at pure noise (``alpha = 0``: rectified flow at ``t = 1``, zero-terminal-SNR
VP schedules) work without a special case. In the variance-exploding variables
``x / alpha = x0 + s eps`` these are exactly k-diffusion's samplers; ``heun`` is written there.

Per-step coefficients are Python floats computed from the host-side grid, so no sampler reads a
tensor back to the host inside its loop. Randomness comes only from ``generator``: a
``torch.Generator`` or a list of them, one per sample, so a seed gives the same sample whatever
the batch; the deterministic samplers accept and ignore it, so samplers swap freely.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .editing import keep_known, noised, strength_levels
from .objectives import PREDICTIONS, pred_to_x0
from .schedules import Level, Schedule, _check_grid

__all__ = [
    "HEUN_SIGMA_MAX",
    "SAMPLERS",
    "SamplerSpec",
    "ddim",
    "ddpm",
    "default_grid",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "euler",
    "euler_a",
    "heun",
    "make_denoiser",
    "nfe",
    "randn",
    "randn_like",
    "sample",
    "unipc",
]

Denoiser = Callable[[torch.Tensor, Level], torch.Tensor]
Callback = Callable[[dict[str, Any]], None] | None
GeneratorLike = torch.Generator | Sequence[torch.Generator] | None


# --- randomness ---------------------------------------------------------------------------------


def randn(
    shape: Sequence[int],
    generator: GeneratorLike = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal noise of ``shape``; with a list of generators, sample ``i`` comes from ``generator[i]``.

    Noise is drawn on the generator's device and moved to ``device``, so a CPU generator gives the
    same numbers whether the model runs on CPU or CUDA.
    """
    shape = tuple(shape)
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        if not generator:  # an empty batch
            return torch.empty(shape, device=device, dtype=dtype)
        parts = [torch.randn(shape[1:], generator=g, device=g.device, dtype=dtype) for g in generator]
        return _move(torch.stack(parts), device)  # [b ...]
    gen_device = generator.device if generator is not None else device
    return _move(torch.randn(shape, generator=generator, device=gen_device, dtype=dtype), device)


def _move(t: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """Move noise to ``device``; CPU -> CUDA goes through pinned memory without blocking the host,
    so a CPU generator does not make the sampling loop wait for the GPU."""
    if device is None:
        return t
    device = torch.device(device)
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def randn_like(x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
    """:func:`randn` with the shape, device and dtype of ``x``."""
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)


# --- helpers ------------------------------------------------------------------------------------


def _pairs(levels: Sequence[Level]) -> list[tuple[Level, Level]]:
    if len(levels) < 2:
        raise ValueError("a grid needs at least two levels (one model level and the clean level)")
    if levels[-1].sigma != 0:
        raise ValueError(f"a grid must end at the clean level (sigma = 0), got {levels[-1]}")
    return list(itertools.pairwise(levels))


def _decay(cur: Level, nxt: Level) -> float:
    """``exp(-h) = (alpha sigma') / (alpha' sigma)`` with ``h = lambda' - lambda``; 0 from pure noise or to clean data."""
    return cur.alpha * nxt.sigma / (nxt.alpha * cur.sigma)


def _report(
    callback: Callback, i: int, x: torch.Tensor, denoised: torch.Tensor, cur: Level, nxt: Level
) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "denoised": denoised, "level": cur, "next": nxt})


def _first_order(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    eta: float,
    s_noise: float,
    generator: GeneratorLike,
    callback: Callback,
) -> torch.Tensor:
    """DDIM step with noise ``eta`` (Song et al. 2021, Eq. 12 and 16), written for any ``(alpha, sigma)``.

    x' = alpha' x0 + sqrt(sigma'^2 - c^2) eps + c z, with eps = (x - alpha x0) / sigma and
    c = min(sigma', eta sigma' sqrt(1 - exp(-2h))), i.e. k-diffusion's sigma_up times alpha'.
    """
    for i, (cur, nxt) in enumerate(_pairs(levels)):
        denoised = denoiser(x, cur)
        std = min(nxt.sigma, eta * nxt.sigma * math.sqrt(max(0.0, 1 - _decay(cur, nxt) ** 2))) if eta else 0.0
        dir_coef = math.sqrt(max(0.0, nxt.sigma**2 - std**2))  # weight of the predicted noise
        x = torch.add(
            x * (dir_coef / cur.sigma), denoised, alpha=nxt.alpha - dir_coef * cur.alpha / cur.sigma
        )
        if std > 0:
            x = x.add_(randn_like(x, generator), alpha=std * s_noise)  # x is our own tensor here
        _report(callback, i, x, denoised, cur, nxt)
    return x


# --- first-order samplers -----------------------------------------------------------------------


@torch.no_grad()
def ddim(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    *,
    eta: float = 0.0,
    generator: GeneratorLike = None,
    callback: Callback = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", Eq. 12).

    ``eta = 0`` is deterministic and equals Euler's method on the probability-flow ODE in the
    variance-exploding variables; ``eta = 1`` is ancestral DDPM sampling.
    """
    return _first_order(denoiser, x, levels, eta, 1.0, generator, callback)


@torch.no_grad()
def euler(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    *,
    generator: GeneratorLike = None,
    callback: Callback = None,
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE ``dx/ds = (x - D(x, s)) / s`` in the variance-exploding
    variables (Karras et al. 2022, Alg. 1 without the correction).

    In the schedule's scaling the step is ``x' = alpha' x0 + sigma' eps``: the same as DDIM with
    ``eta = 0`` and, for rectified flow, as ``x' = x + (t' - t) (eps - x0)``.
    """
    return _first_order(denoiser, x, levels, 0.0, 1.0, None, callback)


@torch.no_grad()
def ddpm(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    *,
    generator: GeneratorLike = None,
    callback: Callback = None,
) -> torch.Tensor:
    """Ancestral sampling from the DDPM posterior ``q(x' | x, x0)`` (Ho et al. 2020, Eq. 6-7).

    Its mean and variance (the "fixed small" ``beta_tilde``) are DDIM's with ``eta = 1``.
    """
    return _first_order(denoiser, x, levels, 1.0, 1.0, generator, callback)


@torch.no_grad()
def euler_a(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    generator: GeneratorLike = None,
    callback: Callback = None,
) -> torch.Tensor:
    """Euler ancestral (k-diffusion): an Euler step down to ``s_down`` then fresh noise ``s_up``.

    ``s_up = min(s', eta sqrt(s'^2 (s^2 - s'^2) / s^2))``, ``s_down = sqrt(s'^2 - s_up^2)``;
    ``s_noise`` scales the fresh noise only.
    """
    return _first_order(denoiser, x, levels, eta, s_noise, generator, callback)


# --- second order -------------------------------------------------------------------------------


@torch.no_grad()
def heun(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    *,
    generator: GeneratorLike = None,
    callback: Callback = None,
) -> torch.Tensor:
    """Heun's method on the probability-flow ODE (Karras et al. 2022, Alg. 1), two evaluations per step.

    The last step (to ``s = 0``) and a first step from pure noise (``s = inf``) are Euler steps.
    """
    for i, (cur, nxt) in enumerate(_pairs(levels)):
        denoised = denoiser(x, cur)
        # Euler step: x_e = alpha' x0 + sigma' eps
        x_euler = torch.add(x * (nxt.sigma / cur.sigma), denoised, alpha=nxt.alpha * (1 - _decay(cur, nxt)))
        if nxt.sigma == 0 or cur.alpha == 0:
            x = x_euler
        else:
            # In the VE variables: x'/a' = x/a + (s' - s)/2 (d + d_e) with d = (x/a - x0)/s and
            # d_e = (x_e/a' - x0_e)/s'. Expanded into four scaled terms so it fuses into add(alpha=).
            s, s_next = cur.s, nxt.s
            half = (s_next - s) / 2
            denoised_e = denoiser(x_euler, nxt)
            x = torch.add(x * (nxt.alpha / cur.alpha * (1 + half / s)), denoised, alpha=-nxt.alpha * half / s)
            x = x.add_(x_euler, alpha=half / s_next).add_(denoised_e, alpha=-nxt.alpha * half / s_next)
        _report(callback, i, x, denoised, cur, nxt)
    return x


def _sde_first_order(
    x: torch.Tensor, denoised: torch.Tensor, cur: Level, nxt: Level, eta: float
) -> torch.Tensor:
    """The noise-free part of a first-order SDE-DPM-Solver++ step (``eta = 0``: the ODE step)."""
    decay = _decay(cur, nxt)  # e^{-h}
    return torch.add(
        x * ((nxt.sigma / cur.sigma) * decay**eta), denoised, alpha=nxt.alpha * (1 - decay ** (1 + eta))
    )


def _sde_noise(
    x: torch.Tensor, cur: Level, nxt: Level, eta: float, s_noise: float, generator: GeneratorLike
) -> torch.Tensor:
    """Add the fresh noise ``sigma' sqrt(1 - e^{-2 eta h}) z`` of an SDE-DPM-Solver++ step."""
    if eta > 0 and nxt.sigma > 0:
        std = nxt.sigma * math.sqrt(1 - _decay(cur, nxt) ** (2 * eta)) * s_noise
        x = x.add_(randn_like(x, generator), alpha=std)  # x is our own tensor here
    return x


def _dpmpp_2m(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    eta: float,
    s_noise: float,
    generator: GeneratorLike,
    callback: Callback,
) -> torch.Tensor:
    prev: tuple[torch.Tensor, float] | None = None  # (x0 estimate, h) of the previous step
    for i, (cur, nxt) in enumerate(_pairs(levels)):
        denoised = denoiser(x, cur)
        h = nxt.lam - cur.lam
        x = _sde_first_order(x, denoised, cur, nxt, eta)
        if prev is not None and nxt.sigma > 0 and math.isfinite(prev[1]):
            r = prev[1] / h  # midpoint correction D1 / 2 = (x0 - x0_prev) / (2 r)
            x = x.add_(denoised - prev[0], alpha=nxt.alpha * (1 - _decay(cur, nxt) ** (1 + eta)) * 0.5 / r)
        x = _sde_noise(x, cur, nxt, eta, s_noise, generator)
        prev = (denoised, h)
        _report(callback, i, x, denoised, cur, nxt)
    return x


@torch.no_grad()
def dpmpp_2m(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    *,
    generator: GeneratorLike = None,
    callback: Callback = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), data prediction, multistep (Lu et al. 2022, "DPM-Solver++", Alg. 2).

    ``x' = (sigma'/sigma) x + alpha' (1 - e^-h) D`` with ``D = (1 + 1/2r) x0 - (1/2r) x0_prev``,
    ``r = h_prev / h``; first order on the first step and on the last step to ``sigma = 0``.
    """
    return _dpmpp_2m(denoiser, x, levels, 0.0, 1.0, None, callback)


@torch.no_grad()
def dpmpp_2m_sde(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    generator: GeneratorLike = None,
    callback: Callback = None,
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M), midpoint form (Lu et al. 2022, Appendix; diffusers' ``sde-dpmsolver++``).

    ``x' = (sigma'/sigma) e^{-eta h} x + alpha' (1 - e^{-(1+eta) h}) D + sigma' sqrt(1 - e^{-2 eta h}) z``;
    ``eta = 0`` is the ODE solver :func:`dpmpp_2m`.
    """
    return _dpmpp_2m(denoiser, x, levels, eta, s_noise, generator, callback)


@torch.no_grad()
def dpmpp_3m_sde(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    generator: GeneratorLike = None,
    callback: Callback = None,
) -> torch.Tensor:
    """SDE-DPM-Solver++(3M): third-order multistep with noise (k-diffusion's ``sample_dpmpp_3m_sde``,
    after Lu et al. 2022), with ``h_eta = (1 + eta) h``, ``phi_2 = (e^{-h_eta} - 1) / h_eta + 1``,
    ``phi_3 = phi_2 / h_eta - 1/2``. The last step to ``sigma = 0`` returns the x0 estimate.
    """
    hist: list[tuple[torch.Tensor, float]] = []  # (x0 estimate, h) of previous steps, finite h only
    for i, (cur, nxt) in enumerate(_pairs(levels)):
        denoised = denoiser(x, cur)
        if nxt.sigma == 0:
            x = nxt.alpha * denoised
            _report(callback, i, x, denoised, cur, nxt)
            continue
        h = nxt.lam - cur.lam
        x = _sde_first_order(x, denoised, cur, nxt, eta)
        if math.isfinite(h) and hist:
            h_eta = h * (eta + 1)
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if len(hist) >= 2:
                (d_1, h_1), (d_2, h_2) = hist[-1], hist[-2]
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - d_1) / r0
                d1_1 = (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + nxt.alpha * (phi_2 * d1 - phi_3 * d2)
            else:
                d_1, h_1 = hist[-1]
                x = x + (nxt.alpha * phi_2 * h / h_1) * (denoised - d_1)
        x = _sde_noise(x, cur, nxt, eta, s_noise, generator)
        if math.isfinite(h):
            hist = [*hist[-1:], (denoised, h)]
        else:
            hist = []
        _report(callback, i, x, denoised, cur, nxt)
    return x


# --- UniPC --------------------------------------------------------------------------------------


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting for the tiny (<= 3x3) UniPC systems."""
    n = len(b)
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[piv] = m[piv], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            m[r] = [vr - f * vc for vr, vc in zip(m[r], m[col], strict=True)]
    out = [0.0] * n
    for r in reversed(range(n)):
        out[r] = (m[r][n] - sum(m[r][c] * out[c] for c in range(r + 1, n))) / m[r][r]
    return out


def _unipc_terms(
    lam_s0: float, lam_t: float, lam_prev: list[float], order: int, variant: str
) -> tuple[float, float, list[float], list[list[float]], list[float]]:
    """Coefficients of UniP / UniC in data prediction (Zhao et al. 2023, "UniPC", Alg. 2 and 3).

    Returns ``(h_phi_1, B_h, r, R, b)``: ``h phi_1(h) = e^{-h} - 1``, ``B(h)`` (bh1: ``-h``,
    bh2: ``e^{-h} - 1``), the step ratios ``r_k = (lambda_k - lambda_s0) / h`` of earlier points,
    and the linear system ``R rho = b`` with ``R[i][k] = r_k^i`` (``r`` extended by 1) and
    ``b_i = i! phi_{i+1}(h) h / B(h)`` (their Eq. 8 / Thm. 3.1).
    """
    h = lam_t - lam_s0
    hh = -h
    h_phi_1 = math.expm1(hh)
    # bh1's B(h) = -h is unbounded for a step from pure noise (h = inf): there, bh2's e^{-h} - 1 = -1 (the
    # two agree to first order as h -> 0), so the UniC correction of that step stays finite
    b_h = hh if variant == "bh1" and math.isfinite(hh) else h_phi_1
    rks = [(lam - lam_s0) / h for lam in lam_prev] + [1.0]
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    big_r, b = [], []
    for i in range(1, order + 1):
        big_r.append([rk ** (i - 1) for rk in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, rks[:-1], big_r, b


@torch.no_grad()
def unipc(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: Sequence[Level],
    *,
    order: int = 2,
    variant: str = "bh2",
    corrector: bool = True,
    generator: GeneratorLike = None,
    callback: Callback = None,
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023): the UniP-``order`` multistep predictor plus the UniC corrector,
    which reuses the model evaluation at the new point, so it adds no evaluations.

    Data prediction, ``B(h)`` of type ``variant`` (bh1 | bh2), warm-up and lower order on the last
    steps as in diffusers' ``UniPCMultistepScheduler``. ``order``: 1 to 3.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"unipc order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unipc variant must be 'bh1' or 'bh2', got {variant!r}")
    pairs = _pairs(levels)
    n = len(pairs)
    hist: list[tuple[float, torch.Tensor]] = []  # (lambda, x0 estimate) at the levels visited, newest last
    last: tuple[torch.Tensor, Level, Level, int] | None = None  # x, from, to and order of the last predictor
    for i, (cur, nxt) in enumerate(pairs):
        denoised = denoiser(x, cur)
        if corrector and last is not None:  # UniC: correct x with the evaluation just made
            x_last, s0, t, p = last
            x = _uni_update(x_last, s0, t, hist, p, variant, model_t=denoised)
        hist = [*hist, (cur.lam, denoised)][-order:]
        p = min(order, n - i, len(hist))  # warm-up, and lower order towards the end
        last = (x, cur, nxt, p)
        x = _uni_update(x, cur, nxt, hist, p, variant)  # UniP
        _report(callback, i, x, denoised, cur, nxt)
    return x


def _uni_update(
    x: torch.Tensor,
    s0: Level,
    t: Level,
    hist: list[tuple[float, torch.Tensor]],
    order: int,
    variant: str,
    model_t: torch.Tensor | None = None,
) -> torch.Tensor:
    """One UniP step from ``s0`` to ``t`` (``model_t is None``), or the UniC correction of the point at
    ``t`` given its fresh evaluation ``model_t``. ``hist[-1]`` is the evaluation at ``s0``."""
    lam_s0, m0 = hist[-1]
    # earlier points, newest first; only finite log-SNRs, and none for a step from pure noise
    k_max = order - 1 if math.isfinite(s0.lam) and math.isfinite(t.lam) else 0
    earlier = [(lam, m) for lam, m in hist[:-1][::-1][:k_max] if math.isfinite(lam)]
    order = len(earlier) + 1
    h_phi_1, b_h, rks, big_r, b = _unipc_terms(lam_s0, t.lam, [lam for lam, _ in earlier], order, variant)
    base = (t.sigma / s0.sigma) * x - (t.alpha * h_phi_1) * m0
    d1s = [(m - m0) / rk for (_, m), rk in zip(earlier, rks, strict=True)]
    if model_t is None:  # predictor: rho from the (order - 1) x (order - 1) leading system
        if order == 1:
            return base
        rhos = [0.5] if order == 2 else _solve([row[:-1] for row in big_r[:-1]], b[:-1])
        res = sum(rho * d for rho, d in zip(rhos, d1s, strict=True))
        return base - (t.alpha * b_h) * res
    rhos = [0.5] if order == 1 else _solve(big_r, b)  # corrector: the full system
    res = sum((rho * d for rho, d in zip(rhos[:-1], d1s, strict=True)), torch.zeros_like(m0))
    return base - (t.alpha * b_h) * (res + rhos[-1] * (model_t - m0))


# --- registry and the public entry --------------------------------------------------------------


# Karras et al. 2022, Table 1: the sigma_max = 80 from which their Heun sampler (Alg. 1 and 2) starts
# on VP and VE models alike. The start then holds alpha = 1 / sqrt(1 + 80^2) = 1.2% of the signal,
# which the noise leaves out (a mean bias of 1.2% of the data mean: tests/test_oracle.py bounds it).
HEUN_SIGMA_MAX = 80.0
MAX_NOISE_SCALE = 100.0  # eta and s_noise beyond this are typos (1 is ancestral sampling's own)


@dataclass(frozen=True)
class SamplerSpec:
    """What :func:`sample` needs to know about one sampler, so it never inspects the function.

    ``fn(denoiser, x, levels, *, generator=None, callback=None, **options)`` is the sampler;
    ``options`` are the keyword arguments it takes beyond ``generator`` and ``callback``.
    """

    fn: Callable[..., torch.Tensor]
    options: frozenset[str] = frozenset()  # keyword options sample() passes on (eta, s_noise, order, ...)
    stochastic: bool = False  # draws fresh noise from ``generator`` at each step
    order: int = 1  # order of convergence of the deterministic part (its global error ~ steps^-order)
    evals_per_step: int = 1  # model evaluations per step (heun: 2, except where it takes an Euler step)
    # Cap on the first *finite* noise level s = sigma / alpha of the default grid. Heun's trapezoid rule
    # in s is inaccurate over a step from a huge s (VP cosine: s = 2e4) whatever the step count; a
    # default grid that starts higher is replaced by a Karras grid from this level (see :meth:`grid`).
    # A grid from pure noise (s = inf) is kept: the first step from there is an exact Euler step.
    sigma_max: float | None = None

    def grid(self, schedule: Schedule, steps: int) -> list[Level]:
        """The default grid of this sampler on ``schedule``: ``schedule.grid(steps)``, unless that starts
        at a finite noise level above :attr:`sigma_max`; then the Karras grid (Karras et al. 2022, Eq. 5,
        ``rho = 7``) from ``min(s_max, sigma_max)`` down to the schedule's ``s_min``, as k-diffusion and
        EDM run Heun. Returns ``steps + 1`` levels ending at the clean level.
        """
        levels = schedule.grid(steps)
        first = levels[0].s
        if self.sigma_max is None or math.isinf(first) or first <= self.sigma_max:
            return levels
        s_min, s_max = schedule.s_range()
        return schedule.grid(steps, "karras", sigma_min=s_min, sigma_max=min(s_max, self.sigma_max))


_NOISE = frozenset({"eta", "s_noise"})
SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(ddpm, stochastic=True),
    "ddim": SamplerSpec(ddim, frozenset({"eta"})),  # stochastic only with eta > 0
    "euler": SamplerSpec(euler),
    "euler_a": SamplerSpec(euler_a, _NOISE, stochastic=True),
    "heun": SamplerSpec(heun, order=2, evals_per_step=2, sigma_max=HEUN_SIGMA_MAX),
    "dpmpp_2m": SamplerSpec(dpmpp_2m, order=2),
    "dpmpp_2m_sde": SamplerSpec(dpmpp_2m_sde, _NOISE, stochastic=True, order=2),
    "dpmpp_3m_sde": SamplerSpec(dpmpp_3m_sde, _NOISE, stochastic=True, order=3),
    # UniP-2 with the UniC corrector converges with order 3 (Zhao et al. 2023, Thm. 3.1)
    "unipc": SamplerSpec(unipc, frozenset({"order", "variant", "corrector"}), order=3),
}


def nfe(sampler: str, steps: int) -> int:
    """Model evaluations that ``sampler`` makes over ``steps`` steps from a finite noise level."""
    spec = _spec(sampler)
    return steps if spec.evals_per_step == 1 else 2 * steps - 1


def _spec(sampler: str) -> SamplerSpec:
    spec = SAMPLERS.get(sampler) if isinstance(sampler, str) else None
    if spec is None:
        raise ValueError(f"unknown sampler {sampler!r}; known: {sorted(SAMPLERS)}")
    return spec


def default_grid(schedule: Schedule, sampler: str, steps: int) -> list[Level]:
    """The grid :func:`sample` uses when it is given only ``steps``: :meth:`SamplerSpec.grid`."""
    return _spec(sampler).grid(schedule, steps)


def make_denoiser(
    model: Callable[..., torch.Tensor], prediction: str, cond: dict[str, Any] | None = None
) -> Denoiser:
    """Turn ``model(x, t, **cond) -> prediction`` into ``denoiser(x, level) -> x0``.

    ``t`` reaches the model as ``[b]`` float32 (float64 when ``x`` is float64).
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {prediction!r}; known: {list(PREDICTIONS)}")
    cond = cond or {}

    def denoiser(x: torch.Tensor, level: Level) -> torch.Tensor:
        t_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        t = torch.full((x.shape[0],), level.t, device=x.device, dtype=t_dtype)  # [b]
        pred = model(x, t, **cond).to(x.dtype)
        if prediction == "eps":  # (x - sigma eps) / alpha, fused; 1 / alpha may not fit a 16-bit float
            work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
            x0 = torch.add(x.to(work) * (1 / level.alpha), pred.to(work), alpha=-level.sigma / level.alpha)
            return x0.to(x.dtype)
        return pred_to_x0(pred, x, level.alpha, level.sigma, prediction)

    return denoiser


@torch.no_grad()
def sample(
    model: Callable[..., torch.Tensor],
    noise: torch.Tensor,
    schedule: Schedule,
    prediction: str,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    *,
    spacing: str | None = None,
    timesteps: Sequence[float] | Callable[[int], Sequence[float]] | None = None,
    levels: Sequence[Level] | None = None,
    generator: GeneratorLike = None,
    callback: Callback = None,
    cond: dict[str, Any] | None = None,
    progress: bool = False,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
    known: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    scale_noise: bool = True,
    **options: Any,
) -> torch.Tensor:
    """Draw samples by integrating from ``noise`` down to clean data.

    model: ``model(x, t, **cond) -> prediction`` with ``x`` in the schedule's scaling and ``t: [b]``
        in [0, 1]; prediction: ``eps | x0 | v | flow``.
    noise: ``[b ...]`` standard normal (any rank); it is scaled by ``sqrt(alpha^2 + sigma^2)`` at the
        first level, the marginal standard deviation for unit-variance data (``scale_noise=False``: taken
        as it is, as diffusers' flow pipelines take unit noise at a first level just below pure noise).
    sampler: a name in :data:`SAMPLERS`; ``options`` go to it (``eta``, ``s_noise``, ``order``, ...), and
        one it does not take (its :attr:`SamplerSpec.options`) is a ``ValueError``.
    steps / spacing: the schedule's grid (:meth:`Schedule.grid`) of that spacing; without a spacing,
        the sampler's default grid (:meth:`SamplerSpec.grid`: the schedule's default, except that
        Heun starts at most at ``s = 80``); or give explicit decreasing ``timesteps`` in [0, 1] (or a
        function ``steps -> timesteps``, e.g. another library's grid rule), or full ``levels``.
    generator: ``torch.Generator`` or one per sample, for the stochastic samplers.
    callback: called after each step with ``{"i", "x", "denoised", "level", "next"}``.
    init, strength: SDEdit (:mod:`~mediadiff.diffusion.editing`): start from the clean ``init`` (``[b ...]``
        like ``noise``) noised to the level that ``strength`` picks on the grid (its last
        ``floor(strength * steps)`` steps); ``strength`` 0 returns ``init``.
    known, mask: hold the sample to the clean ``known`` where the bool ``mask`` (broadcastable to
        ``noise``) is True, at every step (the replacement method: continuation, inpainting).
    Returns ``[b ...]`` like ``noise``.
    """
    spec = _spec(sampler)
    unknown = set(options) - spec.options
    if unknown:
        takes = f"it takes {sorted(spec.options)}" if spec.options else "it takes no options"
        raise ValueError(f"sampler {sampler!r} does not take {sorted(unknown)}; {takes}")
    if not isinstance(noise, torch.Tensor) or not torch.is_floating_point(noise):
        raise TypeError(
            f"noise must be a floating-point tensor, got {getattr(noise, 'dtype', type(noise).__name__)}"
        )
    if noise.ndim == 0:
        raise ValueError("noise must have a batch axis, [b ...]; got a 0-d tensor")
    for name in ("eta", "s_noise"):
        value = options.get(name, 0.0)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 <= value <= MAX_NOISE_SCALE
        ):
            raise ValueError(f"{name} must be a number in [0, {MAX_NOISE_SCALE:g}], got {value!r}")
    if levels is None:
        if callable(timesteps):
            levels = schedule.levels(timesteps(steps))
        elif timesteps is not None:
            levels = schedule.levels(timesteps)
        elif spacing is not None:
            levels = schedule.grid(steps, spacing)
        else:
            levels = spec.grid(schedule, steps)
    levels = list(levels)
    if not levels or not all(isinstance(lv, Level) for lv in levels):
        raise TypeError("levels must be a non-empty list of Level (t, alpha, sigma)")
    _check_grid(levels, "the levels")
    if init is not None:
        if init.shape != noise.shape:
            raise ValueError(f"init {tuple(init.shape)} and noise {tuple(noise.shape)} must have one shape")
        levels = strength_levels(levels, strength)
        if len(levels) == 1:  # strength 0: no step to take
            return init.to(noise.dtype).clone()
    elif strength != 1.0:
        raise ValueError(f"strength {strength!r} needs an init to start from")
    if (known is None) != (mask is None):
        raise ValueError("known and mask go together: give both or neither")
    if known is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
        for name, value in (("known", known), ("mask", mask)):
            try:
                fits = torch.broadcast_shapes(value.shape, noise.shape) == noise.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(
                    f"{name} {tuple(value.shape)} does not broadcast to the noise {tuple(noise.shape)}"
                )
    if prediction == "eps" and levels[0].alpha == 0:
        raise ValueError(
            f"eps prediction cannot recover x0 at pure noise (alpha = 0 at t = {levels[0].t}); "
            "use v, x0 or flow prediction with this schedule or grid"
        )
    denoiser = make_denoiser(model, prediction, cond)
    if init is not None:
        x = noised(init.to(noise.dtype), noise, levels[0])  # [b ...]
    elif scale_noise:
        x = noise * math.sqrt(levels[0].alpha ** 2 + levels[0].sigma ** 2)
    else:
        x = noise.clone()
    if known is not None:
        known = known.to(noise.dtype)
        x = torch.where(mask, noised(known, noise, levels[0]), x)  # [b ...] known entries start on their path
        denoiser = keep_known(denoiser, known, mask)
    kwargs = dict(options, generator=generator)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(levels) - 1, desc=sampler, unit="step")
        user_cb = callback

        def callback(info: dict[str, Any]) -> None:
            bar.update(1)
            if user_cb is not None:
                user_cb(info)

        try:
            return spec.fn(denoiser, x, levels, callback=callback, **kwargs)
        finally:
            bar.close()
    return spec.fn(denoiser, x, levels, callback=callback, **kwargs)
