"""Noise schedules on continuous time ``t in [0, 1]``: ``x_t = alpha(t) * x0 + sigma(t) * eps``.

Every schedule also has a variance-exploding reading: dividing by ``alpha`` gives
``x_t / alpha = x0 + s * eps`` with the noise level ``s = sigma / alpha`` (k-diffusion's sigma)
and the half log-SNR ``lambda = log(alpha / sigma) = -log(s)``. The samplers only ever see a grid
of :class:`Level` s, so one set of samplers serves every schedule.

A sampling grid is a decreasing list of levels that always ends at the clean level
``Level(t=0, alpha=1, sigma=0)``, which the model is never evaluated at.
"""

from __future__ import annotations

import inspect
import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

__all__ = [
    "SCHEDULES",
    "CosineSchedule",
    "EDMSchedule",
    "FlowSchedule",
    "Level",
    "Schedule",
    "VPSchedule",
    "build_schedule",
    "exponential_sigmas",
    "karras_sigmas",
    "vp_timesteps",
]


class Level(NamedTuple):
    """One noise level of a sampling grid: model time ``t`` and the pair ``(alpha, sigma)``."""

    t: float
    alpha: float
    sigma: float

    @property
    def s(self) -> float:
        """Variance-exploding noise level ``sigma / alpha`` (``inf`` where ``alpha == 0``)."""
        return math.inf if self.alpha == 0 else self.sigma / self.alpha

    @property
    def lam(self) -> float:
        """Half log-SNR ``log(alpha / sigma)``; ``-inf`` for pure noise, ``+inf`` for clean data."""
        if self.alpha == 0:
            return -math.inf
        if self.sigma == 0:
            return math.inf
        return math.log(self.alpha) - math.log(self.sigma)


CLEAN = Level(0.0, 1.0, 0.0)
MAX_TRAIN_TIMESTEPS = 1_000_000  # a VP table longer than this is a mistake, not a schedule (1000 is usual)
# Noise levels s = sigma / alpha a schedule may span: far beyond any model (EDM: 0.002 to 80; VP: 0.03 to
# 2e4), and narrow enough that float64 keeps every grid of them (and its t) distinct and finite.
S_BOUNDS = (1e-8, 1e8)


def _number(
    value: Any, name: str, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False
) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); ValueError naming ``name``
    otherwise (TypeError for a value that is not a real number)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    below = v <= lo if lo_open else v < lo
    if not math.isfinite(v) or below or v > hi:
        if hi == math.inf:
            bound = f"{'>' if lo_open else '>='} {lo:g}"
        else:
            bound = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def _count(value: Any, name: str, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]``; TypeError for a non-integer (a bool too), ValueError out of range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be >= {lo}{'' if hi is None else f' and <= {hi}'}, got {value}")
    return int(value)


def _check_grid(levels: list[Level], what: str) -> list[Level]:
    """``levels`` if they are a grid: every level finite with ``t`` in [0, 1], the noise ``s`` strictly
    decreasing down to the clean level (so no step has zero length); else a ValueError naming ``what``."""
    s = [lv.s for lv in levels]
    finite = all(math.isfinite(lv.t) and math.isfinite(lv.alpha) and math.isfinite(lv.sigma) for lv in levels)
    if not finite or any(not b < a for a, b in itertools.pairwise(s)):
        shown = ", ".join(f"{v:.4g}" for v in s[:8]) + (", ..." if len(s) > 8 else "")
        raise ValueError(
            f"{what} do not give strictly decreasing noise levels (s = {shown}): two steps fall on one level "
            "(too many steps for this schedule's range, or bounds outside it)"
        )
    return levels


def karras_sigmas(s_min: float, s_max: float, n: int, rho: float = 7.0) -> list[float]:
    """``n`` noise levels from ``s_max`` down to ``s_min``, evenly spaced in ``s ** (1 / rho)``.

    Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", Eq. 5.
    """
    rho = _number(rho, "rho", 0.1, 100.0)
    if n == 1:
        return [float(s_max)]
    lo, hi = s_min ** (1 / rho), s_max ** (1 / rho)
    return [(hi + i / (n - 1) * (lo - hi)) ** rho for i in range(n)]


