"""Prompt following as accuracies: what a detector read back from each clip against the prompt's labels.

A modality names its attributes and their classes (``{"colour": (...), "shape": (...)}`` for Shapes,
pitch and contour for Tones); a *reading* and a *label* are mappings ``attribute -> class name`` (a
detector may read a class outside the list, such as ``"none"``). Every accuracy comes with a 95% Wilson
score interval (Wilson 1927).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["accuracy_report", "rate", "wilson_interval"]


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); 95% at the default ``z``.

    ``(p + z^2 / 2n -+ z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n)`` with ``p = correct / n``;
    ``(0, 1)`` when ``n`` is 0.
    """
    if total <= 0:
        return (0.0, 1.0)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(correct: int, total: int) -> dict[str, Any]:
    """``{"n", "correct", "accuracy", "ci95"}`` of ``correct`` hits out of ``total`` (NaN accuracy at 0),
    rounded to 4 places; ``ci95`` is the :func:`wilson_interval`."""
    lo, hi = wilson_interval(correct, total)
    value = correct / total if total else float("nan")
    return {"n": total, "correct": correct, "accuracy": round(value, 4), "ci95": [round(lo, 4), round(hi, 4)]}


def accuracy_report(
    readings: Sequence[Mapping[str, str]],
    labels: Sequence[Mapping[str, Any]],
    classes: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    """Accuracies (with Wilson intervals), per-class accuracies and confusion counts of the readings.

    ``readings[i]`` is what was read from clip ``i`` and ``labels[i]`` its truth, both holding every
    attribute of ``classes`` (``attribute -> class names``). Returns
    ``{"accuracy": {attr: rate}, "per_class": {attr: {class: rate}}, "confusion": {attr: {true: {read: n}}}}``
    where ``attr`` runs over ``classes`` in order (and ``"all"``, every attribute right at once, in
    ``accuracy``); rates as :func:`rate`.
    """
    if len(readings) != len(labels) or not labels:
        raise ValueError(f"accuracy_report: {len(readings)} readings for {len(labels)} labels")
    if not classes or "all" in classes:
        raise ValueError(f"accuracy_report: need attributes other than 'all', got {list(classes)}")
    for attr, names in classes.items():
        unknown = sorted({str(y[attr]) for y in labels} - set(names))
        if unknown:
            raise ValueError(
                f"accuracy_report: labels of {attr!r} outside its classes {list(names)}: {unknown}"
            )
    report: dict[str, Any] = {"accuracy": {}, "per_class": {}, "confusion": {}}
    for attr, names in classes.items():
        hits = [r[attr] == y[attr] for r, y in zip(readings, labels)]
        report["accuracy"][attr] = rate(sum(hits), len(hits))
        report["per_class"][attr] = {
            c: rate(sum(h for h, y in zip(hits, labels) if y[attr] == c), sum(y[attr] == c for y in labels))
            for c in names
        }
        confusion: dict[str, dict[str, int]] = {c: {} for c in names}
        for r, y in zip(readings, labels):
            row = confusion[y[attr]]
            row[r[attr]] = row.get(r[attr], 0) + 1
        report["confusion"][attr] = confusion
    every = [all(r[k] == y[k] for k in classes) for r, y in zip(readings, labels)]
    report["accuracy"]["all"] = rate(sum(every), len(every))
    return report
