import numpy as np
import torch

from mediadiff.diffusion import VPSchedule


def near_gaussian_model(schedule: VPSchedule, prediction: str, width: int = 4):
    """A deterministic, non-linear test model in diffusers' calling convention ``f(x, timestep)``.

    It is the exact denoiser of N(0, 0.5) plus a small non-linear, time-dependent term, so samples
    stay O(1) (a realistic model) while every sampler sees a model that is not exactly linear.
    Timesteps may be fractional; alpha_bar is interpolated linearly between table entries.
    """
    acp = schedule.alphas_cumprod.numpy()
    g = torch.Generator().manual_seed(1)
    w = torch.randn(width, width, generator=g, dtype=torch.float64) * 0.3

    def f(x: torch.Tensor, timestep) -> torch.Tensor:
        ts = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)
        ab = torch.from_numpy(np.interp(ts.numpy(), np.arange(len(acp)), acp))
        ab = ab.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        mix = torch.tanh(torch.einsum("ij,bj...->bi...", w.to(x.dtype), x))
        x0 = a * 0.5 / (a * a * 0.5 + s * s) * x + 0.05 * mix * (1 + ts.reshape(a.shape).to(x.dtype) / 1000)
        eps = (x - a * x0) / s
        return eps if prediction == "eps" else a * eps - s * x0

    return f