def exponential_sigmas(s_min: float, s_max: float, n: int) -> list[float]:
    """``n`` noise levels from ``s_max`` down to ``s_min``, evenly spaced in ``log s`` (= in log-SNR)."""
    if n == 1:
        return [float(s_max)]
    lo, hi = math.log(s_min), math.log(s_max)
    return [math.exp(hi + i / (n - 1) * (lo - hi)) for i in range(n)]


def vp_timesteps(steps: int, num_train_timesteps: int, spacing: str) -> list[float]:
    """Discrete timesteps, decreasing, as defined in Lin et al. 2023, "Common Diffusion Noise
    Schedules and Sample Steps are Flawed", Table 2 (and diffusers' ``DDIMScheduler``).

    - ``linspace``: ``round(linspace(0, N - 1, steps))``, covers both ends;
    - ``leading``: ``arange(steps) * (N // steps)``, the legacy Stable Diffusion grid;
    - ``trailing``: ``round(arange(N, 0, -N / steps)) - 1``, starts at the last timestep.
    """
    n = num_train_timesteps
    steps = _count(steps, "steps")
    if steps > n:
        raise ValueError(f"steps ({steps}) cannot exceed num_train_timesteps ({n})")
    if spacing == "linspace":
        if steps == 1:
            return [float(n - 1)]
        ts = [float(round(i * (n - 1) / (steps - 1))) for i in range(steps)]
    elif spacing == "leading":
        ratio = n // steps
        ts = [float(i * ratio) for i in range(steps)]
    elif spacing == "trailing":
        ratio = n / steps
        ts = [float(round(n - i * ratio) - 1) for i in range(steps)]
        return ts
    else:
        raise ValueError(f"unknown spacing {spacing!r}; known: ['leading', 'linspace', 'trailing']")
    return ts[::-1]


