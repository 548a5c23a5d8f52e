"""``mediadiff eval video``: does a text-to-video model follow Shapes prompts, and do its clips look real?

This module is the Shapes side of the shared harness (:mod:`mediadiff.eval`): :class:`ShapesTask` (the
attributes colour, shape and direction, the detector, the feature space below, the prompts and the real
clips), the video autoencoder round trip, and the command's options; the loop, the statistics, the
table and the JSON report are :mod:`mediadiff.eval`'s.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage

from mediadiff.eval import TEMPLATE_ROW_NAMES, Feature, Generate, Reconstruct, run_command
from mediadiff.eval import add_arguments as add_eval_arguments
from mediadiff.eval import evaluate as evaluate_task
from mediadiff.eval import pipeline_generator as eval_pipeline_generator

from .detect import box_stats, detect
from .io import to_uint8
from .shapes import COLOURS, DIRECTIONS, SHAPES, Shapes
from .shapes_eval import EVAL_SEED, eval_items, save_grid

__all__ = [
    "CLASSES",
    "FEATURES",
    "REAL_SEEDS",
    "SPLITS",
    "ShapesTask",
    "add_arguments",
    "clip_features",
    "evaluate",
    "features",
    "pipeline_generator",
    "pipeline_reconstructor",
    "real_clips",
    "run",
]

REAL_SEEDS = (777, 778)  # Shapes seeds of the two real sets (reference, and floor partner); never trained on
SPLITS = ("train", "heldout")  # caption template sets, reported separately
CLASSES = {"colour": COLOURS, "shape": SHAPES, "direction": DIRECTIONS}  # what the detector reads back
DESCRIPTION = (
    "Generate clips for Shapes prompts (training and held-out phrasings), read colour, shape and direction "
    "back with an analytic detector, and measure the Frechet distance to real clips against a real-vs-real floor."
)

FEATURES: tuple[Feature, ...] = (  # the FD feature space of a Shapes clip
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


def real_clips(num: int, num_frames: int, size: int, seed: int, start: int = 0) -> np.ndarray:
    """Shapes clips ``start .. start+num-1`` of ``seed`` as uint8 ``[num f size size 3]``.

    Quantised exactly as a pipeline's output (``round((x + 1) * 127.5)``), so real and generated clips
    go through the same last step.
    """
    data = Shapes(length=max(start + num, 1), num_frames=num_frames, size=size, seed=seed)
    videos = torch.stack([data[i]["video"] for i in range(start, start + num)])  # [num 3 f h w]
    return to_uint8(videos).numpy()  # [num f h w 3]


# --------------------------------------------------------------------------- the Shapes task


@dataclass(frozen=True)
class ShapesTask:
    """Shapes as an :class:`~mediadiff.eval.EvalTask`: clips uint8 ``[f size size 3]``, read by the analytic
    detector, described by :data:`FEATURES`; prompts from the evaluation stream (seed ``EVAL_SEED``)."""

    num_frames: int
    size: int

    name: ClassVar[str] = "video"
    real_name: ClassVar[str] = "Shapes"
    classes: ClassVar[dict[str, tuple[str, ...]]] = CLASSES
    feature_table: ClassVar[tuple[Feature, ...]] = FEATURES
    splits: ClassVar[tuple[str, ...]] = SPLITS
    row_names: ClassVar[dict[str, str]] = TEMPLATE_ROW_NAMES
    prompt_seed: ClassVar[int] = EVAL_SEED
    real_seeds: ClassVar[tuple[int, int]] = REAL_SEEDS
    clip_dtype: ClassVar[Any] = np.uint8
    grid_suffix: ClassVar[str] = ".gif"

    @property
    def clip_shape(self) -> tuple[int, ...]:
        return (self.num_frames, self.size, self.size, 3)

    @property
    def info(self) -> dict[str, int]:
        return {"num_frames": self.num_frames, "size": self.size}

    def features(self, clips: np.ndarray) -> np.ndarray:
        return features(clips)  # [b d]

    def read(self, clips: np.ndarray) -> list[dict[str, str]]:
        return [{k: getattr(d, k) for k in CLASSES} for d in (detect(c) for c in clips)]

    def items(self, num: int, split: str) -> list[dict[str, Any]]:
        return eval_items(num, self.num_frames, self.size, templates=split)

    def real(self, num: int, seed: int, start: int = 0) -> np.ndarray:
        return real_clips(num, self.num_frames, self.size, seed, start)  # [num f h w 3]

    def save_grid(self, clips: np.ndarray, path: Path) -> None:
        save_grid(clips, path)  # GIF of [k f h w 3]


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
    """:func:`mediadiff.eval.evaluate` on :class:`ShapesTask` ``(num_frames, size)``: ``generate(prompts, seeds)``
    returns uint8 ``[b num_frames size size 3]``; the report as described there (and in this module's
    docstring), with ``num_frames`` and ``size`` after ``num``; ``grid`` is a ``.gif`` path."""
    return evaluate_task(
        ShapesTask(num_frames, size),
        generate,
        num=num,
        splits=splits,
        batch_size=batch_size,
        real_seeds=real_seeds,
        reconstruct=reconstruct,
        grid=grid,
        progress=progress,
    )


# --------------------------------------------------------------------------- a video pipeline


def pipeline_generator(
    pipe: Any, *, steps: int | None = None, sampler: str | None = None, guidance_scale: float | None = None
) -> Generate:
    """A video pipeline (anything called as a :class:`~mediadiff.pipelines.video.VideoPipeline`, returning
    ``.frames`` uint8 ``[b f h w 3]``) as a :data:`~mediadiff.eval.Generate`; see
    :func:`mediadiff.eval.pipeline_generator`."""
    return eval_pipeline_generator(
        pipe, output="frames", steps=steps, sampler=sampler, guidance_scale=guidance_scale
    )


def pipeline_reconstructor(pipe: Any) -> Reconstruct | None:
    """The pipeline's autoencoder round trip (posterior mean, then decode) as a :data:`Reconstruct`, under
    the pipeline's autocast; None for a pixel-space pipeline (identity autoencoder)."""
    from .autoencoder import IdentityAutoencoder

    autoencoder = pipe.autoencoder
    if isinstance(autoencoder, IdentityAutoencoder):
        return None

    @torch.inference_mode()
    def reconstruct(clips: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(pipe.device)  # [b f h w 3] uint8
        x = x.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # [b 3 f h w] in [-1, 1]
        with torch.autocast(pipe.device.type, torch.bfloat16, enabled=pipe.use_bf16()):
            video = autoencoder.decode(autoencoder.encode(x).float())  # [b 3 f h w]
        return to_uint8(video).numpy()  # [b f h w 3]

    return reconstruct


# --------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``mediadiff eval video`` options to ``parser``; returns it."""
    return add_eval_arguments(
        parser, splits=SPLITS, splits_help="caption template sets (default both)", grid_help="GIF grid"
    )


def _shapes_task(settings: dict[str, Any]) -> tuple[ShapesTask, str]:
    """The task for a pipeline's resolved settings, and its clip format in words; Shapes clips are square."""
    if settings["height"] != settings["width"]:
        raise ValueError(f"Shapes clips are square; the model makes {settings['height']}x{settings['width']}")
    size, num_frames = settings["height"], settings["num_frames"]
    return ShapesTask(num_frames, size), f"{num_frames}x{size}x{size}"


def run(args: argparse.Namespace, load: Callable[..., Any]) -> int:
    """``mediadiff eval video``: load the pipeline, evaluate, print the table, write the JSON; exit code.

    ``load(name_or_folder, device=)`` returns the pipeline: the CLI passes
    ``VideoPipeline.from_pretrained`` (video/ does not import the pipelines above it).
    """
    return run_command(
        args,
        name="video",
        load=load,
        task=_shapes_task,
        generator=pipeline_generator,
        reconstructor=pipeline_reconstructor,
    )
