"""Analytic oracles: data whose exact denoiser is known in closed form.

For data ``x0 ~ N(mu, diag(var))`` and ``x = alpha x0 + sigma eps`` the posterior mean is

    E[x0 | x] = mu + alpha var / (alpha^2 var + sigma^2) * (x - alpha mu)

and the probability-flow ODE keeps ``(x - alpha mu) / sqrt(alpha^2 var + sigma^2)`` fixed, so its
end point from any level is ``mu + sqrt(var) (x - alpha mu) / sqrt(alpha^2 var + sigma^2)``.
For a mixture of isotropic Gaussians the exact denoiser is the posterior-weighted mix of the
component denoisers (Karras et al. 2022 use the same toy in their Fig. 2 / EDM2's toy example).
Both are written for any ``(alpha, sigma)``, pure noise (``alpha = 0``) included.

These are the reference for tests and ``benchmarks/samplers.py``: a sampler run on
:meth:`model` should land on :meth:`ode_endpoint` (deterministic samplers) or on the data
distribution (all samplers).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .objectives import append_dims, prediction_target
from .schedules import Level, Schedule

__all__ = ["Gaussian", "GaussianMixture"]


class _Oracle:
    def x0(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def model(self, schedule: Schedule, prediction: str) -> Callable[..., torch.Tensor]:
        """The exact model ``model(x, t) -> prediction`` for this data under ``schedule``."""

        def exact(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a, s = schedule.alpha_sigma(t)  # [b] float64
            a = append_dims(a, x.ndim).to(x.dtype)
            s = append_dims(s, x.ndim).to(x.dtype)
            x0 = self.x0(x, a, s)
            eps = (x - a * x0) / s.clamp(min=1e-30)
            return prediction_target(x0, eps, a, s, prediction)

        return exact


class Gaussian(_Oracle):
    """``N(mean, diag(var))`` over samples of shape ``mean.shape``."""

    def __init__(self, mean: torch.Tensor, var: torch.Tensor):
        if mean.shape != var.shape:
            raise ValueError(f"mean and var shapes differ: {list(mean.shape)} vs {list(var.shape)}")
        self.mean, self.var = mean, var

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn((n, *self.mean.shape), generator=generator, dtype=self.mean.dtype)
        return self.mean + self.var.sqrt() * z  # [n ...]

    def x0(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.mean + alpha * self.var / (alpha**2 * self.var + sigma**2) * (x - alpha * self.mean)

    def ode_endpoint(self, x: torch.Tensor, level: Level) -> torch.Tensor:
        """Exact end point (``t = 0``) of the probability-flow ODE started from ``x`` at ``level``."""
        a, s = level.alpha, level.sigma
        return self.mean + self.var.sqrt() * (x - a * self.mean) / (a * a * self.var + s * s).sqrt()


class GaussianMixture(_Oracle):
    """``sum_k w_k N(means[k], var_k I)`` over samples of shape ``means.shape[1:]``."""

    def __init__(self, means: torch.Tensor, vars: torch.Tensor, weights: torch.Tensor):
        k = means.shape[0]
        if vars.shape != (k,) or weights.shape != (k,):
            raise ValueError(
                f"need vars and weights of shape [{k}], got {list(vars.shape)}, {list(weights.shape)}"
            )
        self.means, self.vars, self.weights = means, vars, weights / weights.sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # [n]
        z = torch.randn((n, *self.means.shape[1:]), generator=generator, dtype=self.means.dtype)
        std = append_dims(self.vars[comp].sqrt(), z.ndim)
        return self.means[comp] + std * z  # [n ...]

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest component mean for each sample: ``[n ...] -> [n]``."""
        d = (x.flatten(1)[:, None, :] - self.means.flatten(1)[None]).pow(2).sum(-1)  # [n k]
        return d.argmin(1)

    def x0(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b, dim = x.shape[0], x[0].numel()
        xf = x.reshape(b, 1, dim)  # [b 1 d]
        a = alpha.reshape(b, 1, 1) if alpha.numel() > 1 else alpha.reshape(1, 1, 1)  # [b 1 1]
        s = sigma.reshape(b, 1, 1) if sigma.numel() > 1 else sigma.reshape(1, 1, 1)  # [b 1 1]
        mu = self.means.reshape(1, -1, dim).to(x.dtype)  # [1 k d]
        v = self.vars.reshape(1, -1, 1).to(x.dtype)  # [1 k 1]
        total = a**2 * v + s**2  # [b k 1]
        resid = xf - a * mu  # [b k d]
        logp = -0.5 * (resid**2).sum(-1, keepdim=True) / total - 0.5 * dim * total.log()  # [b k 1]
        post = torch.softmax(logp + self.weights.reshape(1, -1, 1).to(x.dtype).log(), dim=1)  # [b k 1]
        x0_k = mu + a * v / total * resid  # [b k d]
        return (post * x0_k).sum(1).reshape(x.shape)  # [b ...]
