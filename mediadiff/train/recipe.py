"""The skeleton every training recipe shares: command line, seeded build, cache, export and training.

A recipe states what it builds; :class:`Recipe` runs it the same way for every modality::

    RECIPE = Recipe(
        "recipes/examples/tiny_latent.py",
        __doc__,                                   # its first line is the --help description
        defaults={"max_steps": 300, "lr": 1e-3},   # the recipe's TrainConfig defaults
        add_args=add_args,                         # (argument group) -> None: the recipe's own flags
        build=build,                               # (args) -> Parts, after torch.manual_seed(args.seed)
        extra=lambda args: {"items": args.items},  # what config.json records under train.extra
        cache=True,                                # --cache DIR, --cache-only, --cache-mismatch
    )
    main = RECIPE.main

``RECIPE.main(argv)`` parses the shared flags (:func:`~mediadiff.train.config.recipe_parser`) and the
recipe's, runs ``check(args)`` (before anything heavy), seeds torch with ``--seed`` and calls
``build(args)``; then ``--export FOLDER`` writes the run's newest checkpoint as a pipeline,
``--cache-only`` encodes the latent cache and returns it, ``--dry-run`` measures, and otherwise the
:class:`~mediadiff.train.trainer.Trainer` trains.

What is modality-specific comes in as arguments, never as an import: the pipeline class the recipe
generates and exports with (``pipeline=``, called as ``pipeline(backbone, autoencoder, text_encoder,
schedule, prediction=..., defaults=...)``), the export function (``export=``: the run folder's
newest checkpoint into that pipeline, saved) and the periodic evaluation (``Parts.evaluate(pipeline, ctx)``,
run on a pipeline around the in-training EMA weights, see :func:`pipeline_sample_fn`; or a plain
``Parts.sample_fn``).
"""

from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mediadiff.utils import LockedError, UsageExit, check_output_dir, usage_exit

from .checkpoint import CheckpointError
from .config import config_from_args, recipe_parser
from .trainer import SampleContext, Trainer

__all__ = ["Parts", "Recipe", "pipeline_sample_fn"]

SampleFn = Callable[[SampleContext], Any]


@dataclass
class Parts:
    """What a recipe's ``build(args)`` returns: everything one run trains, samples and exports with.

    Built after ``torch.manual_seed(args.seed)``, so the backbone starts the same in every process.
    """

    dataset: Any  # map-style dataset of {data_key: tensor, "text": caption} items
    backbone: torch.nn.Module  # backbone(x, t, context=None, context_mask=None) -> prediction
    schedule: Any  # the diffusion schedule (mediadiff.diffusion)
    prediction: str  # eps | x0 | v | flow
    data_key: str | None = None  # the items' tensor; None: the dataset's own data_key
    autoencoder: Any | None = None  # encode(x) -> latents; None: train on the data itself
    text_encoder: Any | None = None  # encode(prompts) -> (tokens [b l d], mask [b l])
    t_sampler: str | Callable = "logit_normal"
    pipeline_defaults: dict[str, Any] | None = None  # sampling defaults of the recipe's pipeline
    evaluate: Callable[[Any, SampleContext], Any] | None = None  # (pipeline, ctx) -> paths | {paths, metrics}
    sample_fn: SampleFn | None = None  # or a trainer sample_fn that needs no pipeline
    cache_extra: dict[str, Any] | None = None  # more values that key the latent cache
    trainer_options: dict[str, Any] = field(default_factory=dict)  # more Trainer kwargs (weighting, ...)
    on_end: Callable[[Trainer], None] | None = None  # after training, e.g. a report on the data


def pipeline_sample_fn(make_pipeline: Callable[[torch.nn.Module], Any], evaluate: Callable) -> SampleFn:
    """A trainer ``sample_fn`` that generates through a pipeline around the in-training weights.

    The first call builds ``make_pipeline(ctx.model)``; every call puts ``ctx.model`` (the EMA weights,
    or the trained model without an EMA) in it as the backbone, so the text encodings stay cached; sets
    the pipeline's ``autocast`` from the run's precision (bf16 autocast in a bf16 run, fp32 otherwise)
    and returns ``evaluate(pipeline, ctx)``: paths, or ``{"paths": [...], "metrics": {...}}`` (metrics
    go to ``metrics.jsonl``).
    """

    built: list[Any] = []  # one pipeline for the run: its prompt cache keeps the eval captions encoded

    def sample_fn(ctx: SampleContext) -> Any:
        if not built:
            built.append(make_pipeline(ctx.model))
        pipeline = built[0]
        pipeline.backbone = ctx.model  # this step's weights
        pipeline.autocast = ctx.mixed_precision == "bf16"
        return evaluate(pipeline, ctx)

    return sample_fn


