"""Sampler benchmark: accuracy on the analytic oracle, host syncs, and per-step overhead vs diffusers.

    python benchmarks/samplers.py            # prints markdown tables
    python benchmarks/samplers.py --quick    # fewer repeats for the overhead table

Accuracy: data N(mu, diag(var)) in 3-D with its exact denoiser (mediadiff.diffusion.oracle).
Deterministic samplers are scored by the RMS distance to the exact probability-flow ODE end point
of the same noise; stochastic ones (whose paths have no exact end point) by the 2-Wasserstein
distance between a Gaussian fitted to 20,000 samples and the data distribution. "NFE to reach
ddim@50" is the fewest model evaluations at which a sampler's score is at most DDIM's score at 50
evaluations on the same schedule and grid, in the same metric.

Host syncs: aten::item / _local_scalar_dense / is_nonzero / nonzero / equal events that the torch
profiler records during one sampling loop (grid construction excluded for both sides).

Overhead: a model that costs nothing (returns a preallocated tensor), 50 steps; our `sample` loop
against the diffusers loop (`scale_model_input` + `step`) of the scheduler of the same method,
median over repeats, interleaved so both see the same machine load.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from functools import partial

import torch
from torch.profiler import ProfilerActivity, profile

from mediadiff.diffusion import SAMPLERS, FlowSchedule, VPSchedule, default_grid, nfe, randn, sample
from mediadiff.diffusion.oracle import Gaussian
from mediadiff.utils import cpu_name

warnings.filterwarnings("ignore")
F64 = torch.float64
DATA = Gaussian(torch.tensor([0.5, -1.0, 0.0], dtype=F64), torch.tensor([0.2, 1.0, 2.0], dtype=F64))
STOCHASTIC = {name for name, spec in SAMPLERS.items() if spec.stochastic}
ORDER = ["ddim", "euler", "heun", "dpmpp_2m", "unipc", "ddpm", "euler_a", "dpmpp_2m_sde", "dpmpp_3m_sde"]
SETUPS = {
    # spacing None: each sampler's default grid, what sample() uses when given only steps
    "VP cosine, v-prediction, default grid (trailing; heun: Karras from s = 80)": (
        VPSchedule("cosine"),
        "v",
        None,
    ),
    "Flow (shift 1), flow-prediction, default grid (uniform)": (FlowSchedule(), "flow", None),
}
SYNC_OPS = {"aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::nonzero", "aten::equal"}


# --- accuracy -----------------------------------------------------------------------------------


def w2_to_data(x: torch.Tensor) -> float:
    """2-Wasserstein distance between N(mean(x), cov(x)) and the data Gaussian (Bures formula)."""
    m = x.mean(0)
    c1 = torch.cov(x.T)
    c2 = torch.diag(DATA.var)
    r2 = torch.diag(DATA.var.sqrt())
    ev, evec = torch.linalg.eigh(r2 @ c1 @ r2)
    cross = evec @ torch.diag(ev.clamp(min=0).sqrt()) @ evec.T
    w2 = (m - DATA.mean).pow(2).sum() + torch.trace(c1 + c2 - 2 * cross)
    return float(w2.clamp(min=0).sqrt())


class Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t, **kw):
        self.calls += 1
        return self.fn(x, t, **kw)


def grid(schedule, spacing, sampler: str, steps: int):
    """The schedule's grid of ``spacing``, or with ``spacing=None`` the sampler's default grid."""
    return default_grid(schedule, sampler, steps) if spacing is None else schedule.grid(steps, spacing)


def score(schedule, pred, spacing, sampler: str, steps: int) -> tuple[float, int]:
    """(error, model evaluations) for one sampler at ``steps`` steps."""
    levels = grid(schedule, spacing, sampler, steps)
    model = Counted(DATA.model(schedule, pred))
    if sampler in STOCHASTIC:
        gen = torch.Generator().manual_seed(0)
        noise = randn((20000, 3), gen, dtype=F64)
        out = sample(model, noise, schedule, pred, sampler, levels=levels, generator=gen)
        return w2_to_data(out), model.calls
    noise = randn((2000, 3), torch.Generator().manual_seed(0), dtype=F64)
    out = sample(model, noise, schedule, pred, sampler, levels=levels)
    start = noise * math.sqrt(levels[0].alpha ** 2 + levels[0].sigma ** 2)
    return float((out - DATA.ode_endpoint(start, levels[0])).pow(2).mean().sqrt()), model.calls


def steps_for_nfe(schedule, pred, spacing, sampler: str, budget: int) -> int:
    """Largest step count whose evaluations fit in ``budget``."""
    best = 1
    for steps in range(1, budget + 1):
        if score_nfe(schedule, pred, spacing, sampler, steps) <= budget:
            best = steps
        else:
            break
    return best


def score_nfe(schedule, pred, spacing, sampler, steps) -> int:
    model = Counted(lambda x, t: torch.zeros_like(x))
    sample(model, torch.zeros(1, 1), schedule, pred, sampler, levels=grid(schedule, spacing, sampler, steps))
    return model.calls


def nfe_to_reach(schedule, pred, spacing, sampler: str, target: float, max_steps: int = 120) -> int | None:
    for steps in range(1, max_steps + 1):
        err, calls = score(schedule, pred, spacing, sampler, steps)
        if err <= target:
            return calls
    return None


def accuracy_table(schedule, pred, spacing) -> str:
    ddim_det, _ = score(schedule, pred, spacing, "ddim", 50)
    target_w2 = None
    rows = [
        "| sampler | metric | 5 NFE | 10 NFE | 20 NFE | 50 NFE | NFE to reach ddim@50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for sampler in ORDER:
        stochastic = sampler in STOCHASTIC
        if stochastic and target_w2 is None:
            # DDIM's distribution error at 50 NFE, the reference for the stochastic rows
            levels = grid(schedule, spacing, "ddim", 50)
            noise = randn((20000, 3), torch.Generator().manual_seed(0), dtype=F64)
            target_w2 = w2_to_data(
                sample(DATA.model(schedule, pred), noise, schedule, pred, "ddim", levels=levels)
            )
        cells = []
        for budget in (5, 10, 20, 50):
            steps = steps_for_nfe(schedule, pred, spacing, sampler, budget)
            err, calls = score(schedule, pred, spacing, sampler, steps)
            cells.append(f"{err:.2e}" + ("" if calls == budget else f" ({calls})"))
        reach = nfe_to_reach(schedule, pred, spacing, sampler, target_w2 if stochastic else ddim_det)
        metric = "W2 to data" if stochastic else "ODE error"
        rows.append(f"| {sampler} | {metric} | " + " | ".join(cells) + f" | {reach if reach else '> 120'} |")
    rows.append("")
    rows.append(f"ddim@50: ODE error {ddim_det:.2e}, W2 to data {target_w2:.2e} (20,000 samples).")
    return "\n".join(rows)


def grid_table() -> str:
    rows = [
        "| schedule | grid | ddim@50 ODE error | dpmpp_2m NFE to reach | unipc NFE to reach |",
        "|---|---|---|---|---|",
    ]
    for name, (schedule, pred, _) in SETUPS.items():
        for spacing in schedule.spacings:
            if spacing == "leading":
                continue  # its first level moves with the step count: no common end point to compare
            target, _ = score(schedule, pred, spacing, "ddim", 50)
            a = nfe_to_reach(schedule, pred, spacing, "dpmpp_2m", target)
            b = nfe_to_reach(schedule, pred, spacing, "unipc", target)
            rows.append(f"| {name.split(',')[0]} | {spacing} | {target:.2e} | {a} | {b} |")
    return "\n".join(rows)


# --- diffusers counterparts ---------------------------------------------------------------------


def diffusers_scheduler(sampler: str, steps: int, **config):
    """The diffusers scheduler of ``sampler``'s method after ``set_timesteps(steps)``: on the SD
    ``scaled_linear`` betas with trailing spacing, or with ``config`` over those (e.g. flow sigmas)."""
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    kw = {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "timestep_spacing": "trailing",
        **config,
    }
    table = {
        "ddpm": lambda: DDPMScheduler(**kw, clip_sample=False),
        "ddim": lambda: DDIMScheduler(**kw, clip_sample=False),
        "euler": lambda: EulerDiscreteScheduler(**kw),
        "euler_a": lambda: EulerAncestralDiscreteScheduler(**kw),
        "heun": lambda: HeunDiscreteScheduler(**kw),
        "dpmpp_2m": lambda: DPMSolverMultistepScheduler(**kw),
        "dpmpp_2m_sde": lambda: DPMSolverMultistepScheduler(**kw, algorithm_type="sde-dpmsolver++"),
        "dpmpp_3m_sde": lambda: DPMSolverMultistepScheduler(
            **kw, algorithm_type="sde-dpmsolver++", solver_order=3
        ),
        "unipc": lambda: UniPCMultistepScheduler(**kw),
    }
    sched = table[sampler]()
    sched.set_timesteps(steps)
    return sched


def diffusers_loop(sched, x, out, generator):
    stochastic = "generator" in sched.step.__code__.co_varnames
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        del inp
        if stochastic:
            x = sched.step(out, t, x, generator=generator).prev_sample
        else:
            x = sched.step(out, t, x).prev_sample
    return x


def our_loop(sampler, levels, x, out, generator):
    schedule = VPSchedule("scaled_linear")
    return sample(lambda x_, t_: out, x, schedule, "eps", sampler, levels=levels, generator=generator)


def count_syncs(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.name in SYNC_OPS for e in prof.events())


def overhead_table(repeats: int) -> str:
    steps = 50
    schedule = VPSchedule("scaled_linear")
    levels = schedule.grid(steps, "trailing")
    rows = [
        "| sampler | host syncs: ours | host syncs: diffusers | us/step ours, [1,4,8,8] | diffusers | ratio | us/step ours, [1,8,16,32,32] | diffusers | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for sampler in ORDER:
        x_small = torch.randn(1, 4, 8, 8)
        out_small = torch.zeros_like(x_small)
        gen = torch.Generator().manual_seed(0)
        syncs_ours = count_syncs(partial(our_loop, sampler, levels, x_small, out_small, gen))
        sched = diffusers_scheduler(sampler, steps)  # set_timesteps outside the profiled loop
        syncs_theirs = count_syncs(partial(diffusers_loop, sched, x_small, out_small, gen))
        cells = [str(syncs_ours), str(syncs_theirs)]
        for shape in [(1, 4, 8, 8), (1, 8, 16, 32, 32)]:
            x = torch.randn(shape)
            out = torch.zeros_like(x) + 0.01
            ours, theirs = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                our_loop(sampler, levels, x, out, gen)
                ours.append(time.perf_counter() - t0)
                sched = diffusers_scheduler(sampler, steps)  # construction and set_timesteps excluded
                t0 = time.perf_counter()
                diffusers_loop(sched, x, out, gen)
                theirs.append(time.perf_counter() - t0)
            evals = nfe(sampler, steps)
            a = statistics.median(ours) / evals * 1e6
            b = statistics.median(theirs) / evals * 1e6
            cells += [f"{a:.0f}", f"{b:.0f}", f"{a / b:.2f}"]
        rows.append(f"| {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing repeats")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({cpu_name()})"
    print(f"# Sampler benchmark\n\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {device}\n")
    for name, (schedule, pred, spacing) in SETUPS.items():
        print(f"## Accuracy: {name}\n")
        print(accuracy_table(schedule, pred, spacing))
        print()
    print("## NFE to reach ddim@50 on every grid\n")
    print(grid_table())
    print()
    print("## Host syncs per sampling loop and per-step overhead vs diffusers (zero-cost model, 50 steps)\n")
    print(overhead_table(5 if args.quick else 21))


if __name__ == "__main__":
    main()
