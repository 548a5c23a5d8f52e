"""Curves of training runs from their ``metrics.jsonl``: loss (and its smoothed value), learning rate,
gradient norm, and the periodic evaluation (the trainer's ``*_acc`` accuracies, the autoencoder loop's
``eval_*`` numbers), against steps.

The trainer and the autoencoder / vocoder loop redraw ``curves.png`` beside ``metrics.jsonl`` at every
periodic evaluation and at the end of a run; ``mediadiff plot RUN_DIR [RUN_DIR ...]`` draws one or several runs on the same axes
(one colour per run). matplotlib with the Agg backend, imported on first use: no display needed.

A resumed run appends to its ``metrics.jsonl`` and logs some steps again (from its checkpoint on);
for each step the last record counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mediadiff.utils import pyplot, save_figure

__all__ = ["CURVES_NAME", "plot_runs", "read_curves", "smooth"]

CURVES_NAME = "curves.png"
SMOOTHING = 0.9  # weight of the past in the exponential moving average of the loss


def read_curves(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``{"steps", "loss", "lr", "grad_norm": [...], "evals": {name: ([steps], [values])}}`` of a run
    folder's ``metrics.jsonl``; ``FileNotFoundError`` naming the file when there is none."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no metrics.jsonl; give a run folder written by a recipe or the trainer"
        )
    steps: dict[int, dict[str, Any]] = {}
    evals: dict[str, dict[int, float]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash: the rest still draws
            continue
        if not isinstance(record, dict) or "step" not in record:
            continue
        if record.get("event") == "samples":  # the trainer's periodic evaluation: accuracies
            picked = {k: v for k, v in record.items() if k.endswith("_acc")}
        elif "event" not in record and "loss" not in record:  # the autoencoder loop's evaluation
            picked = {k: v for k, v in record.items() if k.startswith("eval_")}
        else:
            picked = {}
            if "event" not in record:
                steps[int(record["step"])] = record
        for key, value in picked.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                evals.setdefault(key, {})[int(record["step"])] = float(value)
    order = sorted(steps)
    return {
        "steps": order,
        "loss": [steps[s].get("loss") for s in order],
        "lr": [steps[s].get("lr") for s in order],
        "grad_norm": [steps[s].get("grad_norm") for s in order],
        "evals": {k: (sorted(v), [v[s] for s in sorted(v)]) for k, v in sorted(evals.items())},
    }


def smooth(values: Sequence[float | None], weight: float = SMOOTHING) -> list[float | None]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing); None stays None."""
    out: list[float | None] = []
    mean, norm = 0.0, 0.0
    for v in values:
        if v is None:
            out.append(None)
            continue
        mean = weight * mean + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(mean / norm)
    return out


def plot_runs(
    run_dirs: Sequence[str | os.PathLike], path: str | os.PathLike, labels: Sequence[str] | None = None
) -> Path:
    """Draw the runs' curves in one PNG (loss and smoothed loss, learning rate, gradient norm, periodic
    evaluation: accuracies in %, other ``eval_*`` numbers as they are), one colour per run; written
    atomically. Returns the path."""
    plt = pyplot()
    runs = [read_curves(r) for r in run_dirs]
    names = list(labels) if labels is not None else [Path(r).resolve().name for r in run_dirs]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), constrained_layout=True)
    (ax_loss, ax_eval), (ax_lr, ax_grad) = axes
    styles = ["-", "--", ":", "-."]
    for i, (run, name) in enumerate(zip(runs, names)):
        colour = f"C{i % 10}"
        points = [(s, v) for s, v in zip(run["steps"], run["loss"]) if v is not None]
        if points:
            steps, loss = zip(*points)
            ax_loss.plot(steps, loss, color=colour, alpha=0.25, linewidth=0.8)
            ax_loss.plot(steps, smooth(loss), color=colour, label=f"{name} (smoothed)")
        for ax, key in ((ax_lr, "lr"), (ax_grad, "grad_norm")):
            pts = [(s, v) for s, v in zip(run["steps"], run[key]) if v is not None]
            if pts:
                ax.plot(*zip(*pts), color=colour, label=name)
        for j, (key, (steps, values)) in enumerate(run["evals"].items()):
            ax_eval.plot(
                steps, [100 * v for v in values] if key.endswith("_acc") else values,
                styles[j % len(styles)], marker="o", markersize=3, color=colour,
                label=f"{name}: {key.removesuffix('_acc')}",
            )  # fmt: skip
    ax_loss.set(title="training loss", xlabel="step", ylabel="loss")
    if any(v is not None and v > 0 for run in runs for v in run["loss"]):
        ax_loss.set_yscale("log")
    accuracies = all(k.endswith("_acc") for run in runs for k in run["evals"])
    ax_eval.set(title="periodic evaluation", xlabel="step", ylabel="accuracy %" if accuracies else "value")
    if accuracies:
        ax_eval.set_ylim(-2, 102)
    ax_lr.set(title="learning rate", xlabel="step")
    ax_grad.set(title="gradient norm (before clipping)", xlabel="step")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not any(run["evals"] for run in runs):
        ax_eval.text(
            0.5, 0.5, "no periodic evaluation logged", ha="center", va="center", transform=ax_eval.transAxes
        )
    return save_figure(fig, path, dpi=90)