@dataclass
class Recipe:
    """A training recipe: what it builds (``build``), its flags and defaults; :meth:`main` runs it.

    name: the script's path from the repository root, recorded in an exported pipeline's ``info``.
    doc: the script's docstring; its first line describes the recipe in ``--help``.
    defaults: the recipe's :class:`~mediadiff.train.config.TrainConfig` defaults (``max_steps``, ``lr``, ...).
    add_args: adds the recipe's own flags to its argument group.
    build: ``(args) -> Parts``.
    extra: ``(args) -> dict`` recorded as ``config.extra`` in ``config.json`` and checkpoints.
    check: ``(args) -> None`` run right after parsing; raises ``SystemExit`` on a bad combination.
    cache: False: no cache flags; True: ``--cache DIR`` (off unless given), ``--cache-only`` and
        ``--cache-mismatch``; a string: the same, with ``--cache`` defaulting to that folder, formatted
        with the arguments (``"{output_dir}/cache"``).
    pipeline: the pipeline class (or factory) the recipe samples and exports with; needed by
        ``Parts.evaluate`` and by ``export``.
    export: ``export(run_dir, folder, pipeline, info=...) -> Path``, the recipe's export function;
        adds ``--export FOLDER``: the newest checkpoint's EMA weights as a pipeline folder.
    """

    name: str
    doc: str
    defaults: dict[str, Any]
    add_args: Callable[[Any], None]
    build: Callable[[argparse.Namespace], Parts]
    extra: Callable[[argparse.Namespace], dict[str, Any]] = lambda args: {}
    check: Callable[[argparse.Namespace], None] | None = None
    cache: bool | str = False
    pipeline: Callable[..., Any] | None = None
    export: Callable[..., Path] | None = None

    def parser(self) -> argparse.ArgumentParser:
        """The shared training flags, then the recipe's own (and the cache and export flags)."""
        parser = recipe_parser(self.doc.strip().splitlines()[0], **self.defaults)
        group = parser.add_argument_group(Path(self.name).stem)
        self.add_args(group)
        if self.cache:
            default = (
                self.cache.replace("{output_dir}", "OUTPUT_DIR")
                if isinstance(self.cache, str)
                else "no cache"
            )
            group.add_argument(
                "--cache",
                default=None,
                help=f"latent + text cache folder, encoded on first use (None: {default})",
            )
            group.add_argument("--cache-only", action="store_true", help="encode the latent cache and exit")
            group.add_argument(
                "--cache-mismatch",
                choices=["rebuild", "error"],
                default="rebuild",
                help="what to do with a cache built by other parts",
            )
        if self.export is not None:
            group.add_argument(
                "--export",
                default=None,
                metavar="FOLDER",
                help="write the newest checkpoint of --output-dir (EMA weights) as a pipeline folder and exit",
            )
        return parser

    def init_from(self, args: argparse.Namespace) -> str | None:
        """The model a run starts from: ``--init-from``, else (when resuming or exporting) the one the run
        in ``--output-dir`` recorded in its ``config.json``, so a fine-tune resumes and exports on its base."""
        if getattr(args, "init_from", None):
            return args.init_from
        if not (args.resume or getattr(args, "export", None)):
            return None
        config = Path(args.output_dir) / "config.json"
        if not config.is_file():
            return None
        base = json.loads(config.read_text()).get("train", {}).get("init_from")
        if base:
            args.init_from = base
        return base

    def base_backbone(self, name: str) -> torch.nn.Module:
        """The backbone of pretrained model ``name`` (what ``--init-from`` names), trainable, in float32."""
        if self.pipeline is None or not hasattr(self.pipeline, "from_pretrained"):
            raise SystemExit(
                f"{self.name}: --init-from needs a recipe with a pipeline class (Recipe(pipeline=...))"
            )
        try:
            backbone = self.pipeline.from_pretrained(name).backbone
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"--init-from {name}: {err}") from None
        return backbone.float().train().requires_grad_(True)

    def cache_dir(self, args: argparse.Namespace) -> str | None:
        """The cache folder of this run: ``--cache``, else the recipe's default (None: no cache)."""
        if not self.cache:
            return None
        if args.cache:
            return args.cache
        return self.cache.format(**vars(args)) if isinstance(self.cache, str) else None

    def make_pipeline(self, parts: Parts, backbone: torch.nn.Module | None = None) -> Any:
        """The recipe's pipeline around ``backbone`` (default: ``parts.backbone``) and the other parts."""
        if self.pipeline is None:
            raise ValueError(f"{self.name}: the recipe names no pipeline class (Recipe(pipeline=...))")
        return self.pipeline(
            parts.backbone if backbone is None else backbone,
            parts.autoencoder,
            parts.text_encoder,
            parts.schedule,
            prediction=parts.prediction,
            defaults=parts.pipeline_defaults,
        )

    def sample_fn(self, parts: Parts) -> SampleFn | None:
        """The trainer's ``sample_fn``: ``parts.sample_fn``, or ``parts.evaluate`` on the recipe's pipeline."""
        if parts.sample_fn is not None and parts.evaluate is not None:
            raise ValueError(f"{self.name}: give Parts a sample_fn or an evaluate, not both")
        if parts.evaluate is None:
            return parts.sample_fn
        return pipeline_sample_fn(lambda backbone: self.make_pipeline(parts, backbone), parts.evaluate)

    def trainer(self, args: argparse.Namespace, parts: Parts) -> Trainer:
        """The trainer of this run (its config from the shared flags and ``extra``)."""
        return Trainer(
            parts.backbone,
            parts.schedule,
            parts.dataset,
            config_from_args(args, **self.extra(args)),
            prediction=parts.prediction,
            data_key=parts.data_key,
            autoencoder=parts.autoencoder,
            text_encoder=parts.text_encoder,
            cache_dir=self.cache_dir(args),
            cache_on_mismatch=getattr(args, "cache_mismatch", "rebuild"),
            cache_extra=parts.cache_extra,
            sample_fn=self.sample_fn(parts),
            t_sampler=parts.t_sampler,
            **parts.trainer_options,
        )

    def check_args(self, prog: str, args: argparse.Namespace) -> None:
        """Every check of the parsed command line that needs nothing built: the recipe's own ``check``, the
        shared numbers (:func:`~mediadiff.train.config.config_from_args`), the folders written
        (``--output-dir``, ``--cache``, ``--export``: not a file, and writable; a missing one is created
        later), ``--init-from`` naming a model, ``--cache-only`` with a cache. A bad value is one line on
        stderr (``prog: error: ...``, naming the flag and what is valid) and :class:`~mediadiff.utils.UsageExit`
        (exit code 2)."""
        if self.check is not None:
            try:
                self.check(args)
            except UsageExit:
                raise
            except SystemExit as exit_:  # a recipe's check says what is wrong as SystemExit("message")
                if isinstance(exit_.code, str):
                    usage_exit(prog, exit_.code)
                raise
        exporting = bool(getattr(args, "export", None))
        written = [("--export", "export")] if exporting else [("--output-dir", "output_dir")]
        try:
            config_from_args(args, **self.extra(args))
            for flag, dest in [*written, ("--cache", "cache")]:
                if getattr(args, dest, None):
                    check_output_dir(getattr(args, dest), flag)
        except ValueError as err:
            usage_exit(prog, str(err))
        if getattr(args, "cache_only", False) and self.cache_dir(args) is None:
            usage_exit(prog, "--cache-only needs --cache DIR")
        base = getattr(args, "init_from", None)
        if base and not hasattr(self.pipeline, "from_pretrained"):
            usage_exit(prog, f"--init-from: {self.name} names no pipeline class to load a model with")
        if base and hasattr(self.pipeline, "resolve_model"):
            try:
                self.pipeline.resolve_model(base)
            except (FileNotFoundError, ValueError) as err:
                usage_exit(prog, f"--init-from {base}: {err}")

    def main(self, argv: list[str] | None = None) -> Any:
        """Parse, check, seed and build; then export, encode the cache, dry-run or train.

        Returns the exported folder (``--export``), the opened cache (``--cache-only``), the dry-run
        report (``--dry-run``) or the training summary. A bad argument exits with one line and code 2
        (:meth:`check_args`). Exits (``SystemExit``) with one line when the
        output folder is in use by another run or a checkpoint cannot be written, and with 143 / 130
        after a SIGTERM / Ctrl-C stopped the run at a checkpoint.
        """
        parser = self.parser()
        args = parser.parse_args(argv)
        self.check_args(parser.prog, args)  # a bad setting fails before anything is built
        torch.manual_seed(args.seed)
        parts = self.build(args)
        base = self.init_from(args)
        if base is not None:
            parts.backbone = self.base_backbone(base)
        if getattr(args, "export", None):
            info = {"recipe": self.name}
            return self.export(args.output_dir, args.export, self.make_pipeline(parts), info=info)
        trainer = self.trainer(args, parts)
        if getattr(args, "cache_only", False):
            cache = trainer.training_data()  # opened, or encoded once
            trainer.log(f"latent cache of {len(cache)} items at {cache.path}")
            return cache
        try:
            result = trainer.run(dry_run=args.dry_run, memory_gb=args.memory_gb)
        except (LockedError, CheckpointError) as err:  # one line, no traceback: nothing was lost
            raise SystemExit(f"error: {err}") from None
        if isinstance(result, dict) and result.get("interrupted"):
            # stopped by SIGTERM / Ctrl-C after a checkpoint: the shell's code for that signal
            raise SystemExit(128 + int(signal.Signals[result["interrupted"]]))
        if parts.on_end is not None:
            parts.on_end(trainer)
        return result