def _rescale_zero_terminal(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1 on ``alpha_bar``: shift and scale ``sqrt(alpha_bar)`` so that the last
    timestep is pure noise and the first keeps its value. ``[n] -> [n]``."""
    sqrt_ab = alphas_cumprod.sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    return ((sqrt_ab - last) * (first / (first - last))) ** 2


def _alpha_sigma_from_log_s(log_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VP pair from ``log s``: ``alpha^2 = sigmoid(-2 log s)``, ``sigma^2 = sigmoid(2 log s)``; exact at ``s = 0, inf``."""
    return torch.sigmoid(-2 * log_s).sqrt(), torch.sigmoid(2 * log_s).sqrt()


class Schedule:
    """Base class: a map ``t -> (alpha, sigma)`` plus its inverse ``s -> t`` and sampling grids.

    Subclasses implement :meth:`alpha_sigma`, :meth:`t_from_s`, :meth:`s_range` and
    :meth:`_spaced_ts`.
    """

    default_spacing: str = "karras"
    spacings: tuple[str, ...] = ("karras", "exponential")

    # --- the map --------------------------------------------------------------------------------
    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha(t), sigma(t))`` for a tensor of times, computed in float64, on ``t``'s device."""
        raise NotImplementedError

    def t_from_s(self, s: torch.Tensor) -> torch.Tensor:
        """Inverse map: the time at which the noise level ``sigma / alpha`` equals ``s`` (clamped to [0, 1])."""
        raise NotImplementedError

    def s_range(self) -> tuple[float, float]:
        """Finite ``(s_min, s_max)`` this schedule spans; the default bounds of Karras / exponential grids."""
        raise NotImplementedError

    def _spaced_ts(self, steps: int, spacing: str) -> list[float]:
        raise NotImplementedError

    def shift_sigmas(self, sigmas: list[float]) -> list[float]:
        """The schedule's warp of a Karras / exponential grid of noise levels ``s``; none here."""
        return sigmas

    # --- grids ----------------------------------------------------------------------------------
    def level(self, t: float) -> Level:
        """The :class:`Level` at time ``t`` (computed in float64 on the CPU)."""
        a, s = self.alpha_sigma(torch.tensor([float(t)], dtype=torch.float64))
        return Level(float(t), float(a[0]), float(s[0]))

    def levels(self, timesteps: Sequence[float]) -> list[Level]:
        """Levels at the given decreasing times, followed by the clean level."""
        ts = [float(t) for t in timesteps]
        if not all(math.isfinite(t) for t in ts):
            raise ValueError(f"timesteps must be finite, got {ts}")
        if any(b >= a for a, b in itertools.pairwise(ts)):
            raise ValueError(f"timesteps must be strictly decreasing, got {ts}")
        if not ts or ts[-1] < 0 or ts[0] > 1:
            raise ValueError(f"timesteps must be a non-empty list in [0, 1], got {ts}")
        a, s = self.alpha_sigma(torch.tensor(ts, dtype=torch.float64))
        levels = [Level(t, float(ai), float(si)) for t, ai, si in zip(ts, a, s, strict=True)] + [CLEAN]
        return _check_grid(levels, f"timesteps {ts}" if len(ts) <= 8 else f"{len(ts)} timesteps")

    def levels_from_s(self, sigmas: Sequence[float]) -> list[Level]:
        """Levels at the given decreasing variance-exploding noise levels, followed by the clean level."""
        values = [float(v) for v in sigmas]
        if not values or not all(v > 0 for v in values) or any(b >= a for a, b in itertools.pairwise(values)):
            raise ValueError(
                f"noise levels must be a non-empty, strictly decreasing list of s > 0, got {values}"
            )
        s = torch.tensor(values, dtype=torch.float64)
        ts = self.t_from_s(s)
        a, sig = self.alpha_sigma(ts)
        levels = [Level(float(t), float(ai), float(si)) for t, ai, si in zip(ts, a, sig, strict=True)] + [
            CLEAN
        ]
        return _check_grid(levels, f"{len(values)} noise levels from {values[0]:.4g} to {values[-1]:.4g}")

    def grid(
        self,
        steps: int,
        spacing: str | None = None,
        *,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        rho: float = 7.0,
    ) -> list[Level]:
        """A sampling grid of ``steps`` model levels plus the clean level (``steps + 1`` in all).

        ``spacing``: one of :attr:`spacings` (default :attr:`default_spacing`). ``karras`` and
        ``exponential`` space the variance-exploding level ``s`` between ``sigma_min`` and
        ``sigma_max`` (default: :meth:`s_range`), then apply the schedule's :meth:`shift_sigmas`
        (:class:`FlowSchedule`'s shift); ``rho`` is Karras' exponent.
        """
        steps = _count(steps, "steps")
        spacing = spacing or self.default_spacing
        if not isinstance(spacing, str) or spacing not in self.spacings:
            raise ValueError(
                f"spacing {spacing!r} is not available for {type(self).__name__}; known: {sorted(self.spacings)}"
            )
        if spacing in ("karras", "exponential"):
            lo, hi = self.s_range()
            lo = lo if sigma_min is None else _number(sigma_min, "sigma_min", *S_BOUNDS)
            hi = hi if sigma_max is None else _number(sigma_max, "sigma_max", *S_BOUNDS)
            if not 0 < lo < hi < math.inf:
                raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {lo}, {hi}")
            sig = (
                karras_sigmas(lo, hi, steps, rho)
                if spacing == "karras"
                else exponential_sigmas(lo, hi, steps)
            )
            return self.levels_from_s(self.shift_sigmas(sig))
        return self.levels(self._spaced_ts(steps, spacing))

    def to_config(self) -> dict:
        """``{"type": ..., "config": {...}}``, the recipe form that :func:`build_schedule` reads back."""
        raise NotImplementedError


