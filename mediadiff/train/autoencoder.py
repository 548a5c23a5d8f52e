"""One training loop for every autoencoder and vocoder: a model that reconstructs its input, optionally
against a discriminator. It knows no modality; a recipe says what to build, what a batch is, what the
loss and the held-out numbers are, and the loop does the rest.

What the loop does
------------------
- Flags (:func:`add_arguments`): ``--output-dir --final-dir --max-steps --max-minutes --batch-size --lr
  --weight-decay --warmup-steps --min-lr-ratio --grad-clip --seed --resume --precision --threads
  --num-workers --log-every --eval-every --eval-clips --checkpoint-every --keep``, and with
  ``adversarial=True`` also ``--adversarial-from STEP`` (off by default) and ``--disc-lr``. The recipe
  adds its own flags to the same parser; :func:`parse_and_check` parses and checks them all.
- Optimisation: AdamW (betas 0.9, 0.99) with linear warm-up then cosine decay to ``lr * min_lr_ratio``
  at ``--max-steps`` (:func:`lr_at`), gradient clipping, bf16/fp16 autocast through ``accelerate``
  (``--precision``; the recipe's loss enters ``ctx.accelerator.autocast()`` itself), CPU or CUDA.
- Data: step ``s`` takes sample positions ``s * batch ... (s + 1) * batch - 1`` of :class:`IndexStream`
  (the index itself on an infinite set, a seeded per-epoch permutation on a finite one), and its random
  generator (``ctx.generator``, on the device) is seeded from ``(--seed, s)``; so ``--resume`` continues
  with exactly the batches and noise the uninterrupted run would have used: a run stopped at any
  checkpoint and resumed with the same flags ends bit for bit where the straight run ends (on CPU).
  The cosine is a function of ``--max-steps``, so N/2 steps then ``--resume --max-steps N`` equals N
  steps straight when the lr is constant after warm-up (``--min-lr-ratio 1``); otherwise the resumed
  run re-targets the cosine to the new ``--max-steps``.
- A step whose loss or gradient norm is not finite is skipped (no update; a ``skipped`` event in the
  metrics, counted in ``skipped_steps``); :data:`MAX_BAD_STEPS` in a row stop the run with a message.
- Every ``--log-every`` steps a record in ``metrics.jsonl`` (loss, the recipe's logs, gradient norm, lr,
  train_seconds) and the tqdm bar's postfix; every ``--eval-every`` steps the recipe's held-out
  evaluation (its numbers in ``metrics.jsonl``, the best ``main_metric`` kept in the checkpoint state).
- Every ``--checkpoint-every`` steps ``checkpoints/step_XXXXXXX/``, written atomically
  (:func:`mediadiff.utils.staged_dir`) and pruned to the newest ``--keep``: the model's
  ``save_pretrained`` folder (read back with the recipe's ``load``), ``optimizer.pt``, ``state.json``
  (step, train_seconds, skipped_steps, best metric) and, with a discriminator,
  ``discriminator.safetensors`` and ``disc_optimizer.pt``. ``--resume`` continues from the newest one
  (or starts fresh when there is none). ``train_seconds`` is kept there, so ``--max-minutes`` counts
  the training time of all the runs of one output folder; when it is reached the run stops cleanly and
  still writes ``final/``.
- At the end (main process): the recipe's ``finalize`` (e.g. latent statistics), a last held-out
  evaluation, ``final/`` (``--final-dir``) written with ``save_pretrained`` and ``final/training.json``:
  the recipe's ``summary`` keys, then steps, batch_size, train_seconds, skipped_steps, the held-out
  numbers (the recipe's ``report``), precision, torch_threads and the command. :func:`train` returns
  that dict.

The adversarial phase
---------------------
With ``discriminator`` and ``discriminator_loss`` in the recipe, ``add_arguments(..., adversarial=True)``
and ``--adversarial-from S``, the loop builds the discriminator (seeded from ``--seed`` alone, so it is
the same whenever it is built) with its own AdamW (``--disc-lr``, default ``--lr``; betas 0.8, 0.99;
the same warm-up/cosine multiplier as the generator's lr). From step ``S`` on, ``ctx.discriminator`` is
that discriminator and each step is a simultaneous update at the current weights ``(G, D)``:

1. ``recipe.loss(model, batch, ctx)`` returns the generator's loss (reconstruction plus the recipe's
   adversarial and feature-matching terms through ``ctx.discriminator``) with ``real`` and ``fake``
   (the target and the model's output); its backward is taken and clipped;
2. ``recipe.discriminator_loss(discriminator, real.detach(), fake.detach(), ctx)`` is the
   discriminator's loss; its backward is taken (after zeroing whatever step 1 left in its gradients)
   and clipped;
3. if both are finite, both optimizers step; otherwise neither does and the step counts as skipped.

Before step ``S`` (and without ``--adversarial-from``) ``ctx.discriminator`` is None: the recipe's loss
must then leave out its adversarial terms. The discriminator and its optimizer state go into every
checkpoint, so resuming is exact in this phase too. ``metrics.jsonl`` then also has ``disc_loss``, the
discriminator loss's logs (name them apart from the generator's, e.g. ``disc_real``),
``disc_grad_norm`` and ``disc_lr``.

A recipe
--------
A recipe is an :class:`AutoencoderRecipe`: functions for what only it knows. A minimal one, for a
conv autoencoder on the 1-D ``Bumps`` of :mod:`mediadiff.train.testing` (``MyAutoencoder`` has
``save_pretrained(folder)`` and ``from_pretrained(folder)``)::

    import argparse

    import torch

    from mediadiff.train.autoencoder import (
        AutoencoderRecipe, LossOutput, add_arguments, parse_and_check, train,
    )
    from mediadiff.train.testing import Bumps

    HELDOUT_SEED = 777  # Bumps seed of the held-out signals; training must use another


    def data(args):  # (training set, held-out set, is the training set infinite?)
        train_set = Bumps(num_items=10**6, length=args.length, seed=args.seed)
        return train_set, Bumps(num_items=args.eval_clips, length=args.length, seed=HELDOUT_SEED), True


    def loss(model, x, ctx):  # x: [b c t]; ctx: step, generator, args, accelerator, discriminator, logging
        with ctx.accelerator.autocast():
            rec = model(x)  # [b c t]
        mse = (rec.float() - x).pow(2).mean()
        return LossOutput(mse, {"mse": mse.detach()}, real=x, fake=rec)


    def evaluate(model, heldout, args, accelerator):  # in eval mode, under no_grad
        x = torch.stack([heldout[i]["signal"] for i in range(len(heldout))]).to(accelerator.device)
        return {"eval_mse": (model(x) - x).pow(2).mean().item()}


    RECIPE = AutoencoderRecipe(
        script="recipes/audio/my_autoencoder.py",
        name="train my ae",
        build=lambda args: MyAutoencoder(width=args.width),  # after torch.manual_seed(--seed)
        load=MyAutoencoder.from_pretrained,  # a checkpoint's save_pretrained folder -> model
        data=data,
        collate=lambda items: torch.stack([item["signal"] for item in items]),  # [b c t]
        loss=loss,
        evaluate=evaluate,
        main_metric="eval_mse",
        higher_is_better=False,
        heldout_seed=lambda args: HELDOUT_SEED,
        summary=lambda args: {"data": "bumps", "train_seed": args.seed, "length": args.length},
    )


    def main(argv=None):
        parser = argparse.ArgumentParser(description=__doc__)
        add_arguments(parser, defaults={"max_steps": 2000, "batch_size": 16, "lr": 3e-4})
        parser.add_argument("--length", type=int, default=64)  # the recipe's own flags
        parser.add_argument("--width", type=int, default=32)
        return train(parse_and_check(parser, RECIPE, argv), RECIPE, argv=argv)

For an adversarial phase, add ``discriminator=lambda args: MyDiscriminator()`` and
``discriminator_loss=...`` (returning a :class:`LossOutput`), pass ``adversarial=True`` to
:func:`add_arguments`, and in ``loss`` add the adversarial terms when ``ctx.discriminator`` is not None::

    if ctx.discriminator is not None:
        with ctx.accelerator.autocast():
            score = ctx.discriminator(rec)  # [b ...] logits of "real"
        adv = (1 - score.float()).relu().mean()  # hinge
        total = total + args.adv_weight * adv

``recipes/video/train_vae.py`` is the full recipe of the causal video VAE; ``tests/test_train_autoencoder.py``
has a small one with a discriminator.

Rules a recipe keeps: all randomness of a step comes from ``ctx.generator`` (or from the dataset, which
is deterministic per index); the loss is float32 outside the autocast block; ``logs`` values are floats
or 0-d tensors, read (``.item()``) only on logging steps; anything that itself syncs with the device
(``.item()``) is computed only when ``ctx.logging`` is true. The model the loss gets is the prepared
(possibly DDP-wrapped) one; ``evaluate``, ``finalize`` and ``check`` get the bare model.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from mediadiff.utils import GracefulStop, LockedError, atomic_write_text, check_output_dir, staged_dir

from .checkpoint import CheckpointError, lock_run_folder, remove_stale_temporaries
from .trainer import any_process

__all__ = [
    "MAX_BAD_STEPS",
    "AutoencoderRecipe",
    "IndexStream",
    "LossContext",
    "LossOutput",
    "add_arguments",
    "check_arguments",
    "latest_checkpoint",
    "lr_at",
    "parse_and_check",
    "train",
]

MAX_BAD_STEPS = 20  # consecutive non-finite steps before the run gives up
DISC_BETAS = (0.8, 0.99)  # AdamW betas of the discriminator (HiFi-GAN's)


# ----------------------------------------------------------------------------------------- the contract


@dataclass
class LossOutput:
    """What a recipe's loss (or discriminator loss) returns for one step."""

    loss: torch.Tensor  # scalar to minimise, float32
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)  # numbers for metrics.jsonl
    real: torch.Tensor | None = None  # adversarial phase: the target the discriminator sees as real ...
    fake: torch.Tensor | None = None  # ... and the model's output (graph kept), seen as fake


