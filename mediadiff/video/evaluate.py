"""``mediadiff eval video``: does a text-to-video model follow Shapes prompts, and do its clips look real?

Prompts
    ``num`` captions per split from the Shapes evaluation stream (seed :data:`~.shapes_eval.EVAL_SEED`,
    never trained on): split ``train`` phrases them with the training templates, split ``heldout``
    with :data:`~.shapes.HELDOUT_TEMPLATES` (wordings never trained on). Clip ``i`` of either split
    has the labels of Shapes item ``i`` and is generated from noise seed ``i``, so a run is
    reproducible and the two splits differ only in their wording.

Accuracy
    The analytic detector (:mod:`mediadiff.video.detect`) reads colour, shape and direction back from
    the pixels; "all" needs the three right at once. Each accuracy comes with a 95% Wilson score
    interval (Wilson 1927), and the JSON holds per-class accuracies and confusion counts.

Frechet distance (FD)
    ``FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Frechet 1957; Dowson & Landau 1982;
    Heusel et al. 2017, Eq. 6) between Gaussians fitted to the features below of two sets of clips.
    Generated clips of a split are compared with ``num`` real Shapes clips of seed
    :data:`REAL_SEEDS` [0] (the *reference*), drawn independently of the prompts. Every feature is
    standardised by the reference set's mean and standard deviation, so no unit dominates; where the
    real spread of a feature is below its *resolution* (the smallest difference that matters, listed
    with each feature), the resolution is used instead: real clips have exactly black backgrounds,
    one object and straight tracks, and a generated clip's deviation there must count in units of a
    visible difference, not of the real set's zero spread.

Floor
    The FD between the reference and the ``num`` real clips that the prompts describe (Shapes seed
    :data:`~.shapes_eval.EVAL_SEED`, items ``0..num-1``; disjoint from the reference, never trained
    on): what a model that draws perfect clips for exactly these prompts scores. It shares the
    generated sets' label mix, so ``FD / floor`` is about 1 for a perfect model whatever that mix;
    against a second independent real set (seed :data:`REAL_SEEDS` [1], reported as
    ``real_vs_real_fd``) the chance difference in label mix alone moves the FD: at 200 clips,
    17x64x64, seeds 777 vs 778 give 0.49 and the first 200 evaluation clips vs 777 give 0.80 (the
    floor), while three perfect models (new real clips with the same prompts' labels, from other
    seeds) give 0.96, 1.14 and 1.18 times the floor: read ``FD / floor`` to about +-0.2 at 200 clips.
    With ``num`` clips the FD carries an upward bias of order ``d^2 / num`` (``d`` features), which the
    floor shares: compare FDs at the same ``num`` only.

Feature space: 26 hand-crafted numbers per clip, no learned parts, deterministic. A frame's
*coverage* is its brightest channel per pixel (black background); the *object* is the pixels with
coverage above 1/2; sizes and positions are in units of the frame size. Resolutions go by unit:
0.02 (5/255) for intensities, 0.01 of the frame (0.64 px at 64 px) for lengths, 0.02 for shares and
ratios, 0.05 for counts, log aspect and sharpness (1/px), and 0.005 for the share of the (large)
background that holds faint blobs (about 18 pixels per 64x64 frame). Per clip:

====================  ==========  ==================================================================
feature               resolution  definition
====================  ==========  ==================================================================
colour_r/_g/_b        0.02        mean RGB (0..1) of the object's pixels over the clip
colour_spread         0.02        RMS RGB distance of object pixels from that mean (blotchy colour)
colour_flicker        0.02        RMS over frames of the frame's mean object colour about the clip's
size                  0.01        sqrt(mean object coverage mass per frame) / frame size (side)
size_change           0.02        std / mean over frames of the object's coverage mass
fill                  0.02        median bounding-box fill (square 1, circle pi/4, triangle 1/2)
lower                 0.02        median share of mass in the box's lower half (triangle 3/4)
aspect                0.05        median log(width / height) of the box (0 for every real object)
fill_change           0.02        std over frames of the box fill (shape morphing)
x, y                  0.01        mean coverage-weighted centroid over the frames with an object
vx, vy                0.01        least-squares centroid velocity times (frames - 1): signed travel
speed                 0.01        max(abs(vx), abs(vy)): travel along the motion axis
drift                 0.01        min(abs(vx), abs(vy)): travel across it (0 for real clips)
track_residual        0.01        RMS distance of the centroid from its fitted straight line
jitter                0.01        RMS second difference of the centroid over consecutive frames
presence              0.02        share of frames that hold an object
components            0.05        mean number of 8-connected object components per frame
stray_mass            0.02        share of object mass outside each frame's largest component
sharpness             0.05        sum(g^2) / sum(abs(g)) over coverage differences g along x and y
                                  within 2 px of the object: about 1 / edge width in pixels
background_rms        0.02        RMS RGB of pixels more than 2 px from the object (0 for real)
background_speckle    0.005       share of those pixels with coverage above 0.1 (faint blobs)
background_flicker    0.02        RMS frame-to-frame RGB change of pixels background in both frames
====================  ==========  ==================================================================

A clip without any object has colour, size, shape and motion features 0 and position 1/2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from .detect import Detection, box_stats, detect
from .shapes import COLOURS, DIRECTIONS, SHAPES, Shapes
from .shapes_eval import EVAL_SEED, eval_items, save_grid

__all__ = [
    "FEATURES",
    "REAL_SEEDS",
    "SPLITS",
    "Feature",
    "Generate",
    "Reconstruct",
    "accuracy_report",
    "add_arguments",
    "clip_features",
    "evaluate",
    "feature_fd",
    "features",
    "format_table",
    "frechet_distance",
    "main",
    "marginal_fd",
    "pipeline_generator",
    "pipeline_reconstructor",
    "real_clips",
    "run",
    "wilson_interval",
]

REAL_SEEDS = (777, 778)  # Shapes seeds of the two real sets (reference, and floor partner); never trained on
SPLITS = ("train", "heldout")  # caption template sets, reported separately
GRID_CLIPS = 32  # clips per split in the optional GIF grid
DESCRIPTION = (
    "Generate clips for Shapes prompts (training and held-out phrasings), read colour, shape and direction "
    "back with an analytic detector, and measure the Frechet distance to real clips against a real-vs-real floor."
)

Generate = Callable[[list[str], list[int]], np.ndarray]
"""A model under evaluation: ``generate(prompts, seeds) -> uint8 [b f h w 3]``, clip ``i`` from ``seeds[i]``."""
Reconstruct = Callable[[np.ndarray], np.ndarray]
"""An autoencoder round trip: uint8 ``[b f h w 3]`` -> uint8 ``[b f h w 3]``."""


@dataclass(frozen=True)
class Feature:
    """One dimension of the FD feature space."""

    name: str
    resolution: float  # smallest difference that matters; the standardising scale never goes below it
    doc: str


FEATURES: tuple[Feature, ...] = (
    Feature("colour_r", 0.02, "mean red of the object's pixels"),
    Feature("colour_g", 0.02, "mean green of the object's pixels"),
    Feature("colour_b", 0.02, "mean blue of the object's pixels"),
    Feature("colour_spread", 0.02, "RMS RGB distance of object pixels from their mean"),
    Feature("colour_flicker", 0.02, "RMS over frames of the frame's mean object colour about the clip's"),
    Feature("size", 0.01, "sqrt(mean object mass per frame) / frame size"),
    Feature("size_change", 0.02, "std / mean over frames of the object mass"),
    Feature("fill", 0.02, "median bounding-box fill ratio"),
    Feature("lower", 0.02, "median share of mass in the box's lower half"),
    Feature("aspect", 0.05, "median log(width / height) of the box"),
    Feature("fill_change", 0.02, "std over frames of the box fill"),
    Feature("x", 0.01, "mean centroid x / frame width"),
    Feature("y", 0.01, "mean centroid y / frame height"),
    Feature("vx", 0.01, "fitted centroid travel along x over the clip / frame width"),
    Feature("vy", 0.01, "fitted centroid travel along y over the clip / frame height"),
    Feature("speed", 0.01, "travel along the motion axis"),
    Feature("drift", 0.01, "travel across the motion axis"),
    Feature("track_residual", 0.01, "RMS centroid distance from its fitted line / frame size"),
    Feature("jitter", 0.01, "RMS second difference of the centroid / frame size"),
    Feature("presence", 0.02, "share of frames with an object"),
    Feature("components", 0.05, "mean number of 8-connected object components per frame"),
    Feature("stray_mass", 0.02, "share of object mass outside each frame's largest component"),
    Feature("sharpness", 0.05, "sum(g^2) / sum(|g|) of coverage differences, ~1 / edge width in px"),
    Feature("background_rms", 0.02, "RMS RGB of pixels > 2 px from the object"),
    Feature("background_speckle", 0.005, "share of those pixels with coverage > 0.1"),
    Feature("background_flicker", 0.02, "RMS frame-to-frame RGB change of background pixels"),
)

_OBJECT = 0.5  # coverage above which a pixel belongs to the object (the detector's threshold)
_SPECKLE = 0.1  # background coverage above which a pixel is a visible artefact
_MARGIN = 2  # pixels around the object that are neither object nor background
_EIGHT = np.ones((3, 3), bool)  # 8-connectivity
_DILATE = np.ones((1, 2 * _MARGIN + 1, 2 * _MARGIN + 1), bool)  # grow each frame's mask, not across frames


# --------------------------------------------------------------------------- features


def clip_features(frames: np.ndarray) -> np.ndarray:
    """The :data:`FEATURES` of one clip: uint8 ``[f h w 3]`` -> float64 ``[len(FEATURES)]``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"clip_features: expected uint8 [f h w 3] frames, got {frames.dtype} {frames.shape}")
    rgb = frames.astype(np.float64) / 255.0  # [f h w 3]
    f, h, w, _ = rgb.shape
    scale = float(max(h, w))
    coverage = rgb.max(axis=-1)  # [f h w]
    mask = coverage > _OBJECT  # [f h w]
    present = mask.reshape(f, -1).any(axis=1)  # [f]
    frames_in = np.nonzero(present)[0]  # [f']
    out = dict.fromkeys((ft.name for ft in FEATURES), 0.0)
    out["x"] = out["y"] = 0.5

    # background: pixels more than _MARGIN px from the object; the rest is the object's region
    region = ndimage.binary_dilation(mask, structure=_DILATE)  # [f h w]
    background = ~region  # [f h w]
    if background.any():
        out["background_rms"] = float(np.sqrt((rgb[background] ** 2).mean()))
        out["background_speckle"] = float((coverage[background] > _SPECKLE).mean())
    both = background[1:] & background[:-1]  # [f-1 h w] background in consecutive frames
    if both.any():
        out["background_flicker"] = float(np.sqrt(((rgb[1:] - rgb[:-1])[both] ** 2).mean()))

    # sharpness: gradient-weighted mean gradient of the coverage in the object's region, ~1 / edge width
    gx = np.diff(coverage, axis=2)[region[:, :, 1:] | region[:, :, :-1]]  # [nx] differences along x
    gy = np.diff(coverage, axis=1)[region[:, 1:] | region[:, :-1]]  # [ny] differences along y
    g = np.concatenate([gx, gy])  # [nx+ny]
    absolute = np.abs(g).sum()
    out["sharpness"] = float((g * g).sum() / absolute) if absolute > 0 else 0.0

    # components: 8-connected object regions per frame, and the mass outside the largest one
    counts, stray = np.zeros(f), []
    for i in range(f):
        labels, n = ndimage.label(mask[i], structure=_EIGHT)  # [h w] int
        counts[i] = n
        if n:
            mass = np.bincount(labels.ravel(), weights=coverage[i].ravel())[1:]  # [n]
            stray.append(1.0 - mass.max() / mass.sum())
    out["components"] = float(counts.mean())
    out["presence"] = float(present.mean())
    if not len(frames_in):
        return np.array([out[ft.name] for ft in FEATURES])
    out["stray_mass"] = float(np.mean(stray))

    # colour of the object, and its spread in space and over frames
    pixels = rgb[mask]  # [p 3]
    mean_rgb = pixels.mean(axis=0)  # [3]
    out["colour_r"], out["colour_g"], out["colour_b"] = (float(v) for v in mean_rgb)
    out["colour_spread"] = float(np.sqrt(((pixels - mean_rgb) ** 2).sum(axis=1).mean()))
    per_frame = np.stack([rgb[i][mask[i]].mean(axis=0) for i in frames_in])  # [f' 3]
    out["colour_flicker"] = float(np.sqrt(((per_frame - mean_rgb) ** 2).sum(axis=1).mean()))

    # size: coverage mass of the object per frame
    weights = np.where(mask, coverage, 0.0)[frames_in]  # [f' h w]
    mass = weights.sum(axis=(1, 2))  # [f']
    out["size"] = float(np.sqrt(mass.mean()) / scale)
    out["size_change"] = float(mass.std() / mass.mean())

    # shape: the detector's box statistics per frame
    stats = np.array([box_stats(coverage[i], mask[i]) for i in frames_in])  # [f' 3] fill, lower, aspect
    out["fill"], out["lower"], out["aspect"] = (float(v) for v in np.median(stats, axis=0))
    out["fill_change"] = float(stats[:, 0].std())

    # motion: the coverage-weighted centroid track, a straight-line fit, and what the line misses
    cx = (weights.sum(axis=1) * (np.arange(w) + 0.5)).sum(axis=1) / mass  # [f'] pixels
    cy = (weights.sum(axis=2) * (np.arange(h) + 0.5)).sum(axis=1) / mass  # [f'] pixels
    out["x"], out["y"] = float(cx.mean() / w), float(cy.mean() / h)
    if len(frames_in) >= 2:
        fit_x, fit_y = np.polyfit(frames_in, cx, 1), np.polyfit(frames_in, cy, 1)  # [2] slope, intercept
        vx, vy = fit_x[0] * (f - 1) / w, fit_y[0] * (f - 1) / h
        out["vx"], out["vy"] = float(vx), float(vy)
        out["speed"], out["drift"] = float(max(abs(vx), abs(vy))), float(min(abs(vx), abs(vy)))
        rx, ry = cx - np.polyval(fit_x, frames_in), cy - np.polyval(fit_y, frames_in)  # [f'] pixels
        out["track_residual"] = float(np.sqrt((rx**2 + ry**2).mean()) / scale)
    step = np.diff(frames_in)  # [f'-1]
    triples = np.nonzero((step[:-1] == 1) & (step[1:] == 1))[0]  # frames_in[i .. i+2] are consecutive
    if len(triples):
        track = np.stack([cx, cy], axis=1)  # [f' 2] pixels
        second = (track[:-2] - 2 * track[1:-1] + track[2:])[triples]  # [t 2]
        out["jitter"] = float(np.sqrt((second**2).sum(axis=1).mean()) / scale)
    return np.array([out[ft.name] for ft in FEATURES])


