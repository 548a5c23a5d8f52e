"""``mediadiff eval MODALITY``: the options and the run that every modality's evaluation command shares.

A modality's command adds its own help words and says how to load its pipeline and build its task::

    def run(args):
        return run_command(args, name="video", load=VideoPipeline.from_pretrained, task=shapes_task,
                           generator=pipeline_generator, reconstructor=pipeline_reconstructor)

``--steps 5 10 20 50`` sweeps the sampling steps: the same prompts and noise seeds at each step count
(a paired comparison), the real sets read once, the usual table of each run, then one summary table
(steps, NFE, every accuracy of every split, FD, seconds per clip); the JSON holds every run, and
``--plot PATH.png`` draws accuracy against steps (:func:`~.plot.plot_steps`), one point per line for
a single step count.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .harness import (
    GRID_CLIPS,
    EvalTask,
    Generate,
    Reconstruct,
    check_grid,
    evaluate,
    publish,
    publish_steps,
    read_real_sets,
    run_settings,
)

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
    add(
        "--steps",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="sampling steps (default: the model's); several (5 10 20 50) evaluate each in turn on the "
        "same prompts and seeds and add a summary table",
    )
    add("--sampler", default=None, metavar="NAME", help="sampler name (default: the model's)")
    add(
        "--cfg",
        type=float,
        default=None,
        metavar="X",
        help="classifier-free guidance scale (default: the model's)",
    )
    add("--batch-size", type=int, default=8, metavar="N", help="clips per generation call (default 8)")
    add(
        "--json",
        default=None,
        metavar="PATH",
        help="write the full report (every number, settings; every run of several --steps) as JSON",
    )
    add(
        "--plot",
        default=None,
        metavar="PATH.png",
        help="draw each accuracy (Wilson intervals) and FD / floor against the sampling steps as a PNG",
    )
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
    """Check the options, load the pipeline, evaluate, print the table, write the JSON (and the plot);
    the exit code.

    ``load(model, device=)`` returns the pipeline (``resolve(steps=, sampler=, guidance_scale=)``,
    ``use_bf16()``); ``task(resolved settings)`` returns the task and the clip format in words, or
    raises ValueError when the model cannot make the task's clips; ``generator(pipe, steps=, sampler=,
    guidance_scale=)`` and ``reconstructor(pipe)`` wrap the pipeline for :func:`~.harness.evaluate`.
    ``sizes``: the modality's size settings from its own flags (``{"seconds": 2.0}``), resolved with the
    sampling settings (None: the model's); the generator is expected to apply them too.

    ``args.steps``: None (the model's), a step count or a list of them; several evaluate each in turn
    (:func:`~.harness.read_real_sets` once, the same prompts and seeds each time), print each run's
    table and the summary (:func:`~.harness.publish_steps`), and write one JSON of every run. One step
    count gives the report of one :func:`~.harness.evaluate`, as always. ``args.plot``: a ``.png`` path
    for :func:`~.plot.plot_steps`, checked before anything is loaded.

    Bad options end in one line (``mediadiff eval NAME: ...``) and exit code 2: the numbers, the
    sampler and the output paths (``--json``, ``--plot``, ``--grid`` in a folder that can be written)
    before the model is loaded, the model and its sizes right after.
    """
    import torch

    from mediadiff.diffusion import SAMPLERS
    from mediadiff.utils import check_output_file

    def fail(message: str) -> int:
        print(f"mediadiff eval {name}: {message}", file=sys.stderr)
        return 2

    steps_list = args.steps if isinstance(args.steps, (list, tuple)) else [args.steps]
    plot_path = getattr(args, "plot", None)
    for flag in ("num", "batch_size", "threads"):
        value = getattr(args, flag)
        if value is not None and value < (2 if flag == "num" else 1):
            return fail(f"--{flag.replace('_', '-')} must be >= {2 if flag == 'num' else 1}, got {value}")
    for value in steps_list:
        if value is not None and value < 1:
            return fail(f"--steps must be >= 1, got {value}")
    if len(set(steps_list)) != len(steps_list):
        return fail(f"--steps: each step count once, got {' '.join(map(str, steps_list))}")
    if plot_path is not None and Path(plot_path).suffix.lower() != ".png":
        return fail(f"--plot {plot_path}: the picture is a .png")
    if args.cfg is not None and not (math.isfinite(args.cfg) and args.cfg >= 0):
        return fail(f"--cfg must be >= 0 (a finite number; 1: no guidance), got {args.cfg}")
    if args.sampler is not None and args.sampler not in SAMPLERS:
        return fail(f"unknown --sampler {args.sampler!r}; choose from {', '.join(sorted(SAMPLERS))}")
    for flag in ("json", "plot", "grid"):
        path = getattr(args, flag, None)
        if path is not None:
            try:
                check_output_file(path, f"--{flag}")
            except ValueError as err:
                return fail(str(err))
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
    except (FileNotFoundError, ValueError) as err:
        return fail(f"--model: {err}")
    try:
        resolved = [
            pipe.resolve(**(sizes or {}), steps=steps, sampler=args.sampler, guidance_scale=args.cfg)
            for steps in steps_list
        ]
        the_task, shape = task(resolved[0])
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    from mediadiff.diffusion import nfe

    several = len(steps_list) > 1
    model = args.model if args.model is not None else "default"
    t0 = time.perf_counter()
    try:
        check_grid(the_task, args.grid)
        reals = read_real_sets(the_task, num=args.num, reconstruct=reconstructor(pipe)) if several else None
        runs = []
        for steps, settings in zip(steps_list, resolved):
            grid = args.grid
            if grid is not None and several:
                grid = Path(grid).with_name(f"{Path(grid).stem}-{settings['steps']}steps{Path(grid).suffix}")
            report = evaluate(
                the_task,
                generator(pipe, steps=steps, sampler=args.sampler, guidance_scale=args.cfg),
                num=args.num,
                splits=args.splits,
                batch_size=args.batch_size,
                reconstruct=None if several else reconstructor(pipe),
                grid=grid,
                reals=reals,
            )
            run_info = run_settings(
                the_task,
                model=model,
                resolved=settings,
                num=args.num,
                batch_size=args.batch_size,
                splits=args.splits,
                autocast_bf16=pipe.use_bf16(),
            )
            publish(
                the_task,
                report,
                run_info,
                device=device,
                shape=shape,
                json_path=None if several else args.json,
            )
            runs.append(
                {"steps": settings["steps"], "nfe": nfe(settings["sampler"], settings["steps"]), **report}
            )
    except ValueError as err:
        return fail(str(err))
    if several:
        timing = {
            "real_sets_s": round(reals.seconds, 2),
            "autoencoder_round_trip_s": round(reals.autoencoder_s, 2),
            "total_s": round(time.perf_counter() - t0, 2),
        }
        publish_steps(runs, run_info, device=device, timing=timing, json_path=args.json)
    if plot_path is not None:
        from .plot import plot_steps

        title = f"{model}: {run_info['sampler']}, CFG {run_info['cfg']:g}"
        plot_steps(runs, plot_path, title=title, row_names=the_task.row_names)
        print(f"wrote {plot_path}")
    return 0