@dataclass
class LossContext:
    """What the loop hands a recipe's loss at each step."""

    step: int  # the step being taken, 0-based
    generator: torch.Generator  # on the device, seeded from (--seed, step): the step's only randomness
    args: argparse.Namespace  # the parsed flags
    accelerator: Accelerator  # autocast(), device, unwrap_model()
    discriminator: nn.Module | None  # the (prepared) discriminator in the adversarial phase, else None
    logging: bool  # whether this step's logs are written: compute syncing diagnostics only then


@dataclass(frozen=True, kw_only=True)
class AutoencoderRecipe:
    """What a modality's recipe supplies to :func:`train` (see the module docstring for an example).

    Required: where the recipe lives, how to build, load and feed the model, its loss and its held-out
    evaluation. Optional: a size check, the discriminator of the adversarial phase, a last step before
    ``final/`` is written, what ``training.json`` says, the held-out seed and the progress bar.
    """

    # the recipe's path, recorded in training.json's command ("recipes/video/train_vae.py")
    script: str
    # progress-bar name ("train vae")
    name: str
    # a fresh model from the flags (called after torch.manual_seed(--seed)); it has save_pretrained(folder)
    build: Callable[[argparse.Namespace], nn.Module]
    # the model of a checkpoint folder (what its save_pretrained wrote)
    load: Callable[[Path], nn.Module]
    # (training set, held-out set, is the training set infinite?); items deterministic per index
    data: Callable[[argparse.Namespace], tuple[Dataset, Dataset, bool]]
    # dataset items -> a batch: a tensor, or a dict / tuple of tensors
    collate: Callable[[list[Any]], Any]
    # (prepared model, batch on the device, ctx) -> the model's loss, logs and (adversarial) real / fake
    loss: Callable[[nn.Module, Any, LossContext], LossOutput]
    # (bare model in eval mode under no_grad, held-out set, args, accelerator) -> held-out numbers
    evaluate: Callable[[nn.Module, Dataset, argparse.Namespace, Accelerator], Mapping[str, float]]
    # the key of evaluate's numbers kept as "best_<key>" in the checkpoint state, and which way is better
    main_metric: str
    higher_is_better: bool
    # (bare model, args) -> None: fail early on flags the model cannot take (bad sizes)
    check: Callable[[nn.Module, argparse.Namespace], None] | None = None
    # (bare model, args) -> None: before the optimizer is built, on fresh and resumed runs alike (what
    # training holds fixed: requires_grad_(False) on a pretrained part)
    prepare: Callable[[nn.Module, argparse.Namespace], None] | None = None
    # args -> a fresh discriminator, for --adversarial-from
    discriminator: Callable[[argparse.Namespace], nn.Module] | None = None
    # (prepared discriminator, real, fake (both detached), ctx) -> the discriminator's loss and logs
    discriminator_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, LossContext], LossOutput] | None = (
        None
    )
    # (bare model, training set, args, accelerator) -> None, before the last evaluation (latent statistics)
    finalize: Callable[[nn.Module, Dataset, argparse.Namespace, Accelerator], None] | None = None
    # args -> the first keys of training.json: what was trained on (data, held-out set, sizes)
    summary: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    # the last held-out numbers -> training.json's keys for them (default: {"heldout_" + key: value})
    report: Callable[[dict[str, float]], dict[str, Any]] | None = None
    # args -> the held-out set's seed (a synthetic set's), which --seed must not equal; None if it has none
    heldout_seed: Callable[[argparse.Namespace], int | None] | None = None
    # progress-bar label -> format over the log record, e.g. {"psnr": "{train_psnr:.1f}"}
    progress: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- flags

