"""diffusers scheduler configs read as mediadiff schedules, prediction types and samplers.

A diffusers scheduler is a stateful object that owns a noise schedule, a timestep grid rule and a
solver at once; mediadiff keeps those apart (:mod:`.schedules`, :func:`.samplers.sample`). This module
reads a ``scheduler_config.json`` (as a dict: ``_class_name`` plus the constructor arguments) and returns
the three parts that reproduce the scheduler's sampling loop:

===================================  ==========================================  ===========================
diffusers scheduler                  mediadiff schedule                          sampler (grid)
===================================  ==========================================  ===========================
``DDIMScheduler``                    ``VPSchedule`` (zero-SNR rescale)           ``ddim`` (its spacing)
``CogVideoXDDIMScheduler``           ``VPSchedule(snr_shift_scale=...)``         ``ddim`` (its spacing)
``CogVideoXDPMScheduler``            ``VPSchedule(snr_shift_scale=...)``         ``dpmpp_2m_sde`` (its spacing)
``EulerDiscreteScheduler``           ``VPSchedule``                              ``euler`` (its spacing)
``DPMSolverMultistepScheduler``      ``VPSchedule`` / ``FlowSchedule`` (flow)     ``dpmpp_2m`` / ``dpmpp_2m_sde``
``UniPCMultistepScheduler``          ``VPSchedule`` / ``FlowSchedule`` (flow)     ``unipc`` (order, bh1 / bh2)
``FlowMatchEulerDiscreteScheduler``  ``FlowSchedule(shift)``                     ``euler`` (diffusers' grid)
===================================  ==========================================  ===========================

and ``CosineDPMSolverMultistepScheduler`` (Stable Audio Open) as v-prediction on ``CosineSchedule`` with
``dpmpp_2m_sde`` over its exponential or Karras grid.

The grids are diffusers' own (:class:`DiffusersGrid`, a function ``steps -> timesteps in [0, 1]`` that
:func:`~mediadiff.diffusion.samplers.sample` takes as ``timesteps=``), so the same step count visits the
same noise levels. Known differences are stated where they arise: DDIM's ``prev_timestep = t - N // steps``
equals the next grid timestep only when ``steps`` divides ``num_train_timesteps`` (trailing spacing), and
``set_alpha_to_one=False`` ends diffusers' DDIM at ``alpha_bar[0]`` instead of the clean level.

Pure Python + torch: no diffusers import (the config is a dict) and no other mediadiff package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .schedules import CosineSchedule, FlowSchedule, Schedule, VPSchedule, vp_timesteps

__all__ = ["SUPPORTED_SCHEDULERS", "DiffusersGrid", "SchedulerSettings", "scheduler_settings"]

PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow_prediction": "flow"}
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
SUPPORTED_SCHEDULERS = (
    "CogVideoXDDIMScheduler",
    "CosineDPMSolverMultistepScheduler",
    "CogVideoXDPMScheduler",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "FlowMatchEulerDiscreteScheduler",
    "UniPCMultistepScheduler",
)


@dataclass(frozen=True)
class DiffusersGrid:
    """diffusers' ``set_timesteps(steps)`` grid as decreasing times in [0, 1] (``timestep / N``).

    kind:
      - ``"vp"``: DDIM / Euler / multistep grids over discrete timesteps: :func:`vp_timesteps` of
        ``spacing`` plus ``offset`` (``steps_offset``, leading spacing only), divided by ``N``;
      - ``"flow_match"``: ``FlowMatchEulerDiscreteScheduler``: ``linspace(1, shift(1 / N), steps)``,
        then shifted again (diffusers shifts its ``sigma_min`` at construction and the grid at
        ``set_timesteps``; both shifts are reproduced), Esser et al. 2024, Eq. 23;
      - ``"flow_sigmas"``: ``use_flow_sigmas`` of UniPC: ``linspace(1, 1 / N, steps + 1)[:-1]`` shifted by
        ``shift``, the first level moved to ``1 - 1e-6`` (diffusers keeps log-SNR finite there);
      - ``"dpm_flow_sigmas"``: ``use_flow_sigmas`` of DPM-Solver: ``(1 - 1 / N) (1 - i / steps)``,
        ``i < steps``, shifted by ``shift``.
    """

    kind: str
    num_train_timesteps: int = 1000
    spacing: str = "trailing"
    offset: int = 0
    shift: float = 1.0

    def _shift(self, t: float) -> float:
        return self.shift * t / (1 + (self.shift - 1) * t)

    def __call__(self, steps: int) -> list[float]:
        if self.kind == "vp":
            return self._times(steps)
        # diffusers keeps its flow sigmas in float32; so do these, so that both step between the same levels
        return torch.tensor(self._times(steps), dtype=torch.float32).double().tolist()

    def _times(self, steps: int) -> list[float]:
        n = self.num_train_timesteps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if self.kind == "vp":
            ks = vp_timesteps(steps, n, self.spacing)
            off = self.offset if self.spacing == "leading" else 0
            return [(k + off) / n for k in ks]
        if self.kind == "flow_match":
            lo = self._shift(1 / n)
            ts = [1.0] if steps == 1 else [1 + i * (lo - 1) / (steps - 1) for i in range(steps)]
            return [self._shift(t) for t in ts]
        if self.kind == "flow_sigmas":
            ts = [self._shift(1 + i * (1 / n - 1) / steps) for i in range(steps)]
            if abs(ts[0] - 1) < 1e-6:
                ts[0] -= 1e-6
            return ts
        if self.kind == "dpm_flow_sigmas":
            return [self._shift((1 - 1 / n) * (1 - i / steps)) for i in range(steps)]
        raise ValueError(
            f"unknown grid kind {self.kind!r}; known: ['dpm_flow_sigmas', 'flow_match', 'flow_sigmas', 'vp']"
        )


@dataclass
class SchedulerSettings:
    """What a diffusers scheduler config means here.

    schedule: the noise schedule; prediction: ``eps | v | x0 | flow``; sampler: a name in
    :data:`~mediadiff.diffusion.samplers.SAMPLERS`; sampler_options: extra keyword arguments of
    :func:`~mediadiff.diffusion.samplers.sample` (``timesteps``: a :class:`DiffusersGrid`; solver
    options such as ``order``, ``variant``, ``eta``); integer_timesteps: the scheduler casts the timesteps
    it hands the model to int64 (DDIM, UniPC, DPM-Solver), so the model sees ``floor(1000 sigma)`` on a
    flow grid while the solver steps with the exact ``sigma``; notes: known differences from the
    diffusers loop.
    """

    schedule: Schedule
    prediction: str
    sampler: str
    sampler_options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    integer_timesteps: bool = False


def _prediction(config: dict[str, Any], name: str, default: str = "epsilon") -> str:
    kind = config.get("prediction_type") or default
    if kind not in PREDICTION_TYPES:
        raise ValueError(
            f"{name}: prediction_type {kind!r} is not supported; known: {sorted(PREDICTION_TYPES)}"
        )
    return PREDICTION_TYPES[kind]


# the sigma spacings other than the scheduler's own table (Karras, exponential, beta): off, or refused
_SIGMA_SPACINGS = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}


def _refuse(config: dict[str, Any], name: str, flags: dict[str, Any]) -> None:
    """ValueError naming the first option of ``flags`` whose value in ``config`` is not the harmless one."""
    for key, harmless in flags.items():
        value = config.get(key, harmless)
        if value != harmless and not (harmless is None and value in (False, None)):
            raise ValueError(f"{name}: {key}={value!r} is not supported by mediadiff's samplers")


def _start(grid: DiffusersGrid) -> dict[str, Any]:
    """diffusers' flow pipelines start from unit noise whatever the first level (DPM-Solver's flow grid
    starts at ``shift(1 - 1 / N)``, not 1): ``sample(scale_noise=False)``. VP grids start at the noise
    scale ``sqrt(alpha^2 + sigma^2) = 1`` anyway."""
    return {} if grid.kind == "vp" else {"scale_noise": False}


def _vp_schedule(config: dict[str, Any], name: str, snr_shift_scale: float = 1.0) -> VPSchedule:
    beta = config.get("beta_schedule", "linear")
    if beta not in BETA_SCHEDULES:
        raise ValueError(f"{name}: beta_schedule {beta!r} is not supported; known: {sorted(BETA_SCHEDULES)}")
    if config.get("trained_betas") is not None:
        raise ValueError(f"{name}: trained_betas are not supported")
    kw = {}
    if beta != "squaredcos_cap_v2":
        kw = {"beta_start": config.get("beta_start", 1e-4), "beta_end": config.get("beta_end", 0.02)}
    return VPSchedule(
        BETA_SCHEDULES[beta],
        num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
        rescale_zero_terminal_snr=bool(config.get("rescale_betas_zero_snr", False)),
        snr_shift_scale=snr_shift_scale,
        **kw,
    )


def _vp_grid(config: dict[str, Any], name: str, default_spacing: str, multistep: bool) -> DiffusersGrid:
    spacing = config.get("timestep_spacing", default_spacing)
    if spacing not in ("linspace", "leading", "trailing"):
        raise ValueError(f"{name}: timestep_spacing {spacing!r} is not supported")
    if multistep and spacing != "trailing":
        # diffusers' multistep schedulers build linspace / leading from steps + 1 points, not Lin et al.'s
        raise ValueError(
            f"{name}: timestep_spacing {spacing!r} of a multistep scheduler is not reproduced; use 'trailing'"
        )
    return DiffusersGrid(
        "vp", int(config.get("num_train_timesteps", 1000)), spacing, int(config.get("steps_offset", 0))
    )


def _ddim(config: dict[str, Any], name: str) -> SchedulerSettings:
    _refuse(config, name, {"thresholding": False, "clip_sample": False})
    k = float(config.get("snr_shift_scale", 3.0)) if name.startswith("CogVideoX") else 1.0
    schedule = _vp_schedule(config, name, snr_shift_scale=k)
    notes = ["DDIM steps to t - N // steps: the next grid time only when steps divides N (trailing spacing)"]
    if not config.get("set_alpha_to_one", True):
        notes.append(
            "set_alpha_to_one=False: diffusers' last step ends at alpha_bar[0], ours at the clean level"
        )
    grid = _vp_grid(config, name, "leading", multistep=False)
    options: dict[str, Any] = {"timesteps": grid}
    sampler = "ddim"
    if name == "CogVideoXDPMScheduler":
        # SDE-DPM-Solver++(2M), midpoint form (Lu et al. 2022), on the DDIM grid: dpmpp_2m_sde with eta 1
        sampler = "dpmpp_2m_sde"
        notes.append("CogVideoXDPMScheduler: the same solver, but its own noise draws (frames-first layout)")
    return SchedulerSettings(
        schedule, _prediction(config, name), sampler, options, notes, integer_timesteps=True
    )


def _euler(config: dict[str, Any], name: str) -> SchedulerSettings:
    _refuse(
        config,
        name,
        {
            **_SIGMA_SPACINGS,
            "rescale_betas_zero_snr": False,
        },
    )
    grid = _vp_grid(config, name, "linspace", multistep=False)
    if grid.spacing == "linspace":  # fractional timesteps, sigma interpolated linearly (ours: log sigma)
        raise ValueError(
            f"{name}: timestep_spacing 'linspace' is not reproduced; use 'leading' or 'trailing'"
        )
    return SchedulerSettings(
        _vp_schedule(config, name), _prediction(config, name), "euler", {"timesteps": grid}
    )


def _flow_or_vp(config: dict[str, Any], name: str, flow_kind: str) -> tuple[Schedule, DiffusersGrid]:
    """Schedule and grid of a multistep solver: flow sigmas (``use_flow_sigmas``) or a VP table."""
    _refuse(
        config,
        name,
        {
            **_SIGMA_SPACINGS,
            "use_dynamic_shifting": False,
            "shift_terminal": None,
            "thresholding": False,
        },
    )
    if config.get("final_sigmas_type", "zero") != "zero":
        raise ValueError(
            f"{name}: final_sigmas_type {config['final_sigmas_type']!r}; only 'zero' is supported"
        )
    n = int(config.get("num_train_timesteps", 1000))
    if config.get("use_flow_sigmas", False):
        shift = float(config.get("flow_shift", 1.0))
        return FlowSchedule(shift=shift), DiffusersGrid(flow_kind, n, shift=shift)
    return _vp_schedule(config, name), _vp_grid(config, name, "linspace", multistep=True)


def _unipc(config: dict[str, Any], name: str) -> SchedulerSettings:
    if not config.get("predict_x0", True):
        raise ValueError(f"{name}: predict_x0=False (noise-prediction UniPC) is not supported")
    if config.get("disable_corrector"):
        raise ValueError(f"{name}: disable_corrector is not supported")
    schedule, grid = _flow_or_vp(config, name, "flow_sigmas")
    order = int(config.get("solver_order", 2))
    options = {"timesteps": grid, **_start(grid), "order": order, "variant": config.get("solver_type", "bh2")}
    notes = [] if config.get("lower_order_final", True) else ["lower_order_final=False is not reproduced"]
    return SchedulerSettings(
        schedule, _prediction(config, name), "unipc", options, notes, integer_timesteps=True
    )


def _dpm(config: dict[str, Any], name: str) -> SchedulerSettings:
    schedule, grid = _flow_or_vp(config, name, "dpm_flow_sigmas")
    algorithm = config.get("algorithm_type", "dpmsolver++")
    order = int(config.get("solver_order", 2))
    if algorithm == "dpmsolver++" and order == 2:
        sampler, options = "dpmpp_2m", {"timesteps": grid, **_start(grid)}
    elif algorithm == "dpmsolver++" and order == 3:
        sampler, options = "dpmpp_3m_sde", {"timesteps": grid, **_start(grid), "eta": 0.0}
    elif algorithm == "sde-dpmsolver++" and order == 2:
        sampler, options = "dpmpp_2m_sde", {"timesteps": grid, **_start(grid)}
    else:
        raise ValueError(f"{name}: algorithm_type {algorithm!r} with solver_order {order} is not supported")
    return SchedulerSettings(schedule, _prediction(config, name), sampler, options, integer_timesteps=True)


def _flow_match(config: dict[str, Any], name: str) -> SchedulerSettings:
    _refuse(
        config,
        name,
        {
            "use_dynamic_shifting": False,
            "shift_terminal": None,
            "invert_sigmas": False,
            **_SIGMA_SPACINGS,
            "stochastic_sampling": False,
        },
    )
    shift = float(config.get("shift", 1.0))
    if not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"{name}: shift must be > 0, got {shift}")
    grid = DiffusersGrid("flow_match", int(config.get("num_train_timesteps", 1000)), shift=shift)
    return SchedulerSettings(FlowSchedule(shift=shift), "flow", "euler", {"timesteps": grid, **_start(grid)})


def _cosine_dpm(config: dict[str, Any], name: str) -> SchedulerSettings:
    """``CosineDPMSolverMultistepScheduler`` (Stable Audio Open, Evans et al. 2024): EDM preconditioning
    (Karras et al. 2022, Table 1) with ``sigma_data = 1``, ``c_noise = (2 / pi) atan(sigma)`` and
    v-prediction, which is v-prediction on :class:`CosineSchedule` (see there); its second-order midpoint
    update with fresh noise at every step is SDE-DPM-Solver++(2M) with ``eta = 1`` (Lu et al. 2022), first
    order on the first step and on the last one to ``sigma = 0``, as ``dpmpp_2m_sde``; its exponential or
    Karras sigma grid from ``sigma_max`` to ``sigma_min`` is the schedule's grid of that spacing."""
    checks = {
        "sigma_data": (1.0, "the cosine reading needs sigma_data = 1"),
        "solver_order": (2, "only the second-order solver is reproduced"),
        "solver_type": ("midpoint", "only the midpoint solver is reproduced"),
        "final_sigmas_type": ("zero", "only a grid ending at sigma = 0 is reproduced"),
        "euler_at_final": (False, "euler_at_final is not reproduced"),
    }
    for key, (want, why) in checks.items():
        if config.get(key, want) != want:
            raise ValueError(f"{name}: {key}={config[key]!r} is not supported ({why})")
    if _prediction(config, name, "v_prediction") != "v":
        raise ValueError(
            f"{name}: prediction_type {config['prediction_type']!r}; only 'v_prediction' is supported"
        )
    spacing = config.get("sigma_schedule", "exponential")
    if spacing not in ("exponential", "karras"):
        raise ValueError(
            f"{name}: sigma_schedule {spacing!r} is not supported; known: ['exponential', 'karras']"
        )
    schedule = CosineSchedule(
        float(config.get("sigma_min", 0.3)),
        float(config.get("sigma_max", 500.0)),
        float(config.get("rho", 7.0)),
    )
    notes = [
        "SDE noise: fresh Gaussian noise per step from the item's generator, not diffusers' Brownian tree"
    ]
    return SchedulerSettings(schedule, "v", "dpmpp_2m_sde", {"spacing": spacing}, notes)


_READERS = {
    "CogVideoXDDIMScheduler": _ddim,
    "CosineDPMSolverMultistepScheduler": _cosine_dpm,
    "CogVideoXDPMScheduler": _ddim,
    "DDIMScheduler": _ddim,
    "DPMSolverMultistepScheduler": _dpm,
    "EulerDiscreteScheduler": _euler,
    "FlowMatchEulerDiscreteScheduler": _flow_match,
    "UniPCMultistepScheduler": _unipc,
}


def scheduler_settings(config: dict[str, Any]) -> SchedulerSettings:
    """Read a diffusers ``scheduler_config.json`` (a dict with ``_class_name``) as a
    :class:`SchedulerSettings`; ValueError naming the scheduler class (and the option) when it is not
    one mediadiff reproduces (:data:`SUPPORTED_SCHEDULERS`)."""
    name = config.get("_class_name")
    reader = _READERS.get(name)
    if reader is None:
        raise ValueError(
            f"diffusers scheduler {name!r} is not supported; supported: {list(SUPPORTED_SCHEDULERS)}"
        )
    return reader(config, name)
