"""Prediction types, their conversions, the training loss, loss weightings and training-time samplers.

With ``x = alpha * x0 + sigma * eps`` a backbone predicts one of

- ``eps``:  the noise ``eps`` (Ho et al. 2020);
- ``x0``:   the clean sample;
- ``v``:    ``alpha * eps - sigma * x0`` (Salimans & Ho 2022, "Progressive Distillation", Sec. 4);
- ``flow``: the rectified-flow velocity ``eps - x0`` (Liu et al. 2022; for ``FlowSchedule`` it is ``dx/dt``).

Conversions hold for any ``(alpha, sigma)``, not only variance-preserving pairs:
``x0 = (alpha * x - sigma * v) / (alpha^2 + sigma^2)`` and ``x0 = (x - sigma * u) / (alpha + sigma)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .schedules import EDMSchedule, Schedule

__all__ = [
    "PREDICTIONS",
    "T_SAMPLERS",
    "WEIGHTINGS",
    "LogNormalT",
    "LogitNormalT",
    "UniformT",
    "append_dims",
    "convert_prediction",
    "diffusion_loss",
    "loss_weight",
    "pred_to_eps",
    "pred_to_x0",
    "prediction_target",
]

PREDICTIONS = ("eps", "x0", "v", "flow")
WEIGHTINGS = ("uniform", "min_snr", "edm")

Scalar = float | torch.Tensor


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims so ``v: [b]`` broadcasts against ``[b ...]`` of rank ``ndim``."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of rank {v.ndim} to rank {ndim}")
    return v[(...,) + (None,) * (ndim - v.ndim)]


def _check(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {prediction!r}; known: {list(PREDICTIONS)}")


def pred_to_x0(
    pred: torch.Tensor, x: torch.Tensor, alpha: Scalar, sigma: Scalar, prediction: str
) -> torch.Tensor:
    """The clean-sample estimate implied by a prediction at ``x = alpha x0 + sigma eps``.

    ``alpha``/``sigma``: Python floats or tensors broadcastable to ``x`` (see :func:`append_dims`).
    """
    _check(prediction)
    if prediction == "x0":
        return pred
    if prediction == "eps":
        return (x - sigma * pred) / alpha
    if prediction == "v":
        return (alpha * x - sigma * pred) / (alpha * alpha + sigma * sigma)
    return (x - sigma * pred) / (alpha + sigma)  # flow


def pred_to_eps(
    pred: torch.Tensor, x: torch.Tensor, alpha: Scalar, sigma: Scalar, prediction: str
) -> torch.Tensor:
    """The noise estimate implied by a prediction: ``eps = (x - alpha x0) / sigma``."""
    if prediction == "eps":
        return pred
    return (x - alpha * pred_to_x0(pred, x, alpha, sigma, prediction)) / sigma


def prediction_target(
    x0: torch.Tensor, eps: torch.Tensor, alpha: Scalar, sigma: Scalar, prediction: str
) -> torch.Tensor:
    """What a backbone of the given prediction type should output for ``(x0, eps)``."""
    _check(prediction)
    if prediction == "x0":
        return x0
    if prediction == "eps":
        return eps
    if prediction == "v":
        return alpha * eps - sigma * x0
    return eps - x0  # flow


def convert_prediction(
    pred: torch.Tensor, src: str, dst: str, x: torch.Tensor, alpha: Scalar, sigma: Scalar
) -> torch.Tensor:
    """Re-express a ``src`` prediction at ``x`` as a ``dst`` prediction."""
    _check(dst)
    if src == dst:
        return pred
    x0 = pred_to_x0(pred, x, alpha, sigma, src)
    return prediction_target(x0, (x - alpha * x0) / sigma, alpha, sigma, dst)


# --- loss weightings ----------------------------------------------------------------------------


def _x0_error_factor(alpha: torch.Tensor, sigma: torch.Tensor, prediction: str) -> torch.Tensor:
    """``|pred - target|^2 = factor * |x0_hat - x0|^2`` at a fixed ``x`` (all four types are linear in x0_hat)."""
    if prediction == "x0":
        return torch.ones_like(alpha)
    if prediction == "eps":
        return (alpha / sigma) ** 2
    if prediction == "v":
        return ((alpha**2 + sigma**2) / sigma) ** 2
    return ((alpha + sigma) / sigma) ** 2  # flow


def loss_weight(
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    prediction: str,
    weighting: str = "uniform",
    *,
    gamma: float = 5.0,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """Per-sample weight that multiplies the mean squared error in the prediction's own space.

    Each weighting is defined on the x0 error and divided by the factor that turns the x0 error
    into the prediction's error, so it means the same thing for every prediction type:

    - ``uniform``: 1 (plain MSE on the prediction);
    - ``min_snr``: ``min(SNR, gamma)`` on the x0 error, Hang et al. 2023, "Efficient Diffusion
      Training via Min-SNR Weighting Strategy", Eq. 7 (gives ``min(SNR, gamma) / SNR`` for eps and
      ``min(SNR, gamma) / (SNR + 1)`` for v on a VP schedule);
    - ``edm``: ``(s^2 + sigma_data^2) / (s * sigma_data)^2`` on the x0 error with ``s = sigma / alpha``,
      Karras et al. 2022, Eq. 8 / Table 1.
    """
    _check(prediction)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; known: {list(WEIGHTINGS)}")
    if weighting == "uniform":
        return torch.ones_like(alpha)
    a = alpha.to(torch.float64).clamp(min=1e-10)
    s = sigma.to(torch.float64).clamp(min=1e-10)
    factor = _x0_error_factor(a, s, prediction)
    if weighting == "min_snr":
        w_x0 = ((a / s) ** 2).clamp(max=gamma)
    else:
        ve = s / a
        w_x0 = (ve**2 + sigma_data**2) / (ve * sigma_data) ** 2
    return (w_x0 / factor).to(alpha.dtype)


# --- training-time samplers of t ----------------------------------------------------------------


class UniformT:
    """``t ~ U(t_min, t_max)``."""

    def __init__(self, t_min: float = 0.0, t_max: float = 1.0):
        self.t_min, self.t_max = t_min, t_max

    def __call__(
        self, batch: int, schedule: Schedule, *, generator: torch.Generator | None = None, device: Any = None
    ) -> torch.Tensor:
        u = torch.rand(batch, generator=generator, device=_gen_device(generator, device)).to(device)
        return self.t_min + (self.t_max - self.t_min) * u


class LogitNormalT:
    """``t = sigmoid(n)``, ``n ~ N(mean, std^2)``: Esser et al. 2024 (SD3), Sec. 3.1, "rf/lognorm(0.00, 1.00)"."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        self.mean, self.std = mean, std

    def __call__(
        self, batch: int, schedule: Schedule, *, generator: torch.Generator | None = None, device: Any = None
    ) -> torch.Tensor:
        n = torch.randn(batch, generator=generator, device=_gen_device(generator, device)).to(device)
        return torch.sigmoid(self.mean + self.std * n)