DEFAULTS: dict[str, Any] = {
    "max_steps": 3000,
    "max_minutes": None,
    "batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "warmup_steps": 100,
    "min_lr_ratio": 0.05,
    "grad_clip": 1.0,
    "seed": 0,
    "precision": "bf16",
    "threads": None,
    "num_workers": 0,
    "log_every": 10,
    "eval_every": 250,
    "eval_clips": 32,
    "checkpoint_every": 250,
    "keep": 2,
    "adversarial_from": None,
    "disc_lr": None,
}
_POSITIVE = ("max_steps", "batch_size", "eval_every", "checkpoint_every", "keep", "log_every", "eval_clips")


def add_arguments(
    parser: argparse.ArgumentParser, *, defaults: Mapping[str, Any] | None = None, adversarial: bool = False
) -> None:
    """Add the loop's flags to ``parser`` (in a group of their own); ``defaults`` overrides
    :data:`DEFAULTS` by destination name (``{"max_steps": 2000}``). ``adversarial`` adds
    ``--adversarial-from`` and ``--disc-lr`` (for a recipe with a discriminator)."""
    unknown = set(defaults or {}) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown defaults {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    d = {**DEFAULTS, **(defaults or {})}
    g = parser.add_argument_group("training (mediadiff.train.autoencoder)")
    g.add_argument("--output-dir", type=Path, required=True)
    g.add_argument(
        "--final-dir", type=Path, default=None, help="where the final model goes (default OUTPUT_DIR/final)"
    )
    g.add_argument("--max-steps", type=int, default=d["max_steps"])
    g.add_argument(
        "--max-minutes", type=float, default=d["max_minutes"], help="stop early after this much training time"
    )
    g.add_argument("--batch-size", type=int, default=d["batch_size"])
    g.add_argument("--lr", type=float, default=d["lr"])
    g.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    g.add_argument("--warmup-steps", type=int, default=d["warmup_steps"])
    g.add_argument(
        "--min-lr-ratio", type=float, default=d["min_lr_ratio"], help="cosine decays the lr to lr * this"
    )
    g.add_argument("--grad-clip", type=float, default=d["grad_clip"])
    g.add_argument("--seed", type=int, default=d["seed"])
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUTPUT_DIR")
    g.add_argument(
        "--precision", choices=["no", "bf16", "fp16"], default=d["precision"], help="autocast precision"
    )
    g.add_argument(
        "--threads", type=int, default=d["threads"], help="torch CPU threads (default: torch's choice)"
    )
    g.add_argument("--num-workers", type=int, default=d["num_workers"], help="DataLoader workers")
    g.add_argument("--log-every", type=int, default=d["log_every"])
    g.add_argument("--eval-every", type=int, default=d["eval_every"])
    g.add_argument("--eval-clips", type=int, default=d["eval_clips"])
    g.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"])
    g.add_argument("--keep", type=int, default=d["keep"], help="checkpoints to keep")
    if adversarial:
        g.add_argument(
            "--adversarial-from",
            type=int,
            default=d["adversarial_from"],
            metavar="STEP",
            help="train against the discriminator from this step on (default: never)",
        )
        g.add_argument("--disc-lr", type=float, default=d["disc_lr"], help="discriminator lr (default: --lr)")


def check_arguments(args: argparse.Namespace, recipe: AutoencoderRecipe) -> None:
    """Raise ``ValueError`` naming the first flag that cannot work (the held-out seed, a count < 1, an
    adversarial phase without a discriminator)."""
    heldout = recipe.heldout_seed(args) if recipe.heldout_seed is not None else None
    if heldout is not None and args.seed == heldout:
        raise ValueError(f"--seed {heldout} is the seed of the held-out set; train with another one")
    for name in _POSITIVE:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("output_dir", "final_dir"):  # a file, or a folder that cannot be written: refused now
        if getattr(args, name, None) is not None:
            check_output_dir(getattr(args, name), f"--{name.replace('_', '-')}")
    start = getattr(args, "adversarial_from", None)
    if start is not None:
        if recipe.discriminator is None or recipe.discriminator_loss is None:
            raise ValueError(f"--adversarial-from: {recipe.script} has no discriminator")
        if start < 0:
            raise ValueError(f"--adversarial-from must be >= 0, got {start}")
        if args.disc_lr is not None and args.disc_lr <= 0:
            raise ValueError(f"--disc-lr must be > 0, got {args.disc_lr}")


def parse_and_check(
    parser: argparse.ArgumentParser, recipe: AutoencoderRecipe, argv: list[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` then :func:`check_arguments`; a failed check is a usage error (exit 2)."""
    args = parser.parse_args(argv)
    try:
        check_arguments(args, recipe)
    except ValueError as err:
        parser.error(str(err))
    return args


# ----------------------------------------------------------------------------------------- data


class IndexStream(Sampler[int]):
    """Dataset indices for global sample positions ``start, start+1, ...`` of this process.

    Position ``pos`` maps to index ``pos`` on an infinite set, or to a per-epoch permutation (seeded by
    ``seed + epoch``) of ``range(n)`` on a finite one. Processes take interleaved positions. Pure in
    ``pos``, so resuming at a step reproduces the exact batches.
    """

    def __init__(self, n: int | None, start: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.start, self.seed, self.rank, self.world = n, start, seed, rank, world
        self._perm: tuple[int, torch.Tensor] | None = None

    def index(self, pos: int) -> int:
        """The dataset index at global position ``pos``."""
        if self.n is None:
            return pos
        epoch, i = divmod(pos, self.n)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return int(self._perm[1][i])

    def __iter__(self) -> Iterator[int]:
        pos = self.start
        while True:
            yield self.index(pos * self.world + self.rank)
            pos += 1


def _to_device(batch: Any, device: torch.device) -> Any:
    """A tensor, or a dict / tuple / list of them, moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


# ----------------------------------------------------------------------------------------- checkpoints


def latest_checkpoint(out: Path) -> Path | None:
    """The newest ``checkpoints/step_XXXXXXX`` folder of run folder ``out``, or None."""
    found = sorted((Path(out) / "checkpoints").glob("step_*"))
    return found[-1] if found else None


def _save_checkpoint(
    out: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict,
    keep: int,
    discriminator: nn.Module | None = None,
    disc_optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write ``checkpoints/step_XXXXXXX`` atomically (temp folder, fsync, rename) and prune to ``keep``.

    A write that fails (a full disk) leaves nothing of the new checkpoint and raises
    :class:`~mediadiff.train.checkpoint.CheckpointError`; the previous one is untouched."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    previous = latest_checkpoint(out)
    try:
        with staged_dir(root / f"step_{step:07d}") as tmp:  # fsynced and renamed into place on success
            model.save_pretrained(tmp)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            if discriminator is not None:
                from safetensors.torch import save_model

                save_model(discriminator, str(tmp / "discriminator.safetensors"))
                torch.save(disc_optimizer.state_dict(), tmp / "disc_optimizer.pt")
            (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    except Exception as err:  # OSError, safetensors' own error on a failed write, ...
        kept = (
            f"the previous checkpoint {previous} is intact" if previous else "there is no earlier checkpoint"
        )
        raise CheckpointError(
            f"could not write the checkpoint of step {step} to {root}: {type(err).__name__}: {err}. Nothing of "
            f"it was kept; {kept}. Free space (or fix the folder) and continue with --resume."
        ) from err
    for old in sorted(root.glob("step_*"))[:-keep]:
        gone = old.with_name(f".tmp-pruned-{old.name}")  # out of sight in one rename, then deleted
        old.rename(gone)
        shutil.rmtree(gone)


# ----------------------------------------------------------------------------------------- loop


def lr_at(step: int, args: argparse.Namespace, base: float | None = None) -> float:
    """Linear warm-up, then cosine decay to ``base * min_lr_ratio`` at ``max_steps`` (``base``: --lr)."""
    base = args.lr if base is None else base
    if step < args.warmup_steps:
        return base * (step + 1) / args.warmup_steps
    progress = min(1.0, (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps))
    return base * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _evaluate(
    recipe: AutoencoderRecipe, model: nn.Module, data: Dataset, args: argparse.Namespace, accelerator
) -> dict[str, float]:
    """The recipe's held-out numbers, in eval mode under no_grad."""
    model.eval()
    with torch.no_grad():
        metrics = {k: float(v) for k, v in recipe.evaluate(model, data, args, accelerator).items()}
    model.train()
    if recipe.main_metric not in metrics:
        raise KeyError(
            f"{recipe.script}: evaluate returned {sorted(metrics)}, not main_metric {recipe.main_metric!r}"
        )
    return metrics


def _numbers(logs: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
    return {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in logs.items()}


def _config_of(model: nn.Module) -> Any:
    """The model's config as a JSON-able dict (a dataclass's fields, a mapping), for the start record."""
    config = getattr(model, "config", None)
    if isinstance(config, Mapping):
        return dict(config)
    return vars(config) if hasattr(config, "__dict__") else config


def train(args: argparse.Namespace, recipe: AutoencoderRecipe, *, argv: list[str] | None = None) -> dict:
    """Train ``recipe``'s model with the flags ``args`` (see the module docstring); ``argv`` is the
    command line to record (default ``sys.argv[1:]``). Returns the summary written to ``training.json``
    (an empty dict in processes other than the main one)."""
    check_arguments(args, recipe)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    AcceleratorState._reset_state(reset_partial_state=False)  # a new run's settings, same process group
    accelerator = Accelerator(mixed_precision=args.precision, cpu=not torch.cuda.is_available())
    try:
        lock = (
            lock_run_folder(out, lambda m: print(m, file=sys.stderr)) if accelerator.is_main_process else None
        )
    except LockedError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        return _train(args, recipe, argv, out, accelerator)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    finally:
        if lock is not None:
            lock.release()


def _train(
    args: argparse.Namespace,
    recipe: AutoencoderRecipe,
    argv: list[str] | None,
    out: Path,
    accelerator: Accelerator,
) -> dict:
    """:func:`train` once the run folder is locked."""
    if accelerator.is_main_process:
        remove_stale_temporaries(out / "checkpoints")  # what an interrupted save or prune left
    torch.manual_seed(args.seed)
    best_key = f"best_{recipe.main_metric}"

    ckpt = latest_checkpoint(out) if args.resume else None
    if ckpt is not None:
        model = recipe.load(ckpt)
        state = json.loads((ckpt / "state.json").read_text())
        print(f"resuming from {ckpt} (step {state['step']})", file=sys.stderr)
    else:
        if args.resume:
            print(f"--resume: no checkpoint in {out / 'checkpoints'}; starting fresh", file=sys.stderr)
        model = recipe.build(args)
        state = {"step": 0, "train_seconds": 0.0, "skipped_steps": 0, best_key: None}
    if recipe.check is not None:
        recipe.check(model, args)
    if recipe.prepare is not None:
        recipe.prepare(model, args)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99)
    )
    if ckpt is not None:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))

    adversarial_from = getattr(args, "adversarial_from", None)
    disc = disc_optimizer = None
    if adversarial_from is not None:
        disc_lr = args.disc_lr if args.disc_lr is not None else args.lr
        with torch.random.fork_rng(devices=[]):  # the same discriminator whenever it is built
            torch.manual_seed(args.seed + 1)
            disc = recipe.discriminator(args)
        disc.train()
        disc_optimizer = torch.optim.AdamW(
            disc.parameters(), lr=disc_lr, weight_decay=args.weight_decay, betas=DISC_BETAS
        )
        if ckpt is not None and (ckpt / "discriminator.safetensors").is_file():
            from safetensors.torch import load_model

            load_model(disc, str(ckpt / "discriminator.safetensors"))
            disc_optimizer.load_state_dict(
                torch.load(ckpt / "disc_optimizer.pt", map_location="cpu", weights_only=True)
            )
        model, optimizer, disc, disc_optimizer = accelerator.prepare(model, optimizer, disc, disc_optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    raw_disc = accelerator.unwrap_model(disc) if disc is not None else None

    train_data, heldout, infinite = recipe.data(args)
    step = state["step"]
    stream = IndexStream(
        None if infinite else len(train_data),
        step * args.batch_size,
        args.seed,
        accelerator.process_index,
        accelerator.num_processes,
    )
    loader = torch.utils.data.DataLoader(
        train_data,
        batch_size=args.batch_size,
        sampler=stream,
        collate_fn=recipe.collate,
        num_workers=args.num_workers,
    )
    batches = iter(loader)
    metrics_file = open(out / "metrics.jsonl", "a") if accelerator.is_main_process else None

    def log(record: dict) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(record, default=str) + "\n")
            metrics_file.flush()

    def plot() -> None:
        """Redraw ``curves.png`` (main process); a failure to draw never stops the run."""
        if metrics_file is None:
            return
        from .plot import CURVES_NAME, plot_runs

        try:
            plot_runs([out], out / CURVES_NAME)
        except Exception as err:
            print(f"could not draw {out / CURVES_NAME}: {type(err).__name__}: {err}", file=sys.stderr)

    # SIGTERM / Ctrl-C from here on end the step, write a checkpoint and exit (left in the finally below)
    stop = GracefulStop(log=lambda m: print(m, file=sys.stderr) if accelerator.is_main_process else None)
    stop.__enter__()
    try:
        start = {
            "event": "start",
            "step": step,
            "args": {k: str(v) for k, v in vars(args).items()},
            "params": sum(p.numel() for p in raw.parameters()),
            "trainable_params": sum(p.numel() for p in raw.parameters() if p.requires_grad),
            "config": _config_of(raw),
        }
        if raw_disc is not None:
            start["disc_params"] = sum(p.numel() for p in raw_disc.parameters())
        log(start)
        bar = tqdm(
            total=args.max_steps, initial=step, desc=recipe.name, disable=not accelerator.is_main_process
        )
        bad_in_a_row = 0
        t_run = time.perf_counter()
        train_seconds_at_start = state["train_seconds"]
        latest_eval = None
        saved = True  # whether this step's checkpoint is on disk
        agree = functools.partial(any_process, accelerator)  # every process stops at the same step
        while step < args.max_steps and not stop.agreed(agree):
            out_of_time = args.max_minutes is not None and state["train_seconds"] / 60 >= args.max_minutes
            if agree(out_of_time):  # each process's own clock: they may disagree by a step
                print(f"--max-minutes {args.max_minutes} reached at step {step}", file=sys.stderr)
                break
            batch = _to_device(next(batches), accelerator.device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, args)
            adversarial = disc is not None and step >= adversarial_from
            if adversarial:
                for group in disc_optimizer.param_groups:
                    group["lr"] = lr_at(step, args, disc_lr)
            g = torch.Generator(device=accelerator.device).manual_seed(args.seed * 1_000_003 + step)
            log_step = (step + 1) % args.log_every == 0 or step == 0  # step + 1 is logged after it
            ctx = LossContext(step, g, args, accelerator, disc if adversarial else None, log_step)

            # the model (generator) side
            result = recipe.loss(model, batch, ctx)
            loss = result.loss
            optimizer.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                accelerator.backward(loss)
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
            else:
                grad_norm = torch.tensor(float("nan"))
            good = bool(torch.isfinite(loss) and torch.isfinite(grad_norm))
            disc_loss = disc_norm = None

            # the discriminator side, at the same weights
            if adversarial and good:
                if result.real is None or result.fake is None:
                    raise ValueError(
                        f"{recipe.script}: the loss must return real and fake in the adversarial phase"
                    )
                disc_optimizer.zero_grad(set_to_none=True)  # drop what the generator's backward left
                disc_result = recipe.discriminator_loss(disc, result.real.detach(), result.fake.detach(), ctx)
                disc_loss = disc_result.loss
                if torch.isfinite(disc_loss):
                    accelerator.backward(disc_loss)
                    disc_norm = accelerator.clip_grad_norm_(disc.parameters(), args.grad_clip)
                else:
                    disc_norm = torch.tensor(float("nan"))
                good = bool(torch.isfinite(disc_loss) and torch.isfinite(disc_norm))

            if not good:
                state["skipped_steps"] += 1
                bad_in_a_row += 1
                skipped = {
                    "event": "skipped",
                    "step": step,
                    "loss": loss.item(),
                    "grad_norm": grad_norm.item(),
                }
                if disc_loss is not None:
                    skipped |= {"disc_loss": disc_loss.item(), "disc_grad_norm": disc_norm.item()}
                log(skipped)
                if bad_in_a_row >= MAX_BAD_STEPS:
                    raise SystemExit(
                        f"{MAX_BAD_STEPS} non-finite steps in a row at step {step}; lower --lr and --resume"
                    )
                optimizer.zero_grad(set_to_none=True)
                if disc_optimizer is not None:
                    disc_optimizer.zero_grad(set_to_none=True)
                step += 1  # move on to the next batch so a bad batch is not retried forever
                continue
            bad_in_a_row = 0
            optimizer.step()
            if adversarial:
                disc_optimizer.step()
            step += 1
            state["train_seconds"] = train_seconds_at_start + time.perf_counter() - t_run
            bar.update(1)
            if log_step:
                record = {"step": step, "loss": loss.item(), **_numbers(result.logs)}
                if adversarial:
                    record |= {"disc_loss": disc_loss.item(), **_numbers(disc_result.logs)}
                record["grad_norm"] = grad_norm.item()
                if adversarial:
                    record["disc_grad_norm"] = disc_norm.item()
                record["lr"] = optimizer.param_groups[0]["lr"]
                if adversarial:
                    record["disc_lr"] = disc_optimizer.param_groups[0]["lr"]
                record["train_seconds"] = state["train_seconds"]
                shown = {  # a label whose numbers this run does not log is left out
                    label: fmt.format(**record)
                    for label, fmt in recipe.progress.items()
                    if all(key in record for key in re.findall(r"{(\w+)", fmt))
                }
                bar.set_postfix(loss=f"{record['loss']:.4f}", **shown, eval=latest_eval)
                log(record)
            if step % args.eval_every == 0 or step == args.max_steps:
                metrics = _evaluate(recipe, raw, heldout, args, accelerator)
                value = metrics[recipe.main_metric]
                latest_eval = f"{value:.4g}"
                best = state[best_key]
                state[best_key] = (
                    value if best is None else (max if recipe.higher_is_better else min)(value, best)
                )
                log({"step": step, **metrics, "train_seconds": state["train_seconds"]})
                plot()
            saved = step % args.checkpoint_every == 0 or step == args.max_steps
            if accelerator.is_main_process and saved:
                state["step"] = step
                _save_checkpoint(out, step, raw, optimizer, state, args.keep, raw_disc, disc_optimizer)
        bar.close()
        state["step"] = step
        # SIGTERM / Ctrl-C in any process: a checkpoint of this step, then the shell's code
        if stop.agreed(agree):
            if accelerator.is_main_process and not saved:
                _save_checkpoint(out, step, raw, optimizer, state, args.keep, raw_disc, disc_optimizer)
            log({"event": "interrupted", "step": step, "signal": stop.requested})
            print(f"{stop.requested}: stopped at step {step}; continue with --resume", file=sys.stderr)
            raise SystemExit(stop.exit_code)

        summary: dict = {}
        if accelerator.is_main_process:
            if recipe.finalize is not None:
                recipe.finalize(raw, train_data, args, accelerator)
            metrics = _evaluate(recipe, raw, heldout, args, accelerator)
            final_dir = args.final_dir or out / "final"
            raw.save_pretrained(final_dir)
            head = dict(recipe.summary(args)) if recipe.summary is not None else {}
            head.setdefault("train_seed", args.seed)
            report = recipe.report or (lambda m: {f"heldout_{k}": v for k, v in m.items()})
            summary = {
                **head,
                "steps": step,
                "batch_size": args.batch_size,
                "train_seconds": round(state["train_seconds"], 1),
                "skipped_steps": state["skipped_steps"],
                **({"adversarial_from": adversarial_from} if disc is not None else {}),
                **report(metrics),
                "precision": args.precision,
                "torch_threads": torch.get_num_threads(),
                "command": f"python {recipe.script} " + " ".join(argv if argv is not None else sys.argv[1:]),
            }
            atomic_write_text(final_dir / "training.json", json.dumps(summary, indent=2) + "\n")
            log({"event": "final", **summary})
            plot()
            print(json.dumps(summary, indent=2))
        return summary
    finally:
        stop.__exit__(None, None, None)
        if metrics_file is not None:
            metrics_file.close()


@torch.no_grad()
def latent_stats(
    model: nn.Module,
    data: Dataset,
    collate: Callable[[list[Any]], torch.Tensor],
    clips: int,
    batch_size: int,
    device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel shift (mean) and scale (1 / std) of the posterior means ``model.encode_posterior(x).mean``
    (``[b zc *s]``) over the first ``clips`` items of ``data``: what a VAE stores to hand diffusion
    near unit-variance latents (the scale factor of Rombach et al. 2022, Sec. 4.3.2, per channel)."""
    from tqdm.auto import tqdm

    model.eval()
    zs = []
    for start in tqdm(range(0, clips, batch_size), desc="latent stats", leave=False):
        x = collate([data[i] for i in range(start, min(clips, start + batch_size))]).to(device)
        zs.append(model.encode_posterior(x).mean)  # [b zc *s], float32
    z = torch.cat(zs).transpose(0, 1).flatten(1)  # [zc n]
    return z.mean(1).cpu(), (1.0 / z.std(1).clamp_min(1e-6)).cpu()
