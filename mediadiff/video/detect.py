"""An analytic detector that reads colour, shape and direction back from a Shapes clip's pixels.

No learned parts, so it can judge generated clips without being fooled the way a trained classifier
can. Per frame, the *coverage* of a pixel is its brightest channel (the background is black); the
object is the pixels with coverage above one half.

- **colour**: the mean RGB of the object's pixels over the clip, nearest of :data:`COLOUR_RGB`;
- **direction**: the coverage-weighted centroid of each frame, a least-squares line through the
  track along x and along y; the axis with the larger slope and the slope's sign give left/right/up/
  down (image y grows downwards). A centre that moves less than ``min_travel`` of the frame over
  the clip is ``"none"``;
- **shape**: the fill ratio of the bounding box (coverage mass over box area: square 1, circle
  pi/4, triangle 1/2) and the share of the mass in the box's lower half (an apex-up triangle holds
  3/4 of its mass there, a square or circle 1/2), medians over frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .shapes import ALL_COLOURS, COLOUR_RGB, COLOURS

__all__ = ["Detection", "box_stats", "detect", "detect_batch", "score"]

_THRESHOLD = 0.5  # coverage above which a pixel belongs to the object
_TRIANGLE_LOWER = 0.62  # lower-half mass share above which the object is a triangle (3/4 vs 1/2)
_SQUARE_FILL = 0.89  # box fill above which a non-triangle is a square (1 vs pi/4 ~ 0.785)


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` read from one clip; ``"none"`` where it found no answer."""

    colour: str  # one of COLOURS, or "none" when no frame has an object
    shape: str  # one of SHAPES, or "none"
    direction: str  # one of DIRECTIONS, or "none" when the object does not travel far enough
    present: float  # share of frames in which an object was found
    travel: float  # centroid travel along the chosen axis, as a share of the frame size
    fill: float  # median bounding-box fill ratio
    lower: float  # median share of the object's mass in the lower half of its box

    def as_dict(self) -> dict:
        return asdict(self)