class VPSchedule(Schedule):
    """Discrete variance-preserving (DDPM) schedule read at continuous time.

    Ho et al. 2020 (``linear``), Rombach et al. 2022 (``scaled_linear``), Nichol & Dhariwal 2021
    (``cosine``, i.e. diffusers' ``squaredcos_cap_v2``). ``alpha_bar_k = prod_{i<=k} (1 - beta_i)``,
    ``alpha = sqrt(alpha_bar)``, ``sigma = sqrt(1 - alpha_bar)``. Timestep ``k`` sits at
    ``t = k / num_train_timesteps``; between timesteps ``log s`` is interpolated linearly (as
    k-diffusion does, and as diffusers does when it maps a noise level back to a timestep).

    ``rescale_zero_terminal_snr``: Lin et al. 2023, Algorithm 1; the last timestep is then pure
    noise (``alpha = 0``), which needs ``v``, ``x0`` or ``flow`` prediction.

    ``snr_shift_scale`` ``k``: CogVideoX's SNR shift (Yang et al. 2024, "CogVideoX", Sec. 3.3, after
    the resolution shift of Esser et al. 2024), ``alpha_bar' = alpha_bar / (k + (1 - k) alpha_bar)``,
    i.e. the SNR divided by ``k``. It is applied to ``alpha_bar`` before the zero-terminal-SNR rescale,
    which then also runs on ``alpha_bar`` (not on the betas), as diffusers' ``CogVideoXDDIMScheduler``
    does; ``k = 1`` (the default) keeps the plain DDPM tables.
    """

    # trailing (Lin et al. 2023) starts at the last timestep and spaces steps evenly; on the Gaussian
    # oracle it lets dpmpp_2m / unipc match 50-step DDIM in 8-12 steps, linspace needs 23
    # (benchmarks/README.md).
    default_spacing = "trailing"
    spacings = ("linspace", "leading", "trailing", "karras", "exponential")

    def __init__(
        self,
        beta_schedule: str = "scaled_linear",
        num_train_timesteps: int = 1000,
        beta_start: float | None = None,
        beta_end: float | None = None,
        rescale_zero_terminal_snr: bool = False,
        snr_shift_scale: float = 1.0,
    ):
        defaults = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "cosine": (None, None)}
        if not isinstance(beta_schedule, str) or beta_schedule not in defaults:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}; known: {sorted(defaults)}")
        n = _count(num_train_timesteps, "num_train_timesteps", 2, MAX_TRAIN_TIMESTEPS)
        if not isinstance(rescale_zero_terminal_snr, bool):
            raise TypeError(
                f"rescale_zero_terminal_snr must be true or false, got {rescale_zero_terminal_snr!r}"
            )
        # betas below 1e-6 round to nothing in the float32 tables (1 - beta == 1): the first level would be clean
        b0 = (
            defaults[beta_schedule][0]
            if beta_start is None
            else _number(beta_start, "beta_start", 1e-6, 0.999)
        )
        b1 = defaults[beta_schedule][1] if beta_end is None else _number(beta_end, "beta_end", 1e-6, 0.999)
        if beta_schedule != "cosine" and not b0 <= b1 < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {b0}, {b1}")
        self.beta_schedule, self.num_train_timesteps = beta_schedule, n
        self.beta_start, self.beta_end = b0, b1
        self.rescale_zero_terminal_snr = rescale_zero_terminal_snr

        # Built in float32 exactly as the DDPM / LDM code and diffusers build them, so a model trained
        # there sees the same noise levels here; read in float64 from then on.
        f32 = torch.float32
        if beta_schedule == "linear":
            betas = torch.linspace(b0, b1, n, dtype=f32)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=f32) ** 2
        else:  # Nichol & Dhariwal 2021, Eq. 17, with beta clipped at 0.999

            def alpha_bar(u: float) -> float:
                return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor(
                [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)], dtype=f32
            )
        self.snr_shift_scale = _number(snr_shift_scale, "snr_shift_scale", 1e-4, 1e4)
        if snr_shift_scale != 1.0:  # CogVideoX: shift alpha_bar, then rescale alpha_bar itself
            k = snr_shift_scale
            ab = torch.cumprod(1 - betas, dim=0)  # [n]
            ab = ab / (k + (1 - k) * ab)  # [n] SNR / k
            if rescale_zero_terminal_snr:
                ab = _rescale_zero_terminal(ab)
            alphas_cumprod = ab.to(torch.float64)
        else:
            if rescale_zero_terminal_snr:  # Lin et al. 2023, Algorithm 1
                ab = _rescale_zero_terminal(torch.cumprod(1 - betas, dim=0))
                betas = 1 - torch.cat([ab[:1], ab[1:] / ab[:-1]])
            alphas_cumprod = torch.cumprod(1 - betas, dim=0).to(torch.float64)
        self.alphas_cumprod = alphas_cumprod  # [n]
        # log s = 0.5 * log((1 - alpha_bar) / alpha_bar); +inf where alpha_bar == 0
        self.log_sigmas = 0.5 * (torch.log1p(-alphas_cumprod) - torch.log(alphas_cumprod))  # [n]
        self._tables: dict[torch.device, torch.Tensor] = {}

    def _table(self, device: torch.device) -> torch.Tensor:
        if device not in self._tables:
            self._tables[device] = self.log_sigmas.to(device)
        return self._tables[device]

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        table = self._table(t.device)
        u = (t.to(torch.float64) * self.num_train_timesteps).clamp(0, self.num_train_timesteps - 1)
        u = torch.where((u - u.round()).abs() < 1e-9, u.round(), u)  # k / n lands exactly on timestep k
        lo = u.floor().clamp(max=self.num_train_timesteps - 2).long()
        w = u - lo
        a, b = table[lo], table[lo + 1]
        log_s = torch.where(w > 0, a + w * (b - a), a)  # no 0 * inf at the zero-SNR end
        return _alpha_sigma_from_log_s(log_s)

    def t_from_s(self, s: torch.Tensor) -> torch.Tensor:
        table = self._table(s.device)
        log_s = s.to(torch.float64).log()
        hi = torch.searchsorted(table, log_s).clamp(1, self.num_train_timesteps - 1)
        a, b = table[hi - 1], table[hi]
        w = ((log_s - a) / (b - a)).nan_to_num(0.0).clamp(0, 1)
        return ((hi - 1) + w) / self.num_train_timesteps

    def s_range(self) -> tuple[float, float]:
        finite = self.log_sigmas[torch.isfinite(self.log_sigmas)]
        return math.exp(float(finite[0])), math.exp(float(finite[-1]))

    def _spaced_ts(self, steps: int, spacing: str) -> list[float]:
        return [k / self.num_train_timesteps for k in vp_timesteps(steps, self.num_train_timesteps, spacing)]

    def to_config(self) -> dict:
        return {
            "type": "vp",
            "config": {
                "beta_schedule": self.beta_schedule,
                "num_train_timesteps": self.num_train_timesteps,
                "beta_start": self.beta_start,
                "beta_end": self.beta_end,
                "rescale_zero_terminal_snr": self.rescale_zero_terminal_snr,
                **({"snr_shift_scale": self.snr_shift_scale} if self.snr_shift_scale != 1.0 else {}),
            },
        }

    def __repr__(self) -> str:
        zsnr = ", rescale_zero_terminal_snr=True" if self.rescale_zero_terminal_snr else ""
        if self.snr_shift_scale != 1.0:
            zsnr += f", snr_shift_scale={self.snr_shift_scale:g}"
        return f"VPSchedule({self.beta_schedule!r}, num_train_timesteps={self.num_train_timesteps}{zsnr})"


