"""Modality-free evaluation: Frechet distance, Wilson intervals, accuracy reports and the
generate -> score -> report harness.

- :mod:`~mediadiff.eval.frechet`: the Frechet distance between Gaussians (Dowson & Landau 1982;
  Heusel et al. 2017, Eq. 6) and its standardised-feature form with the resolutions passed in.
- :mod:`~mediadiff.eval.accuracy`: Wilson score intervals (Wilson 1927) and accuracy reports over any
  mapping ``attribute -> class names``.
- :mod:`~mediadiff.eval.harness`: :class:`EvalTask`, what a modality supplies (attributes, features,
  detector, prompts, real clips), and :func:`evaluate`, the loop that generates, scores and reports;
  the table and the JSON report; :func:`read_real_sets` and :func:`publish_steps` for a sweep over
  sampling steps that reads the real clips once.
- :mod:`~mediadiff.eval.plot`: :func:`plot_steps`, accuracy (Wilson intervals) and FD / floor against
  sampling steps.
- :mod:`~mediadiff.eval.command`: the options and run of ``mediadiff eval MODALITY``.

Imports numpy and mediadiff.utils (torch, tqdm, matplotlib and mediadiff.diffusion's ``nfe`` when a
function needs them) and no modality: the Shapes task and features live in
:mod:`mediadiff.video.evaluate`.
"""

from __future__ import annotations

from .accuracy import accuracy_report, rate, wilson_interval
from .command import add_arguments, run_command
from .frechet import Feature, feature_fd, frechet_distance, marginal_fd, standardiser
from .harness import (
    GRID_CLIPS,
    ROW_NAMES,
    TEMPLATE_ROW_NAMES,
    EvalTask,
    Generate,
    RealSets,
    Reconstruct,
    check_grid,
    evaluate,
    format_steps_table,
    format_table,
    pipeline_generator,
    publish,
    publish_steps,
    read_real_sets,
    run_settings,
    write_report,
)
from .plot import plot_steps

__all__ = [
    "GRID_CLIPS",
    "ROW_NAMES",
    "TEMPLATE_ROW_NAMES",
    "EvalTask",
    "Feature",
    "Generate",
    "RealSets",
    "Reconstruct",
    "accuracy_report",
    "add_arguments",
    "check_grid",
    "evaluate",
    "feature_fd",
    "format_steps_table",
    "format_table",
    "frechet_distance",
    "marginal_fd",
    "pipeline_generator",
    "plot_steps",
    "publish",
    "publish_steps",
    "rate",
    "read_real_sets",
    "run_command",
    "run_settings",
    "standardiser",
    "wilson_interval",
    "write_report",
]