def features(clips: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """:func:`clip_features` of each clip: uint8 ``[b f h w 3]`` -> ``[b len(FEATURES)]``."""
    return np.stack([clip_features(c) for c in clips])  # [b d]


# --------------------------------------------------------------------------- Frechet distance


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    values, vectors = np.linalg.eigh((a + a.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Dowson & Landau 1982; Heusel et al. 2017,
    Eq. 6). ``Tr (S1 S2)^(1/2)`` is computed as ``Tr (S1^(1/2) S2 S1^(1/2))^(1/2)``: the same
    eigenvalues, but of a symmetric PSD matrix, so two symmetric eigen-decompositions replace a
    general matrix square root and stay real and stable when a covariance is singular.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: means {mu1.shape} {mu2.shape} and covariances {sigma1.shape} "
            f"{sigma2.shape} do not describe two Gaussians of the same dimension"
        )
    root1 = _sqrt_psd(sigma1)  # [d d]
    middle = np.linalg.eigvalsh(root1 @ sigma2 @ root1)  # [d] eigenvalues of S1 S2
    cross = np.sqrt(np.clip(middle, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * cross, 0.0))


def _standardiser(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of each feature on the reference set; a scale never falls below the resolution."""
    resolution = np.array([ft.resolution for ft in FEATURES])  # [d]
    return reference.mean(axis=0), np.maximum(reference.std(axis=0, ddof=1), resolution)


def feature_fd(a: np.ndarray, b: np.ndarray, reference: np.ndarray) -> float:
    """FD between feature sets ``a`` and ``b`` (``[n d]`` each), standardised by ``reference`` ``[m d]``."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"feature_fd: need two sets of >= 2 feature rows of one width, got {a.shape}, {b.shape}"
        )
    mean, scale = _standardiser(reference)
    za, zb = (a - mean) / scale, (b - mean) / scale  # [n d] standardised
    return frechet_distance(za.mean(0), np.cov(za, rowvar=False), zb.mean(0), np.cov(zb, rowvar=False))


def marginal_fd(a: np.ndarray, b: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Per-feature 1-D FD, ``(m_a - m_b)^2 + (s_a - s_b)^2`` in standardised units: which features differ."""
    mean, scale = _standardiser(reference)
    za, zb = (a - mean) / scale, (b - mean) / scale  # [n d]
    one = (za.mean(0) - zb.mean(0)) ** 2 + (za.std(0, ddof=1) - zb.std(0, ddof=1)) ** 2  # [d]
    return {ft.name: round(float(v), 4) for ft, v in zip(FEATURES, one)}


# --------------------------------------------------------------------------- accuracy


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); 95% at the default ``z``."""
    if total <= 0:
        return (0.0, 1.0)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rate(correct: int, total: int) -> dict[str, Any]:
    lo, hi = wilson_interval(correct, total)
    value = correct / total if total else float("nan")
    return {"n": total, "correct": correct, "accuracy": round(value, 4), "ci95": [round(lo, 4), round(hi, 4)]}


def accuracy_report(detections: Sequence[Detection], labels: Sequence[dict]) -> dict[str, Any]:
    """Accuracies (with Wilson intervals), per-class accuracies and confusion counts of the detections.

    ``labels[i]`` holds the true ``colour``, ``shape`` and ``direction``. Returns
    ``{"accuracy": {attr: rate}, "per_class": {attr: {class: rate}}, "confusion": {attr: {true: {read: n}}}}``
    where ``attr`` runs over colour, shape, direction (and ``"all"`` in ``accuracy``).
    """
    if len(detections) != len(labels) or not labels:
        raise ValueError(f"accuracy_report: {len(detections)} detections for {len(labels)} labels")
    classes = {"colour": COLOURS, "shape": SHAPES, "direction": DIRECTIONS}
    report: dict[str, Any] = {"accuracy": {}, "per_class": {}, "confusion": {}}
    for attr, names in classes.items():
        hits = [getattr(d, attr) == y[attr] for d, y in zip(detections, labels)]
        report["accuracy"][attr] = _rate(sum(hits), len(hits))
        report["per_class"][attr] = {
            c: _rate(sum(h for h, y in zip(hits, labels) if y[attr] == c), sum(y[attr] == c for y in labels))
            for c in names
        }
        confusion: dict[str, dict[str, int]] = {c: {} for c in names}
        for d, y in zip(detections, labels):
            row = confusion[y[attr]]
            row[getattr(d, attr)] = row.get(getattr(d, attr), 0) + 1
        report["confusion"][attr] = confusion
    every = [all(getattr(d, k) == y[k] for k in classes) for d, y in zip(detections, labels)]
    report["accuracy"]["all"] = _rate(sum(every), len(every))
    return report


# --------------------------------------------------------------------------- the evaluation


def real_clips(num: int, num_frames: int, size: int, seed: int, start: int = 0) -> np.ndarray:
    """Shapes clips ``start .. start+num-1`` of ``seed`` as uint8 ``[num f size size 3]``.

    Quantised exactly as a pipeline's output (``round((x + 1) * 127.5)``), so real and generated clips
    go through the same last step.
    """
    from .generate import to_frames

    data = Shapes(length=max(start + num, 1), num_frames=num_frames, size=size, seed=seed)
    videos = torch.stack([data[i]["video"] for i in range(start, start + num)])  # [num 3 f h w]
    return to_frames(videos).numpy()  # [num f h w 3]


@dataclass
class _Read:
    """Features and detector readings of a set of clips, gathered chunk by chunk."""

    feats: list[np.ndarray]
    found: list[Detection]

    @classmethod
    def empty(cls) -> _Read:
        return cls([], [])

    def add(self, clips: np.ndarray) -> None:
        self.feats.append(features(clips))  # [c d]
        self.found += [detect(c) for c in clips]

    @property
    def matrix(self) -> np.ndarray:
        return np.concatenate(self.feats)  # [n d]


def _check_clips(clips: Any, expected: tuple[int, ...], who: str) -> np.ndarray:
    clips = np.asarray(clips)
    if clips.shape != expected or clips.dtype != np.uint8:
        raise ValueError(f"evaluate: {who} returned {clips.dtype} {clips.shape}, expected uint8 {expected}")
    return clips


def _read_real(
    num: int, num_frames: int, size: int, seed: int, reconstruct: Reconstruct | None = None, chunk: int = 50
) -> tuple[_Read, _Read | None]:
    """Read ``num`` real clips of ``seed`` (and their autoencoder round trips), in chunks to bound memory."""
    real, rebuilt = _Read.empty(), (_Read.empty() if reconstruct is not None else None)
    for start in range(0, num, chunk):
        clips = real_clips(min(chunk, num - start), num_frames, size, seed, start)  # [c f h w 3]
        real.add(clips)
        if reconstruct is not None:
            rebuilt.add(_check_clips(reconstruct(clips), clips.shape, "reconstruct"))
    return real, rebuilt


def _row(read: _Read, labels: Sequence[dict], reference: np.ndarray, floor: float) -> dict[str, Any]:
    """Accuracy report, FD to the reference, FD / floor and per-feature FDs of one set of clips."""
    feats = read.matrix  # [n d]
    fd = feature_fd(feats, reference, reference)
    row = accuracy_report(read.found, labels)
    row.update(
        fd=round(fd, 4),
        fd_ratio=round(fd / floor, 3) if floor > 0 else float("inf"),
        fd_marginal=marginal_fd(feats, reference, reference),
    )
    return row


def evaluate(
    generate: Generate,
    *,
    num: int,
    num_frames: int,
    size: int,
    splits: Sequence[str] = SPLITS,
    batch_size: int = 8,
    real_seeds: tuple[int, int] = REAL_SEEDS,
    reconstruct: Reconstruct | None = None,
    grid: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate ``num`` clips per split, score prompt following and FD against real clips; returns the report.

    ``generate(prompts, seeds)`` must return uint8 ``[b num_frames size size 3]``. The report holds:

    - ``splits[split]``: accuracies, per-class accuracies and confusions (:func:`accuracy_report`), the FD
      to the reference real set (seed ``real_seeds[0]``), ``fd_ratio = fd / floor_fd``, the per-feature
      1-D FDs, and every clip's caption, labels and reading;
    - ``real``: the same for the real clips the prompts describe (Shapes seed :data:`EVAL_SEED`, items
      ``0..num-1``); their FD to the reference is ``floor_fd``: they share the generated sets' label
      mix, so a perfect model scores ``fd_ratio`` about 1 whatever that mix;
    - ``real_vs_real_fd``: FD between two independent real sets (``real_seeds``), for the chance spread;
    - ``autoencoder`` (when ``reconstruct`` is given, ``uint8 clips -> uint8 clips``): the same for the
      prompts' real clips after an autoencoder round trip, what a latent model can reach at best;
    - ``timing``: generation seconds (and per clip), the autoencoder round trips' seconds, and the
      seconds of everything else (rendering real clips, features, detection, FD, the grid).

    ``grid``: write the first :data:`GRID_CLIPS` clips of each split as a GIF grid (``NAME-SPLIT.gif``
    when there are several splits) with their prompts beside it (``.txt``).
    """
    from tqdm.auto import tqdm

    if num < 2:
        raise ValueError(f"evaluate: num must be >= 2 (a covariance needs two clips), got {num}")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    if not splits or any(s not in SPLITS for s in splits):
        raise ValueError(f"evaluate: splits must be among {SPLITS}, got {list(splits)}")
    if len(set(real_seeds)) != 2 or EVAL_SEED in real_seeds:
        raise ValueError(f"evaluate: real_seeds must be two seeds other than {EVAL_SEED}, got {real_seeds}")

    if grid is not None and Path(grid).suffix.lower() != ".gif":
        raise ValueError(f"evaluate: grid must be a .gif path, got {str(grid)!r}")
    autoencoder_s = 0.0
    if reconstruct is not None:
        inner = reconstruct

        def reconstruct(clips: np.ndarray) -> np.ndarray:
            nonlocal autoencoder_s
            t = time.perf_counter()
            out = inner(clips)
            autoencoder_s += time.perf_counter() - t
            return out

    t0 = time.perf_counter()
    reference = _read_real(num, num_frames, size, real_seeds[0])[0].matrix  # [num d]
    partner = _read_real(num, num_frames, size, real_seeds[1])[0].matrix  # [num d]
    prompt_real, rebuilt = _read_real(num, num_frames, size, EVAL_SEED, reconstruct)
    floor = feature_fd(prompt_real.matrix, reference, reference)
    labels = eval_items(num, num_frames, size)  # the prompts' labels (the same for every split)
    report: dict[str, Any] = {
        "num": num,
        "num_frames": num_frames,
        "size": size,
        "floor_fd": round(floor, 4),
        "real_vs_real_fd": round(feature_fd(partner, reference, reference), 4),
        "features": [ft.name for ft in FEATURES],
        "real": _row(prompt_real, labels, reference, floor),
    }
    if rebuilt is not None:
        report["autoencoder"] = _row(rebuilt, labels, reference, floor)
    report["splits"] = {}
    overhead, generation = time.perf_counter() - t0 - autoencoder_s, 0.0

    bar = tqdm(total=num * len(splits), desc="eval video", unit="clip", disable=not progress)
    for split in splits:
        items = eval_items(num, num_frames, size, templates=split)
        read, kept = _Read.empty(), []
        for start in range(0, num, batch_size):
            chunk = items[start : start + batch_size]
            t1 = time.perf_counter()
            clips = generate([it["text"] for it in chunk], [it["index"] for it in chunk])
            generation += time.perf_counter() - t1
            t1 = time.perf_counter()
            clips = _check_clips(clips, (len(chunk), num_frames, size, size, 3), "generate")
            read.add(clips)
            kept += list(clips[: max(GRID_CLIPS - len(kept), 0)])
            overhead += time.perf_counter() - t1
            bar.update(len(chunk))
        t1 = time.perf_counter()
        row = _row(read, items, reference, floor)
        row["clips"] = [
            {
                "index": it["index"],
                "text": it["text"],
                **{k: it[k] for k in ("colour", "shape", "direction")},
                "read": {k: getattr(d, k) for k in ("colour", "shape", "direction")},
            }
            for it, d in zip(items, read.found)
        ]
        if grid is not None:
            path = Path(grid)
            if len(splits) > 1:
                path = path.with_name(f"{path.stem}-{split}{path.suffix}")
            save_grid(np.stack(kept), path)  # [k f h w 3]
            path.with_suffix(".txt").write_text("\n".join(it["text"] for it in items[: len(kept)]) + "\n")
            row["grid"] = str(path)
        report["splits"][split] = row
        overhead += time.perf_counter() - t1
    bar.close()
    report["timing"] = {
        "generation_s": round(generation, 2),
        "seconds_per_clip": round(generation / (num * len(splits)), 4),
        "autoencoder_round_trip_s": round(autoencoder_s, 2),
        "eval_overhead_s": round(overhead, 2),
    }
    return report


# --------------------------------------------------------------------------- report

_ROW_NAMES = {
    "real": "real clips of the prompts (floor)",
    "autoencoder": "autoencoder round trip of them",
    "train": "train-template prompts",
    "heldout": "held-out-template prompts",
}


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table: reference rows, then one row per split; accuracies in % with
    their 95% Wilson intervals."""

    def pct(rate: dict) -> str:
        lo, hi = rate["ci95"]
        return f"{100 * rate['accuracy']:.1f} ({100 * lo:.0f}-{100 * hi:.0f})"

    head = ["clips", "N", "colour %", "shape %", "direction %", "all %", "FD", "floor FD", "FD/floor"]
    rows = [head]
    named = [(k, report[k]) for k in ("real", "autoencoder") if k in report] + list(report["splits"].items())
    for key, res in named:
        acc = res["accuracy"]
        rows.append(
            [_ROW_NAMES.get(key, key), str(report["num"])]
            + [pct(acc[k]) for k in ("colour", "shape", "direction", "all")]
            + [f"{res['fd']:.2f}", f"{report['floor_fd']:.2f}", f"{res['fd_ratio']:.2f}"]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(wd) if i == 0 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def pipeline_generator(
    pipe: Any, *, steps: int | None = None, sampler: str | None = None, guidance_scale: float | None = None
) -> Generate:
    """Wrap a :class:`~mediadiff.video.pipeline.VideoPipeline` as a :data:`Generate` callable.

    The pipeline draws clip ``i`` of a call from seed ``seed + i``; consecutive seeds go in one batched
    call, any other seeds one clip at a time.
    """

    def call(prompts: list[str], seed: int) -> np.ndarray:
        frames = pipe(prompts, seed=seed, steps=steps, sampler=sampler, guidance_scale=guidance_scale).frames
        return frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)  # [b f h w 3]

    def generate(prompts: list[str], seeds: list[int]) -> np.ndarray:
        seeds = [int(s) for s in seeds]
        if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
            return call(list(prompts), seeds[0])
        return np.concatenate([call([p], s) for p, s in zip(prompts, seeds)])  # [b f h w 3]

    return generate


def pipeline_reconstructor(pipe: Any) -> Reconstruct | None:
    """The pipeline's autoencoder round trip (posterior mean, then decode) as a :data:`Reconstruct`, under
    the pipeline's autocast; None for a pixel-space pipeline (identity autoencoder)."""
    from .autoencoder import IdentityAutoencoder
    from .generate import to_frames

    autoencoder = pipe.autoencoder
    if isinstance(autoencoder, IdentityAutoencoder):
        return None

    @torch.inference_mode()
    def reconstruct(clips: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(pipe.device)  # [b f h w 3] uint8
        x = x.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # [b 3 f h w] in [-1, 1]
        with torch.autocast(pipe.device.type, torch.bfloat16, enabled=pipe.use_bf16()):
            video = autoencoder.decode(autoencoder.encode(x).float())  # [b 3 f h w]
        return to_frames(video).numpy()  # [b f h w 3]

    return reconstruct


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``mediadiff eval video`` options to ``parser``; returns it."""
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
        "--grid", default=None, metavar="PATH", help=f"GIF grid of the first {GRID_CLIPS} clips of each split"
    )
    add(
        "--splits",
        nargs="+",
        default=list(SPLITS),
        choices=SPLITS,
        help="caption template sets (default both)",
    )
    add("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's)")
    add("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    return parser


def _fail(message: str) -> int:
    print(f"mediadiff eval video: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """``mediadiff eval video``: load the pipeline, evaluate, print the table, write the JSON; exit code."""
    from mediadiff.utils import atomic_write_bytes, machine

    from .pipeline import VideoPipeline

    for flag in ("num", "batch_size", "threads", "steps"):
        value = getattr(args, flag)
        if value is not None and value < (2 if flag == "num" else 1):
            return _fail(f"--{flag.replace('_', '-')} must be >= {2 if flag == 'num' else 1}, got {value}")
    if args.cfg is not None and args.cfg < 0:
        return _fail(f"--cfg must be >= 0, got {args.cfg}")
    if args.device == "cuda" and not torch.cuda.is_available():
        return _fail("--device cuda: no CUDA device is available; use --device cpu")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        pipe = VideoPipeline.from_pretrained(args.model, device=device)
        settings = pipe.resolve(steps=args.steps, sampler=args.sampler, guidance_scale=args.cfg)
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    if settings["height"] != settings["width"]:
        return _fail(f"Shapes clips are square; the model makes {settings['height']}x{settings['width']}")
    size, num_frames = settings["height"], settings["num_frames"]
    try:
        report = evaluate(
            pipeline_generator(pipe, steps=args.steps, sampler=args.sampler, guidance_scale=args.cfg),
            num=args.num,
            num_frames=num_frames,
            size=size,
            splits=args.splits,
            batch_size=args.batch_size,
            reconstruct=pipeline_reconstructor(pipe),
            grid=args.grid,
        )
    except ValueError as err:
        return _fail(str(err))
    report = {
        "settings": {
            "model": args.model if args.model is not None else "default",
            "sampler": settings["sampler"],
            "steps": settings["steps"],
            "cfg": settings["guidance_scale"],
            "num": args.num,
            "num_frames": num_frames,
            "size": size,
            "batch_size": args.batch_size,
            "splits": list(args.splits),
            "prompts": f"Shapes seed {EVAL_SEED} items 0..{args.num - 1}, captions from each split's templates",
            "noise_seeds": f"clip i of every split starts from noise seed i (0..{args.num - 1})",
            "real_seeds": {"reference": REAL_SEEDS[0], "second_real_set": REAL_SEEDS[1], "floor": EVAL_SEED},
            "autocast_bf16": pipe.use_bf16(),
        },
        "machine": machine(device),
        **report,
    }
    timing = report["timing"]
    print(
        f"model {report['settings']['model']}: {settings['sampler']} {settings['steps']} steps, cfg "
        f"{settings['guidance_scale']:g}, {num_frames}x{size}x{size}; {timing['seconds_per_clip']:.3f} s per clip "
        f"on {device} ({torch.get_num_threads()} threads); eval work {timing['eval_overhead_s']:.1f} s"
    )
    print(format_table(report))
    print(
        f"two independent real sets (Shapes seeds {REAL_SEEDS[0]}, {REAL_SEEDS[1]}): FD {report['real_vs_real_fd']:.2f}"
    )
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=1) + "\n").encode())
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mediadiff.video.evaluate [options]``."""
    parser = argparse.ArgumentParser(prog="python -m mediadiff.video.evaluate", description=DESCRIPTION)
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