class FlowSchedule(Schedule):
    """Rectified flow (Liu et al. 2022; Lipman et al. 2022): ``alpha = 1 - t``, ``sigma = t``.

    ``shift`` warps the sampling grid towards high noise, ``t -> shift * t / (1 + (shift - 1) * t)``
    (Esser et al. 2024, "Scaling Rectified Flow Transformers", Eq. 23); it is the grid's business,
    not the model's: ``alpha_sigma`` is the plain interpolation at every shift. In the noise level
    ``s = t / (1 - t)`` the warp is ``s -> shift * s``, so every spacing is shifted the same way:
    the uniform grid in ``t``, and the Karras / exponential grids in ``s`` (whose bounds, default
    :meth:`s_range` or ``sigma_min`` / ``sigma_max``, are the unshifted ones, as ``t`` is for the
    uniform grid).
    """

    default_spacing = "linspace"
    spacings = ("linspace", "karras", "exponential")

    def __init__(self, shift: float = 1.0, t_min: float = 1e-3):
        self.shift = _number(shift, "shift", 1e-4, 1e4)  # SD3, Wan, LTX: 1 to 20
        self.t_min = _number(t_min, "t_min", 1e-6, 0.5)
        if self.t_min == 0.5:
            raise ValueError("t_min must be below 0.5 (the grid runs from 1 - t_min down to t_min)")

    @classmethod
    def for_resolution(cls, num_tokens: int, base_tokens: int = 256, base_shift: float = 1.0) -> FlowSchedule:
        """The resolution-dependent shift of Esser et al. 2024, Eq. 23: ``shift = base * sqrt(m / n)``.

        ``num_tokens``: elements (pixels, latent positions or patches) per sample now;
        ``base_tokens``: the same count at the resolution where ``base_shift`` was tuned.
        """
        _number(num_tokens, "num_tokens", 0.0, lo_open=True)
        _number(base_tokens, "base_tokens", 0.0, lo_open=True)
        _number(base_shift, "base_shift", 0.0, lo_open=True)
        return cls(shift=base_shift * math.sqrt(num_tokens / base_tokens))

    def shift_time(self, t: float) -> float:
        """Esser et al. 2024, Eq. 23 (kept in [0, 1]: for ``shift < 1``, ``t = 1`` rounds to 1 + 2e-16)."""
        if t >= 1.0:  # pure noise stays pure noise, exactly
            return 1.0
        return min(1.0, self.shift * t / (1 + (self.shift - 1) * t))

    def shift_sigmas(self, sigmas: list[float]) -> list[float]:
        """Esser et al. 2024, Eq. 23 in the noise level: ``t' = shift t / (1 + (shift - 1) t)`` with
        ``s = t / (1 - t)`` gives ``s' = t' / (1 - t') = shift * s``."""
        return [self.shift * s for s in sigmas]

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = t.to(torch.float64)
        return 1 - t, t

    def t_from_s(self, s: torch.Tensor) -> torch.Tensor:
        s = s.to(torch.float64)
        return torch.where(torch.isinf(s), torch.ones_like(s), s / (1 + s))

    def s_range(self) -> tuple[float, float]:
        return self.t_min / (1 - self.t_min), (1 - self.t_min) / self.t_min

    def _spaced_ts(self, steps: int, spacing: str) -> list[float]:
        return [self.shift_time(1 - i / steps) for i in range(steps)]

    def to_config(self) -> dict:
        return {"type": "flow", "config": {"shift": self.shift, "t_min": self.t_min}}

    def __repr__(self) -> str:
        return f"FlowSchedule(shift={self.shift:g})"


