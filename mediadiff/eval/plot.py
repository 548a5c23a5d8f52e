"""The picture of a sweep over sampling steps: each accuracy against the number of steps, one panel per
attribute (and "all"), one line per prompt split (the first solid, the second dashed, ...), with the
95% Wilson intervals (Wilson 1927) as error bars (the splits' points moved 3% apart along the step axis
so that their bars stay apart), and the FD / floor of each split in a last panel.

The step axis is logarithmic, with the NFE of each step count (model evaluations per clip) along its
top. matplotlib with the Agg backend (:func:`mediadiff.utils.pyplot`): no display needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mediadiff.utils import pyplot, save_figure

__all__ = ["plot_steps"]

SPLIT_STYLES = ("-", "--", ":", "-.")  # line style of the task's first, second, ... split


def plot_steps(
    runs: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str,
    row_names: Mapping[str, str] | None = None,
) -> Path:
    """Draw accuracy against sampling steps for ``runs`` (each ``{"steps", "nfe", **report}``, a report
    of :func:`~.harness.evaluate`; one run gives one point per line) as a PNG, written atomically.

    ``row_names`` names the splits in the legend (a split without a name shows its key). Returns the path.
    """
    if not runs:
        raise ValueError("plot_steps: no runs to draw")
    plt = pyplot()
    runs = sorted(runs, key=lambda run: run["steps"])
    steps = [run["steps"] for run in runs]
    nfes = [run["nfe"] for run in runs]
    splits = list(runs[0]["splits"])
    attributes = list(runs[0]["real"]["accuracy"])
    names = dict(row_names or {})

    panels = len(attributes) + 1
    fig, axes = plt.subplots(1, panels, figsize=(3.4 * panels, 3.6), squeeze=False, constrained_layout=True)
    axes = axes[0]
    for ax, attribute in zip(axes, attributes):
        for i, split in enumerate(splits):
            rates = [run["splits"][split]["accuracy"][attribute] for run in runs]
            value = [100 * r["accuracy"] for r in rates]
            lower = [100 * (r["accuracy"] - r["ci95"][0]) for r in rates]
            upper = [100 * (r["ci95"][1] - r["accuracy"]) for r in rates]
            ax.errorbar(
                _dodge(steps, i, len(splits)), value, yerr=[lower, upper],
                fmt=SPLIT_STYLES[i % len(SPLIT_STYLES)], color=f"C{i}", marker="o", markersize=4,
                capsize=3, elinewidth=0.8, label=names.get(split, split),
            )  # fmt: skip
        ax.set(title=f"{attribute} accuracy", ylim=(-2, 102))
    axes[0].set_ylabel("% of clips read right (95% Wilson interval)", fontsize=8)
    fd_ax = axes[-1]
    ratios = [run["splits"][split]["fd_ratio"] for run in runs for split in splits]
    for i, split in enumerate(splits):
        fd_ax.plot(
            steps, [run["splits"][split]["fd_ratio"] for run in runs], SPLIT_STYLES[i % len(SPLIT_STYLES)],
            color=f"C{i}", marker="o", markersize=4, label=names.get(split, split),
        )  # fmt: skip
    fd_ax.set(title="FD / floor (1 = real clips)")
    if min(ratios) > 0 and max(ratios) / min(ratios) > 10:  # over a decade: a log axis reads better
        fd_ax.set_yscale("log")

    for ax in axes:
        _step_axis(ax, steps, nfes)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{title} ({runs[0]['num']} clips per split)", fontsize=10)
    return save_figure(fig, path, dpi=100)


def _dodge(steps: Sequence[int], i: int, lines: int) -> list[float]:
    """Step counts of line ``i`` of ``lines`` moved 3% apart on the log axis, so error bars do not hide
    each other."""
    factor = 1.03 ** (i - (lines - 1) / 2)
    return [s * factor for s in steps]


def _step_axis(ax: Any, steps: Sequence[int], nfes: Sequence[int]) -> None:
    """A log step axis with a tick at each step count, and the NFE of each along the top."""
    ax.set_xscale("log")
    ax.set_xlim(min(steps) / 1.4, max(steps) * 1.4)
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_xlabel("sampling steps")
    top = ax.secondary_xaxis("top")
    top.set_xticks(steps, [str(n) for n in nfes])
    top.minorticks_off()
    top.set_xlabel("NFE", fontsize=8)
    top.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
