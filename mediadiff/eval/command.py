"""``mediadiff eval MODALITY``: the options and the run that every modality's evaluation command shares.

A modality's command adds its own help words and says how to load its pipeline and build its task::

    def run(args):
        return run_command(args, name="video", load=VideoPipeline.from_pretrained, task=shapes_task,
                           generator=pipeline_generator, reconstructor=pipeline_reconstructor)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .harness import GRID_CLIPS, EvalTask, Generate, Reconstruct, evaluate, publish, run_settings

__all__ = ["add_arguments", "run_command"]


def add_arguments(
    parser: argparse.ArgumentParser, *, splits: Sequence[str], splits_help: str, grid_help: str
) -> argparse.ArgumentParser:
    """Add the shared ``mediadiff eval MODALITY`` options to ``parser``; returns it.

    ``splits``: the task's prompt splits (the default is all of them); ``grid_help`` names the grid's
    format, ending before "of the first N clips of each split".
    """
    add = parser.add_argument
    add(
        "--model",
        default=None,
        metavar="NAME|FOLDER",
        help="shipped model name or pipeline folder (default: the shipped default)",
    )
    add("--num", type=int, default=200, metavar="N", help="clips per split (default 200)")
    add("--steps", type=int, default=None, metavar="N", help="sampling steps (default: the model's)")
    add("--sampler", default=None, metavar="NAME", help="sampler name (default: the model's)")
    add(
        "--cfg",
        type=float,
        default=None,
        metavar="X",
        help="classifier-free guidance scale (default: the model's)",
    )
    add("--batch-size", type=int, default=8, metavar="N", help="clips per generation call (default 8)")
    add("--json", default=None, metavar="PATH", help="write the full report (every number, settings) as JSON")
    add(
        "--grid",
        default=None,
        metavar="PATH",
        help=f"{grid_help} of the first {GRID_CLIPS} clips of each split",
    )
    add("--splits", nargs="+", default=list(splits), choices=tuple(splits), help=splits_help)
    add("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's)")
    add("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    return parser


def run_command(
    args: argparse.Namespace,
    *,
    name: str,
    load: Callable[..., Any],
    task: Callable[[dict[str, Any]], tuple[EvalTask, str]],
    generator: Callable[..., Generate],
    reconstructor: Callable[[Any], Reconstruct | None],
    sizes: dict[str, Any] | None = None,
) -> int:
    """Check the options, load the pipeline, evaluate, print the table, write the JSON; the exit code.

    ``load(model, device=)`` returns the pipeline (``resolve(steps=, sampler=, guidance_scale=)``,
    ``use_bf16()``); ``task(resolved settings)`` returns the task and the clip format in words, or
    raises ValueError when the model cannot make the task's clips; ``generator(pipe, steps=, sampler=,
    guidance_scale=)`` and ``reconstructor(pipe)`` wrap the pipeline for :func:`~.harness.evaluate`.
    ``sizes``: the modality's size settings from its own flags (``{"seconds": 2.0}``), resolved with the
    sampling settings (None: the model's); the generator is expected to apply them too.
    """
    import torch

    def fail(message: str) -> int:
        print(f"mediadiff eval {name}: {message}", file=sys.stderr)
        return 2

    for flag in ("num", "batch_size", "threads", "steps"):
        value = getattr(args, flag)
        if value is not None and value < (2 if flag == "num" else 1):
            return fail(f"--{flag.replace('_', '-')} must be >= {2 if flag == 'num' else 1}, got {value}")
    if args.cfg is not None and args.cfg < 0:
        return fail(f"--cfg must be >= 0, got {args.cfg}")
    if args.device == "cuda" and not torch.cuda.is_available():
        return fail("--device cuda: no CUDA device is available; use --device cpu")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        pipe = load(args.model, device=device)
        resolved = pipe.resolve(
            **(sizes or {}), steps=args.steps, sampler=args.sampler, guidance_scale=args.cfg
        )
        the_task, shape = task(resolved)
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    try:
        report = evaluate(
            the_task,
            generator(pipe, steps=args.steps, sampler=args.sampler, guidance_scale=args.cfg),
            num=args.num,
            splits=args.splits,
            batch_size=args.batch_size,
            reconstruct=reconstructor(pipe),
            grid=args.grid,
        )
    except ValueError as err:
        return fail(str(err))
    settings = run_settings(
        the_task,
        model=args.model if args.model is not None else "default",
        resolved=resolved,
        num=args.num,
        batch_size=args.batch_size,
        splits=args.splits,
        autocast_bf16=pipe.use_bf16(),
    )
    publish(the_task, report, settings, device=device, shape=shape, json_path=args.json)
    return 0