class _SigmaBounded(Schedule):
    """A schedule whose grids run between ``sigma_min`` and ``sigma_max`` (Karras / exponential, with
    the Karras exponent ``rho``): EDM's and the cosine one."""

    sigma_min: float
    sigma_max: float
    rho: float

    def s_range(self) -> tuple[float, float]:
        return self.sigma_min, self.sigma_max

    def grid(self, steps: int, spacing: str | None = None, **kwargs) -> list[Level]:
        kwargs.setdefault("rho", self.rho)
        return super().grid(steps, spacing, **kwargs)


class EDMSchedule(_SigmaBounded):
    """Karras et al. 2022 (EDM): ``alpha = 1``, ``sigma(t) = (s_min^(1/rho) + t (s_max^(1/rho) - s_min^(1/rho)))^rho``.

    Uniform steps in ``t`` are exactly the Karras grid (Eq. 5); ``sigma_data`` is the data
    standard deviation used by the EDM loss weighting.
    """

    default_spacing = "karras"
    spacings = ("karras", "exponential")

    def __init__(
        self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, sigma_data: float = 0.5
    ):
        sigma_min, sigma_max = (
            _number(sigma_min, "sigma_min", *S_BOUNDS),
            _number(sigma_max, "sigma_max", *S_BOUNDS),
        )
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.rho = _number(rho, "rho", 0.1, 100.0)
        self.sigma_data = _number(sigma_data, "sigma_data", 1e-6, 1e6)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = t.to(torch.float64).clamp(0, 1)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return torch.ones_like(t), (lo + t * (hi - lo)) ** self.rho

    def t_from_s(self, s: torch.Tensor) -> torch.Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return ((s.to(torch.float64) ** (1 / self.rho) - lo) / (hi - lo)).clamp(0, 1)

    def to_config(self) -> dict:
        return {
            "type": "edm",
            "config": {
                "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max,
                "rho": self.rho,
                "sigma_data": self.sigma_data,
            },
        }

    def __repr__(self) -> str:
        return f"EDMSchedule(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, rho={self.rho:g})"