class LogNormalT:
    """``ln s ~ N(p_mean, p_std^2)`` on the noise level ``s = sigma / alpha``, mapped to ``t`` by the
    schedule's inverse: Karras et al. 2022, Sec. 5 ("P_mean = -1.2, P_std = 1.2")."""

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2):
        self.p_mean, self.p_std = p_mean, p_std

    def __call__(
        self, batch: int, schedule: Schedule, *, generator: torch.Generator | None = None, device: Any = None
    ) -> torch.Tensor:
        n = torch.randn(batch, generator=generator, device=_gen_device(generator, device)).to(device)
        s = torch.exp(self.p_mean + self.p_std * n.to(torch.float64))
        return schedule.t_from_s(s).to(torch.float32)


T_SAMPLERS: dict[str, type] = {"uniform": UniformT, "logit_normal": LogitNormalT, "log_normal": LogNormalT}


def _gen_device(generator: torch.Generator | None, device: Any) -> Any:
    return generator.device if generator is not None else device


def _t_sampler(spec: str | Callable) -> Callable:
    if callable(spec):
        return spec
    cls = T_SAMPLERS.get(spec)
    if cls is None:
        raise ValueError(f"unknown t_sampler {spec!r}; known: {sorted(T_SAMPLERS)}")
    return cls()


# --- the loss -----------------------------------------------------------------------------------


def diffusion_loss(
    model: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    schedule: Schedule,
    prediction: str,
    *,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    t_sampler: str | Callable = "uniform",
    weighting: str = "uniform",
    cond: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    gamma: float = 5.0,
    sigma_data: float | None = None,
) -> torch.Tensor:
    """Denoising loss, one value per sample: ``w(t) * mean((model(x_t, t) - target)^2)``.

    x0: ``[b ...]`` clean samples; t: ``[b]`` in [0, 1] (default: drawn by ``t_sampler``); noise:
    like ``x0`` (default: standard normal). ``cond`` goes to the model as keyword arguments.
    ``sigma_data`` defaults to the schedule's own (EDM) or 0.5. Returns ``[b]`` in float32.
    """
    _check(prediction)
    b = x0.shape[0]
    if t is None:
        t = _t_sampler(t_sampler)(b, schedule, generator=generator, device=x0.device)
    if t.shape != (b,):
        raise ValueError(f"t must have shape [{b}], got {list(t.shape)}")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=_gen_device(generator, x0.device))
        noise = noise.to(device=x0.device, dtype=x0.dtype)
    alpha, sigma = schedule.alpha_sigma(t)  # [b] float64
    a = append_dims(alpha, x0.ndim).to(x0.dtype)
    s = append_dims(sigma, x0.ndim).to(x0.dtype)
    x_t = a * x0 + s * noise
    target = prediction_target(x0, noise, a, s, prediction)
    pred = model(x_t, t.to(x0.dtype if x0.dtype == torch.float64 else torch.float32), **(cond or {}))
    if pred.shape != x0.shape:
        raise ValueError(f"model returned shape {list(pred.shape)}, expected {list(x0.shape)}")
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)  # [b]
    if sigma_data is None:
        sigma_data = schedule.sigma_data if isinstance(schedule, EDMSchedule) else 0.5
    w = loss_weight(alpha, sigma, prediction, weighting, gamma=gamma, sigma_data=sigma_data)
    return mse * w.to(mse.dtype)
