"""Prompt-following on Shapes during training: a recipe's periodic evaluation, and what Shapes recipes share.

:func:`periodic_eval` returns ``evaluate(pipeline, ctx)`` for a recipe's periodic evaluation
(``mediadiff.train.recipe.Parts.evaluate``): it generates one clip per prompt of a fixed held-out set
of Shapes captions (seed :data:`EVAL_SEED`, never trained on) through a pipeline around the
in-training weights, reads colour, shape and direction back with the analytic detector
(:mod:`mediadiff.video.detect`), writes a GIF grid and returns the accuracies, which the trainer
logs to ``metrics.jsonl`` beside the loss: the curve of accuracy against steps shows where a recipe
stands. :func:`score_prompt_following` is the scorer itself, over any ``generate(prompts, seeds)``.

This module imports neither the trainer nor the pipelines: a pipeline is anything called as
``pipeline(prompts, seed=s, ...)`` that returns uint8 ``.frames [b f h w 3]`` (clip ``i`` from seed ``s + i``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mediadiff.eval import Generate, pipeline_generator

from .detect import detect_batch, score
from .shapes import COLOURS, Shapes

__all__ = [
    "EVAL_SEED",
    "eval_items",
    "periodic_eval",
    "save_grid",
    "score_prompt_following",
]


EVAL_SEED = 12345  # Shapes seed of every evaluation set; training recipes refuse it


def eval_items(
    num: int,
    num_frames: int,
    size: int,
    templates: str = "train",
    seed: int = EVAL_SEED,
    colours: Sequence[str] = COLOURS,
) -> list[dict]:
    """Captions and labels of the first ``num`` clips of the evaluation stream (videos dropped), drawn
    from ``colours`` (see :class:`~mediadiff.video.shapes.Shapes`)."""
    data = Shapes(
        length=max(num, 1), num_frames=num_frames, size=size, seed=seed, templates=templates, colours=colours
    )
    return [{k: v for k, v in data[i].items() if k != "video"} for i in range(num)]


def save_grid(frames: torch.Tensor | np.ndarray, path: str | Path, columns: int = 8, fps: int = 8) -> Path:
    """Tile uint8 clips ``[b f h w 3]`` into one looping GIF (2-pixel grey gutters)."""
    import imageio.v3 as iio

    clips = np.asarray(frames)
    b, f, h, w, _ = clips.shape
    cols = min(columns, b)
    rows = -(-b // cols)
    grid = np.full((f, rows * (h + 2) + 2, cols * (w + 2) + 2, 3), 64, np.uint8)  # [f H W 3]
    for i in range(b):
        r, c = divmod(i, cols)
        grid[:, 2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + c * (w + 2) : 2 + c * (w + 2) + w] = clips[i]
    path = Path(path)
    iio.imwrite(path, grid, duration=1000 / fps, loop=0)
    return path


def score_prompt_following(
    generate: Generate,
    items: Sequence[dict],
    out_dir: str | Path,
    batch_size: int = 24,
    palette: Sequence[str] = COLOURS,
) -> dict[str, Any]:
    """Generate a clip per item (its caption, seeded by its index), score it against the item's labels;
    the detector reads colours from ``palette``.

    Returns ``{"paths": [grid.gif], "metrics": {"colour_acc", "shape_acc", "direction_acc", "all_acc"}}``
    and writes ``grid.gif`` and ``prompts.txt`` into ``out_dir``.
    """
    clips = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        clips.append(generate([it["text"] for it in chunk], [it["index"] for it in chunk]))
    frames = np.concatenate(clips)  # [num f h w 3]
    acc = score(detect_batch(frames, colours=palette), list(items))
    path = save_grid(frames, Path(out_dir) / "grid.gif")
    (Path(out_dir) / "prompts.txt").write_text("\n".join(it["text"] for it in items) + "\n")
    return {"paths": [path], "metrics": {f"{k}_acc": round(v, 4) for k, v in acc.items()}}


def periodic_eval(
    *,
    num_frames: int,
    size: int,
    num: int = 24,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    guidance_scale: float = 4.0,
    batch_size: int = 24,
    colours: Sequence[str] = COLOURS,
) -> Callable[[Any, Any], dict[str, Any]]:
    """``evaluate(pipeline, ctx)``: ``num`` clips from held-out captions, their detector accuracies, a GIF grid.

    ``pipeline``: a video pipeline around the in-training weights; ``ctx``: anything with an
    ``out_dir`` (the trainer's ``SampleContext``). See :func:`score_prompt_following`. ``colours``: those
    of the prompts, and the detector's palette when it holds the six of :data:`COLOURS` (else those six
    and ``colours``), so a model taught a new colour is read with every colour it may draw.
    """
    items = eval_items(num, num_frames, size, colours=colours)
    palette = tuple(COLOURS) + tuple(c for c in colours if c not in COLOURS)
    settings = {
        "num_frames": num_frames, "height": size, "width": size, "steps": steps, "sampler": sampler,
        "guidance_scale": guidance_scale,
    }  # fmt: skip

    def evaluate(pipeline: Any, ctx: Any) -> dict[str, Any]:
        return score_prompt_following(
            pipeline_generator(pipeline, output="frames", **settings), items, ctx.out_dir, batch_size, palette
        )

    return evaluate


# --- what the Shapes recipes add to the shared text-recipe helpers (mediadiff.train.text) ----------


def check_train_seed(seed: int) -> None:
    """Refuse to train on the evaluation stream."""
    if seed == EVAL_SEED:
        raise SystemExit(f"--data-seed {EVAL_SEED} is the evaluation stream; train on another seed")


def check_shapes_args(args: Any) -> None:
    """A Shapes recipe's check of its parsed flags (``Recipe(check=...)``): not the evaluation stream."""
    check_train_seed(args.data_seed)


def training_captions(seed: int, num: int = 2000) -> list[str]:
    """The first ``num`` captions of Shapes stream ``seed`` (what ``fit_pooled_norm`` is fitted on)."""
    data = Shapes(num_frames=2, size=16, seed=seed)  # captions do not depend on frames or size
    return [data[i]["text"] for i in range(num)]