class CosineSchedule(_SigmaBounded):
    """Continuous cosine schedule: ``alpha = cos(pi t / 2)``, ``sigma = sin(pi t / 2)``.

    The variance-preserving path of Nichol & Dhariwal 2021 (Eq. 17) without their offset, in
    continuous time, as Salimans & Ho 2022 (v-prediction, Sec. 4) and Stable Audio (Evans et al. 2024,
    "Stable Audio Open"; stable-audio-tools' ``v`` objective) train on. The noise level is
    ``s = tan(pi t / 2)`` and ``t = (2 / pi) atan(s)``: exactly the ``c_noise`` time that diffusers'
    ``CosineDPMSolverMultistepScheduler`` hands the model, and its EDM preconditioning with
    ``sigma_data = 1`` (``c_in = 1 / sqrt(s^2 + 1) = alpha``, ``c_skip = alpha^2``, ``c_out = -sigma`` in
    the variance-exploding frame) is v-prediction here. ``sigma_min`` / ``sigma_max`` bound the
    Karras / exponential grids (Stable Audio Open: 0.3 and 500); ``rho`` is the Karras exponent.
    """

    default_spacing = "exponential"
    spacings = ("karras", "exponential")

    def __init__(self, sigma_min: float = 0.3, sigma_max: float = 500.0, rho: float = 7.0):
        sigma_min, sigma_max = (
            _number(sigma_min, "sigma_min", *S_BOUNDS),
            _number(sigma_max, "sigma_max", *S_BOUNDS),
        )
        if not 0 < sigma_min < sigma_max < math.inf:
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.rho = _number(rho, "rho", 0.1, 100.0)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = t.to(torch.float64).clamp(0, 1) * (math.pi / 2)
        return torch.cos(u), torch.sin(u)

    def t_from_s(self, s: torch.Tensor) -> torch.Tensor:
        return torch.atan(s.to(torch.float64)) * (2 / math.pi)  # atan(inf) = pi / 2: t = 1

    def to_config(self) -> dict:
        return {
            "type": "cosine",
            "config": {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "rho": self.rho},
        }

    def __repr__(self) -> str:
        return f"CosineSchedule(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


SCHEDULES: dict[str, type[Schedule]] = {
    "vp": VPSchedule,
    "flow": FlowSchedule,
    "edm": EDMSchedule,
    "cosine": CosineSchedule,
}


def build_schedule(spec: dict) -> Schedule:
    """Rebuild a schedule from ``{"type": "vp" | "flow" | "edm" | "cosine", "config": {...}}``; ValueError
    saying what is wrong for anything else (a saved folder's schedule may have been edited)."""
    if not isinstance(spec, dict):
        raise ValueError(f'a schedule is {{"type": ..., "config": {{...}}}}, got {spec!r}')
    kind = spec.get("type")
    cls = SCHEDULES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown schedule {kind!r}; known: {sorted(SCHEDULES)}")
    config = spec.get("config", {})
    unknown = set(spec) - {"type", "config"}
    if not isinstance(config, dict) or unknown:
        raise ValueError(f'a {kind} schedule is {{"type": {kind!r}, "config": {{...}}}}, got {spec!r}')
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    extra = sorted(str(k) for k in config if k not in params)
    if extra:
        raise ValueError(f"the {kind} schedule takes {params}, not {extra}")
    try:
        return cls(**config)
    except TypeError as err:
        raise ValueError(f"the {kind} schedule's config: {err}") from None
