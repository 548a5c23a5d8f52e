"""The training configuration and the command line that every recipe shares.

A recipe builds its parser with :func:`recipe_parser`, adds its own flags, and turns the parsed
arguments into a :class:`TrainConfig` with :func:`config_from_args`::

    parser = recipe_parser("Train a tiny latent model.", max_steps=2000, batch_size=8)
    parser.add_argument("--items", type=int, default=64)
    args = parser.parse_args()
    config = config_from_args(args)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mediadiff.nn.lora import DEFAULT_TARGETS, LoraSettings
from mediadiff.utils import ArgumentParser

from .precision import MIXED_PRECISION

__all__ = [
    "LR_SCHEDULES",
    "TrainConfig",
    "add_train_args",
    "config_from_args",
    "invalid_settings",
    "recipe_parser",
]

LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Everything the trainer needs besides the model, the data and the diffusion objective."""

    output_dir: str = "runs/run"  # run folder: checkpoints/, samples/, metrics.jsonl, config.json
    max_steps: int = 1000  # optimizer steps (skipped non-finite steps count too)
    batch_size: int = 8  # samples per process per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    seed: int = 0
    resume: bool = False  # continue from the newest checkpoint in output_dir (fresh start if none)
    # optimizer: AdamW (Loshchilov & Hutter 2019), fp32 master weights
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    lr_schedule: str = "constant"  # after warm-up: constant | cosine (to 0 at max_steps)
    max_grad_norm: float | None = 1.0  # clip the global gradient norm; None: no clipping
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16 (autocast; weights stay fp32)
    ema_decay: float = 0.999  # EMA of the weights after every optimizer step; 0 disables
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) at update n (see ema_decay_at)
    cond_dropout: float = 0.1  # fraction of captions replaced by the empty prompt (classifier-free guidance)
    # bookkeeping
    checkpoint_every: int = 500  # steps; a final checkpoint is always written
    keep_checkpoints: int = 3  # keep the newest N checkpoints
    sample_every: int = 0  # steps between calls of the sample callback; 0: only at the end
    log_every: int = 10  # steps between metrics.jsonl lines
    max_bad_steps: int = 5  # K consecutive non-finite losses stop the run
    num_workers: int = 0  # DataLoader worker processes
    compile: bool = False  # torch.compile the backbone in place (checkpoints keep the plain keys)
    peak_tflops: float | None = None  # one device's peak TFLOP/s for the MFU; None: known GPUs'
    # fine-tuning: start from a pretrained model; LoRA (Hu et al. 2022) trains low-rank adapters only
    init_from: str | None = None  # pipeline folder, shipped model or hub id whose backbone starts the run
    lora_rank: int = 0  # rank r of the adapters; 0: train every weight
    lora_alpha: float | None = None  # the update is scaled by alpha / r; None: alpha = r
    lora_targets: tuple[str, ...] | None = None  # module-name patterns; None: every attention projection
    extra: dict[str, Any] = field(default_factory=dict)  # recipe-specific values, stored in config.json

    def __post_init__(self) -> None:
        bad = invalid_settings({name: getattr(self, name) for name in _RULES})
        if bad:
            values = ", ".join(f"{name}={value!r} (must be {rule})" for name, value, rule in bad)
            raise ValueError(f"invalid training config: {values}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {list(MIXED_PRECISION)}, got {self.mixed_precision!r}"
            )
        self.betas = tuple(self.betas)
        if self.lora_targets is not None:
            self.lora_targets = tuple(self.lora_targets)
        if self.lora_targets is not None and not self.lora_rank:
            raise ValueError("lora_targets needs lora_rank >= 1 (--lora-rank R)")

    @property
    def lora(self) -> LoraSettings | None:
        """The adapters this run trains (None: a full fine-tune or training from scratch)."""
        if not self.lora_rank:
            return None
        return LoraSettings(self.lora_rank, self.lora_alpha, self.lora_targets or DEFAULT_TARGETS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stored as ``config.json`` in the run folder and in each checkpoint)."""
        return dataclasses.asdict(self)


def _finite(value: float) -> bool:
    return math.isfinite(value)


# field -> (test, what is valid): the numbers a TrainConfig must hold
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_steps": (lambda v: v >= 1, ">= 1"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "grad_accum": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "weight_decay": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "max_grad_norm": (lambda v: v is None or (_finite(v) and v > 0), "> 0, or none (no clipping)"),
    "checkpoint_every": (lambda v: v >= 1, ">= 1"),
    "keep_checkpoints": (lambda v: v >= 1, ">= 1"),
    "sample_every": (lambda v: v >= 0, ">= 0 (0: only at the end)"),
    "log_every": (lambda v: v >= 1, ">= 1"),
    "max_bad_steps": (lambda v: v >= 1, ">= 1"),
    "num_workers": (lambda v: v >= 0, ">= 0"),
    "ema_decay": (lambda v: 0.0 <= v < 1.0, "in [0, 1) (0: no EMA)"),
    "cond_dropout": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "lora_rank": (lambda v: v >= 0, ">= 0 (0: train every weight)"),
    "lora_alpha": (lambda v: v is None or (_finite(v) and v > 0), "> 0"),
    "peak_tflops": (lambda v: v is None or (_finite(v) and v > 0), "> 0 (TFLOP/s of one device)"),
}


def invalid_settings(values: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """The numbers among ``values`` (TrainConfig fields) that a :class:`TrainConfig` refuses:
    ``(name, value, what is valid)`` for each, in field order."""
    return [
        (name, values[name], rule)
        for name, (ok, rule) in _RULES.items()
        if name in values and not ok(values[name])
    ]


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off", "0") else float(text)


def add_train_args(parser: argparse.ArgumentParser, **defaults: Any) -> argparse.ArgumentParser:
    """Add the shared training flags to ``parser``; ``defaults`` override :class:`TrainConfig`'s defaults.

    Every recipe accepts ``--max-steps --output-dir --batch-size --resume --seed`` and ``--dry-run``
    (with ``--memory-gb``), plus the optimizer, precision, EMA and bookkeeping flags below.
    """
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(defaults) - known - {"memory_gb"})
    if unknown:
        raise TypeError(f"unknown TrainConfig default(s) {unknown}; known: {sorted(known)}")
    d = {**TrainConfig().to_dict(), **defaults}
    g = parser.add_argument_group("training (shared by all recipes)")
    g.add_argument("--max-steps", type=int, default=d["max_steps"], help="optimizer steps")
    g.add_argument("--output-dir", default=d["output_dir"], help="run folder")
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help="per process and micro-batch")
    g.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --output-dir"
    )
    g.add_argument("--seed", type=int, default=d["seed"], help="global seed; process i uses seed + i")
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="print parameter count, activation memory per sample and the largest batch that fits; do not train",
    )
    g.add_argument(
        "--memory-gb",
        type=float,
        default=defaults.get("memory_gb"),
        help="memory budget for --dry-run's largest batch (default: the GPU's memory, or the machine's RAM)",
    )
    g.add_argument("--grad-accum", type=int, default=d["grad_accum"], help="micro-batches per step")
    g.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate")
    g.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    g.add_argument("--warmup-steps", type=int, default=d["warmup_steps"])
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d["lr_schedule"])
    g.add_argument(
        "--max-grad-norm", type=_optional_float, default=d["max_grad_norm"], help="clip norm; 'none' disables"
    )
    g.add_argument("--mixed-precision", choices=MIXED_PRECISION, default=d["mixed_precision"])
    g.add_argument("--ema-decay", type=float, default=d["ema_decay"], help="0 disables the EMA")
    g.add_argument(
        "--ema-warmup",
        action=argparse.BooleanOptionalAction,
        default=d["ema_warmup"],
        help="ramp the EMA decay up as min(decay, (1 + n) / (10 + n))",
    )
    g.add_argument("--cond-dropout", type=float, default=d["cond_dropout"], help="caption dropout for CFG")
    g.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"])
    g.add_argument("--keep-checkpoints", type=int, default=d["keep_checkpoints"])
    g.add_argument("--sample-every", type=int, default=d["sample_every"], help="0: sample at the end only")
    g.add_argument("--log-every", type=int, default=d["log_every"])
    g.add_argument(
        "--max-bad-steps", type=int, default=d["max_bad_steps"], help="K non-finite losses in a row stop"
    )
    g.add_argument("--num-workers", type=int, default=d["num_workers"], help="DataLoader workers")
    g.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=d["compile"],
        help="torch.compile the backbone for training (the first steps compile; checkpoints are the same files)",
    )
    g.add_argument(
        "--peak-tflops",
        type=float,
        default=d["peak_tflops"],
        help="one device's peak TFLOP/s for the MFU in metrics.jsonl (default: known GPUs' dense bf16 peak)",
    )
    f = parser.add_argument_group("fine-tuning (shared by all recipes)")
    f.add_argument(
        "--init-from",
        default=d["init_from"],
        metavar="MODEL",
        help="start from this model's backbone: a pipeline folder, a shipped model name or a hub id",
    )
    f.add_argument(
        "--lora-rank",
        type=int,
        default=d["lora_rank"],
        metavar="R",
        help="train rank-R LoRA adapters only (Hu et al. 2022), saved as OUTPUT_DIR/lora.safetensors; 0: every weight",
    )
    f.add_argument(
        "--lora-alpha",
        type=float,
        default=d["lora_alpha"],
        help="LoRA update scale alpha / r (default alpha = r)",
    )
    f.add_argument(
        "--lora-targets",
        nargs="+",
        default=d["lora_targets"],
        metavar="NAME",
        help=f"module-name patterns the adapters go on (default: {' '.join(DEFAULT_TARGETS[:6])} ...)",
    )
    return parser


def recipe_parser(description: str, **defaults: Any) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the shared training flags (:func:`add_train_args`) already added; a bad
    flag is one line (``shapes_dit.py: error: argument --lr: ...``) and exit code 2."""
    parser = ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_train_args(parser, **defaults)


def config_from_args(args: argparse.Namespace, **extra: Any) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed shared flags; ``extra`` lands in ``config.extra``.

    A value out of range is a ValueError that names its flag and what is valid, e.g.
    ``--max-steps 0: must be >= 1``."""
    values = vars(args)
    kwargs = {f.name: values[f.name] for f in dataclasses.fields(TrainConfig) if f.name in values}
    bad = invalid_settings(kwargs)
    if bad:
        raise ValueError(
            "; ".join(f"--{name.replace('_', '-')} {value}: must be {rule}" for name, value, rule in bad)
        )
    return TrainConfig(**kwargs, extra=extra)