def _as_float_frames(video: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 ``[f h w 3]`` or float ``[3 f h w]`` in ``[-1, 1]`` -> float ``[f h w 3]`` in ``[0, 1]``."""
    if isinstance(video, torch.Tensor):
        if video.dtype == torch.uint8:
            video = video.cpu().numpy()
        else:
            if video.ndim != 4 or video.shape[0] != 3:
                raise ValueError(
                    f"detect: a float tensor must be [3 f h w] in [-1, 1], got {tuple(video.shape)}"
                )
            x = ((video.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()  # [3 f h w]
            return np.moveaxis(x, 0, -1)  # [f h w 3]
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"detect: frames must be [f h w 3] uint8, got shape {video.shape}")
    if video.dtype != np.uint8:
        raise ValueError(f"detect: [f h w 3] frames must be uint8, got {video.dtype}")
    return video.astype(np.float64) / 255.0  # [f h w 3]


def box_stats(coverage: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """Shape measures of one frame's object: bounding-box fill, lower-half mass share, log aspect ratio.

    ``coverage``: ``[h w]`` in ``[0, 1]``; ``mask``: ``[h w]`` bool, not empty. The box is the mask's
    bounding box grown by one pixel, and edge pixels count by their coverage (soft extents), so a
    square fills 1, a circle pi/4 and a triangle 1/2 at any sub-pixel position. ``lower`` is the share
    of the mass below the box's middle row (an apex-up triangle 3/4, a square or circle 1/2);
    ``aspect`` is ``log(width / height)`` of the soft extents (0 for every Shapes object).
    """
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    box = coverage[max(r0 - 1, 0) : r1 + 1, max(c0 - 1, 0) : c1 + 1]  # [bh bw]
    box = np.where(box > 0.1, box, 0.0)  # [bh bw]
    total = box.sum()
    width, height = box.max(axis=0).sum(), box.max(axis=1).sum()
    row_mass = box.sum(axis=1)  # [bh]
    row_pos = np.arange(box.shape[0]) + max(r0 - 1, 0) + 0.5  # [bh] image rows
    mid = (r0 + r1) / 2
    lower = (row_mass[row_pos > mid].sum() + 0.5 * row_mass[row_pos == mid].sum()) / total
    return float(total / (width * height)), float(lower), float(np.log(width / height))


def detect(
    video: np.ndarray | torch.Tensor, min_travel: float = 0.15, colours: Sequence[str] = COLOURS
) -> Detection:
    """Read one clip: uint8 ``[f h w 3]`` frames or a float ``[3 f h w]`` tensor in ``[-1, 1]``.
    ``colours``: the palette the colour is read from (default the six of :data:`COLOURS`; a model
    taught new colours is read with :data:`ALL_COLOURS`)."""
    if not colours or not set(colours) <= set(ALL_COLOURS):
        raise ValueError(f"detect: colours must be names from {ALL_COLOURS}, got {tuple(colours)}")
    rgb = _as_float_frames(video)  # [f h w 3]
    f, h, w, _ = rgb.shape
    coverage = rgb.max(axis=-1)  # [f h w]
    mask = coverage > _THRESHOLD  # [f h w]
    present = mask.reshape(f, -1).any(axis=1)  # [f]
    if not present.any():
        return Detection("none", "none", "none", 0.0, 0.0, 0.0, 0.0)

    # colour: mean RGB of object pixels, nearest palette entry
    mean_rgb = rgb[mask].mean(axis=0)  # [3]
    palette = np.array([COLOUR_RGB[c] for c in colours], dtype=np.float64) / 255.0  # [k 3]
    colour = colours[int(np.argmin(((palette - mean_rgb) ** 2).sum(axis=1)))]

    # direction: centroid track of the object's coverage
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    weights = np.where(mask, coverage, 0.0)  # [f h w]
    mass = weights.sum(axis=(1, 2))  # [f]
    frames = np.nonzero(present)[0]
    cx = (weights.sum(axis=1) * xs).sum(axis=1)[frames] / mass[frames]  # [f']
    cy = (weights.sum(axis=2) * ys).sum(axis=1)[frames] / mass[frames]  # [f']
    if len(frames) >= 2:
        slope_x = np.polyfit(frames, cx, 1)[0] / w  # frame widths per frame
        slope_y = np.polyfit(frames, cy, 1)[0] / h
    else:
        slope_x = slope_y = 0.0
    horizontal = abs(slope_x) >= abs(slope_y)
    slope = slope_x if horizontal else slope_y
    travel = abs(slope) * (f - 1)
    if travel < min_travel:
        direction = "none"
    elif horizontal:
        direction = "right" if slope > 0 else "left"
    else:
        direction = "down" if slope > 0 else "up"

    # shape: bounding-box fill and lower-half mass share, medians over frames
    stats = np.array([box_stats(coverage[i], mask[i]) for i in frames])  # [f' 3] fill, lower, aspect
    fill, lower = float(np.median(stats[:, 0])), float(np.median(stats[:, 1]))
    if lower > _TRIANGLE_LOWER:
        shape = "triangle"
    elif fill > _SQUARE_FILL:
        shape = "square"
    else:
        shape = "circle"
    return Detection(colour, shape, direction, float(present.mean()), float(travel), fill, lower)


def detect_batch(
    videos: np.ndarray | torch.Tensor, min_travel: float = 0.15, colours: Sequence[str] = COLOURS
) -> list[Detection]:
    """:func:`detect` over a batch: uint8 ``[b f h w 3]`` or float ``[b 3 f h w]`` in ``[-1, 1]``."""
    return [detect(v, min_travel, colours) for v in videos]


def score(detections: Sequence[Detection], labels: Sequence[dict]) -> dict[str, float]:
    """Accuracy of colour, shape and direction (and all three at once) against ``labels``.

    ``labels[i]`` holds the true ``colour``, ``shape`` and ``direction`` (a :class:`Shapes` item does).
    """
    if len(detections) != len(labels) or not labels:
        raise ValueError(f"score: {len(detections)} detections for {len(labels)} labels")
    keys = ("colour", "shape", "direction")
    hits = {k: sum(getattr(d, k) == y[k] for d, y in zip(detections, labels)) for k in keys}
    hits["all"] = sum(all(getattr(d, k) == y[k] for k in keys) for d, y in zip(detections, labels))
    return {k: v / len(labels) for k, v in hits.items()}
