"""Shapes: a procedural, captioned text-to-video set that needs no disk and no download.

Every clip shows one flat-coloured object (square, circle or triangle with its apex up) on a black
background, moving at constant speed left, right, up or down. Its centre crosses at least half the
frame over the clip and the whole object stays inside the frame. Each clip is a pure function of
``(index, seed)``: the same pair gives the same pixels and caption on every machine, so a training
run and a held-out evaluation only need disjoint seeds (or index ranges).

The set is *infinite*: :class:`Shapes` is a map-style :class:`torch.utils.data.Dataset` whose
``__len__`` is a configurable nominal epoch length (``length``), but ``dataset[i]`` is defined for
every ``i >= 0``, so a sampler may draw indices past ``length``.

Captions come from :data:`TRAIN_TEMPLATES` (10 phrasings) or :data:`HELDOUT_TEMPLATES` (5 phrasings
that never appear in training) with synonyms for shapes and directions, so a text-conditioned model
can be evaluated on wordings it has not seen (``Shapes(..., templates="heldout")``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "ALL_COLOURS",
    "COLOURS",
    "COLOUR_RGB",
    "DIRECTIONS",
    "DIRECTION_PHRASES",
    "EXTRA_COLOURS",
    "HELDOUT_TEMPLATES",
    "SHAPES",
    "SHAPE_SYNONYMS",
    "TRAIN_TEMPLATES",
    "Shapes",
    "caption",
    "render",
]

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")
# colours the shipped models never saw: what a LoRA fine-tune teaches them (``Shapes(colours=...)``)
EXTRA_COLOURS: tuple[str, ...] = ("orange", "white")
ALL_COLOURS: tuple[str, ...] = COLOURS + EXTRA_COLOURS
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "orange": (255, 128, 0),
    "white": (255, 255, 255),
}

# Nouns a caption may use for each shape.
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "square": ("square", "box", "block"),
    "circle": ("circle", "ball", "disc"),
    "triangle": ("triangle", "wedge"),
}

# Three grammatical forms of each direction: bare ("moving left"), "to" ("sliding to the left"),
# and "ward" ("travelling leftwards").
DIRECTION_PHRASES: dict[str, dict[str, str]] = {
    "left": {"bare": "left", "to": "to the left", "ward": "leftwards"},
    "right": {"bare": "right", "to": "to the right", "ward": "rightwards"},
    "up": {"bare": "up", "to": "to the top", "ward": "upwards"},
    "down": {"bare": "down", "to": "to the bottom", "ward": "downwards"},
}

# Training phrasings. Fields: {colour} {shape} and one of {bare} {to} {ward}.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape} moving {bare}",
    "{colour} {shape} sliding {to}",
    "a {shape}, {colour}, travelling {ward}",
    "the {colour} {shape} drifts {to}",
    "a {colour} {shape} that moves {ward}",
    "{colour} {shape} heading {to}",
    "a single {colour} {shape} gliding {bare} on black",
    "a {shape} in {colour} going {ward}",
    "one {colour} {shape} moves {bare} across the frame",
    "video of a {colour} {shape} travelling {to}",
)

# Phrasings kept out of training, for evaluating generalisation to unseen wordings.
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "{ward}, a {colour} {shape} slides across a dark background",
    "watch the {shape} coloured {colour} as it moves {to}",
    "there is a {colour} {shape} and it is going {bare}",
    "a black scene where a {colour} {shape} glides {ward}",
    "the clip shows a {colour} {shape} making its way {to}",
)

_TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "train": TRAIN_TEMPLATES,
    "heldout": HELDOUT_TEMPLATES,
    "all": TRAIN_TEMPLATES + HELDOUT_TEMPLATES,
}

_SUPERSAMPLE = 4  # sub-pixel samples per axis when computing the anti-aliased coverage of a shape


def caption(colour: str, shape: str, direction: str, template: str, shape_word: str | None = None) -> str:
    """Fill one caption template.

    Args:
        colour: one of :data:`ALL_COLOURS`.
        shape: one of :data:`SHAPES`.
        direction: one of :data:`DIRECTIONS`.
        template: a format string with ``{colour}``, ``{shape}`` and any of ``{bare}``, ``{to}``, ``{ward}``.
        shape_word: the noun to use for the shape (default: the shape's own name); one of
            :data:`SHAPE_SYNONYMS` ``[shape]``.
    """
    _check_choice("colour", colour, ALL_COLOURS)
    _check_choice("shape", shape, SHAPES)
    _check_choice("direction", direction, DIRECTIONS)
    word = shape if shape_word is None else shape_word
    if word not in SHAPE_SYNONYMS[shape]:
        raise ValueError(f"shape_word {word!r} is not a synonym of {shape!r}; known: {SHAPE_SYNONYMS[shape]}")
    return template.format(colour=colour, shape=word, **DIRECTION_PHRASES[direction])


def render(
    shape: str,
    colour: str,
    centres: np.ndarray,
    side: float,
    size: int,
) -> torch.Tensor:
    """Draw one object on black at a sequence of centres, with supersampled (anti-aliased) edges.

    Args:
        shape: one of :data:`SHAPES`.
        colour: one of :data:`ALL_COLOURS`.
        centres: ``[f, 2]`` object centre ``(x, y)`` per frame in pixel units (pixel ``j`` spans ``[j, j+1)``).
        side: object width and height in pixels (circle diameter, square side, triangle base and height).
        size: frame height and width in pixels.

    Returns:
        ``[3 f size size]`` float32 video in ``[-1, 1]``.
    """
    _check_choice("shape", shape, SHAPES)
    _check_choice("colour", colour, ALL_COLOURS)
    ss = _SUPERSAMPLE
    sub = (np.arange(size * ss, dtype=np.float64) + 0.5) / ss  # [size*ss] sub-pixel centres
    cx = centres[:, 0, None, None]  # [f 1 1]
    cy = centres[:, 1, None, None]  # [f 1 1]
    x = sub[None, None, :] - cx  # [f 1 size*ss]
    y = sub[None, :, None] - cy  # [f size*ss 1]
    r = side / 2
    if shape == "square":
        inside = (np.abs(x) <= r) & (np.abs(y) <= r)  # [f size*ss size*ss]
    elif shape == "circle":
        inside = x * x + y * y <= r * r  # [f size*ss size*ss]
    else:  # triangle, apex up: apex at (0, -r), base from (-r, r) to (r, r); y grows downwards
        inside = (y <= r) & (np.abs(x) <= (y + r) / 2)  # [f size*ss size*ss]
    f = centres.shape[0]
    coverage = inside.reshape(f, size, ss, size, ss).mean(axis=(2, 4))  # [f size size]
    rgb = np.asarray(COLOUR_RGB[colour], dtype=np.float64) / 255.0  # [3]
    video = rgb[:, None, None, None] * coverage[None]  # [3 f size size] in [0, 1]
    return torch.from_numpy(video * 2.0 - 1.0).float()


class Shapes(Dataset):
    """Procedural captioned clips of one coloured shape moving on black; deterministic in ``(index, seed)``.

    ``dataset[i]`` returns a dict:

    - ``video``: ``[3 f h w]`` float32 in ``[-1, 1]`` (canonical layout, ``h == w == size``);
    - ``text``: the caption;
    - ``colour``, ``shape``, ``direction``: the labels as strings (members of ``colours``,
      :data:`SHAPES`, :data:`DIRECTIONS`), and ``colour_id``, ``shape_id``, ``direction_id``: their
      positions in :data:`ALL_COLOURS` (so the six base colours keep their ids), SHAPES and DIRECTIONS;
    - ``index``: the index asked for.

    Any index ``>= 0`` is valid (the set is infinite); ``len()`` is the nominal epoch ``length``.
    Training on ``seed=0`` and evaluating on ``seed=1`` gives held-out clips drawn independently.

    Args:
        length: nominal number of items, what ``len()`` reports.
        num_frames: frames per clip (at least 2).
        size: frame height and width in pixels (at least 16; 32 and 64 are the usual sizes).
        seed: selects an independent stream of clips.
        templates: ``"train"`` (:data:`TRAIN_TEMPLATES`), ``"heldout"`` (:data:`HELDOUT_TEMPLATES`) or
            ``"all"`` (both); the caption template is drawn from this set.
        colours: the colours drawn from, uniformly (default :data:`COLOURS`, the shipped models' six;
            any of :data:`ALL_COLOURS`, e.g. ``COLOURS + ("orange",)`` to teach a new one). With the
            default the stream is exactly that of earlier versions.
    """

    data_key = "video"  # the item key a trainer reads

    def __init__(
        self,
        length: int = 10_000,
        num_frames: int = 16,
        size: int = 64,
        seed: int = 0,
        templates: Literal["train", "heldout", "all"] = "train",
        colours: tuple[str, ...] | list[str] = COLOURS,
    ) -> None:
        if length < 1:
            raise ValueError(f"Shapes: length must be >= 1, got {length}")
        if num_frames < 2:
            raise ValueError(f"Shapes: num_frames must be >= 2 (the object has to move), got {num_frames}")
        if size < 16:
            raise ValueError(f"Shapes: size must be >= 16 pixels, got {size}")
        if templates not in _TEMPLATE_SETS:
            raise ValueError(f"Shapes: templates must be one of {sorted(_TEMPLATE_SETS)}, got {templates!r}")
        colours = tuple(colours)
        if not colours or len(set(colours)) != len(colours) or not set(colours) <= set(ALL_COLOURS):
            raise ValueError(f"Shapes: colours must be distinct names from {ALL_COLOURS}, got {colours}")
        self.colours = colours
        self.length = length
        self.num_frames = num_frames
        self.size = size
        self.seed = seed
        self.templates = _TEMPLATE_SETS[templates]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < 0:
            raise IndexError(
                f"Shapes: index must be >= 0 (the set is infinite, not indexable from the end), got {index}"
            )
        rng = np.random.default_rng([self.seed, index])
        colour = self.colours[int(rng.integers(len(self.colours)))]
        shape_id = int(rng.integers(len(SHAPES)))
        direction_id = int(rng.integers(len(DIRECTIONS)))
        colour_id, shape, direction = ALL_COLOURS.index(colour), SHAPES[shape_id], DIRECTIONS[direction_id]

        size, f = self.size, self.num_frames
        side = size / 4 * rng.uniform(0.9, 1.1)  # about a quarter of the frame
        lo, hi = side / 2 + 1, size - side / 2 - 1  # centre range: the object stays >= 1 px inside the frame
        travel = rng.uniform(size / 2, hi - lo)  # centre crosses at least half the frame
        start = rng.uniform(lo, hi - travel)
        along = start + travel * np.linspace(0.0, 1.0, f)  # [f] constant speed
        if direction in ("left", "up"):
            along = along[::-1]
        across = np.full(f, rng.uniform(lo, hi))  # [f] the other coordinate stays put
        if direction in ("left", "right"):
            centres = np.stack([along, across], axis=1)  # [f 2] (x, y)
        else:
            centres = np.stack([across, along], axis=1)  # [f 2] (x, y)

        template = self.templates[int(rng.integers(len(self.templates)))]
        words = SHAPE_SYNONYMS[shape]
        text = caption(colour, shape, direction, template, words[int(rng.integers(len(words)))])
        return {
            "video": render(shape, colour, centres, side, size),  # [3 f size size]
            "text": text,
            "colour": colour,
            "shape": shape,
            "direction": direction,
            "colour_id": colour_id,
            "shape_id": shape_id,
            "direction_id": direction_id,
            "index": index,
        }


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
