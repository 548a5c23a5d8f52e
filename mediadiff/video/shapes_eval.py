"""Prompt-following on Shapes during training: a recipe's periodic evaluation.

:func:`periodic_eval` returns a trainer ``sample_fn`` that generates one clip per prompt of a fixed
held-out set of Shapes captions (seed :data:`EVAL_SEED`, never trained on), reads colour, shape and
direction back with the analytic detector (:mod:`mediadiff.video.detect`), writes a GIF grid and
returns the accuracies, which the trainer logs to ``metrics.jsonl`` beside the loss: the curve of
accuracy against steps shows where a recipe stands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .detect import detect_batch, score
from .generate import generate_video
from .shapes import Shapes

__all__ = ["EVAL_SEED", "eval_items", "periodic_eval", "save_grid"]

EVAL_SEED = 12345  # Shapes seed of every evaluation set; training recipes refuse it


def eval_items(
    num: int, num_frames: int, size: int, templates: str = "train", seed: int = EVAL_SEED
) -> list[dict]:
    """Captions and labels of the first ``num`` clips of the evaluation stream (videos dropped)."""
    data = Shapes(length=max(num, 1), num_frames=num_frames, size=size, seed=seed, templates=templates)
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


def periodic_eval(
    text_encoder: Any,
    autoencoder: torch.nn.Module,
    schedule: Any,
    *,
    num_frames: int,
    size: int,
    num: int = 24,
    prediction: str = "flow",
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    guidance_scale: float = 4.0,
    batch_size: int = 24,
):
    """A trainer ``sample_fn``: ``num`` clips from held-out captions, their detector accuracies and a GIF grid."""
    items = eval_items(num, num_frames, size)

    def sample_fn(ctx) -> dict:
        clips = []
        for start in range(0, num, batch_size):
            chunk = items[start : start + batch_size]
            clips.append(
                generate_video(
                    ctx.model,
                    schedule,
                    text_encoder,
                    autoencoder,
                    [it["text"] for it in chunk],
                    num_frames=num_frames,
                    height=size,
                    width=size,
                    prediction=prediction,
                    sampler=sampler,
                    steps=steps,
                    guidance_scale=guidance_scale,
                    seeds=[it["index"] for it in chunk],
                    device=ctx.device,
                )
            )
        frames = torch.cat(clips)  # [num f h w 3]
        acc = score(detect_batch(frames.numpy()), items)
        path = save_grid(frames, Path(ctx.out_dir) / "grid.gif")
        (Path(ctx.out_dir) / "prompts.txt").write_text("\n".join(it["text"] for it in items) + "\n")
        return {"paths": [path], "metrics": {f"{k}_acc": round(v, 4) for k, v in acc.items()}}

    return sample_fn


# --- what the Shapes recipes share -----------------------------------------------------------------


def add_shapes_recipe_args(group: Any, context_pool: str = "mean", pooled_norm: bool = False) -> None:
    """The flags every Shapes recipe takes: data seed, text encoder, conditioning, evaluation, export.

    ``context_pool`` and ``pooled_norm``: the recipe's defaults for ``--context-pool`` and
    ``--pooled-norm`` (what its shipped model was trained with).
    """
    import argparse

    group.add_argument("--data-seed", type=int, default=0, help="Shapes stream trained on")
    group.add_argument("--text-encoder", default="minilm", help='"minilm" or a local encoder folder')
    group.add_argument(
        "--pooled-norm",
        action=argparse.BooleanOptionalAction,
        default=pooled_norm,
        help="standardise the pooled text by statistics of the training captions (nn.FixedStandardize)",
    )
    group.add_argument(
        "--context-pool",
        choices=["mean", "attention"],
        default=context_pool,
        help="how the text tokens become the one vector that modulates the backbone (nn.AttentionPool)",
    )
    group.add_argument(
        "--t-sampler",
        choices=["uniform", "logit_normal"],
        default="uniform",
        help="training noise levels: uniform trains the high-noise steps where direction is decided",
    )
    group.add_argument("--eval-num", type=int, default=24, help="clips per periodic evaluation")
    group.add_argument("--guidance", type=float, default=4.0, help="CFG scale of the periodic evaluation")
    group.add_argument(
        "--export",
        default=None,
        metavar="FOLDER",
        help="write the newest checkpoint of --output-dir (EMA weights) as a pipeline folder and exit",
    )


def check_train_seed(seed: int) -> None:
    """Refuse to train on the evaluation stream."""
    if seed == EVAL_SEED:
        raise SystemExit(f"--data-seed {EVAL_SEED} is the evaluation stream; train on another seed")


def fit_pooled_norm(backbone: torch.nn.Module, text_encoder: Any, seed: int, num: int = 2000) -> None:
    """Fit ``backbone.pooled_norm`` on the first ``num`` training captions of Shapes stream ``seed``,
    plus 10% empty prompts (what caption dropout feeds the backbone)."""
    from mediadiff.nn import masked_mean

    data = Shapes(num_frames=2, size=16, seed=seed)  # captions do not depend on frames or size
    captions = [data[i]["text"] for i in range(num)]
    tokens, mask = text_encoder.encode(captions + [""] * (num // 10))  # [n l d], [n l]
    backbone.pooled_norm.fit(masked_mean(tokens, mask))  # [n d]


def export_shapes_run(
    args: Any,
    parts: dict,
    autoencoder: torch.nn.Module,
    schedule: Any,
    recipe: str,
    num_frames: int,
    size: int,
) -> Path:
    """``--export``: the run's newest EMA checkpoint as a pipeline folder with the recipe's defaults."""
    from .pipeline import export_run

    defaults = {"num_frames": num_frames, "height": size, "width": size, "guidance_scale": args.guidance}
    return export_run(
        args.output_dir,
        args.export,
        parts["backbone"],
        autoencoder,
        parts["text_encoder"],
        schedule,
        defaults=defaults,
        info={"recipe": recipe},
    )


def load_text_adapter(path: str) -> dict[str, torch.Tensor]:
    """The state dict of a TokenAdapter saved by ``recipes/video/align_text.py``, or a clear error."""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise SystemExit(f"--text-adapter: no file {path} (train one with recipes/video/align_text.py)")
    state = load_file(path)
    if "mlp.0.weight" not in state:
        raise SystemExit(f"--text-adapter: {path} holds no TokenAdapter weights (keys {sorted(state)[:4]})")
    return state


def install_text_adapter(backbone: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load pre-trained TokenAdapter weights into ``backbone.context_adapter`` and freeze them."""
    dim = backbone.context_adapter.norm.normalized_shape[0]
    if state["mlp.0.weight"].shape[1] != dim:
        raise SystemExit(
            f"--text-adapter: the adapter takes {state['mlp.0.weight'].shape[1]}-wide tokens, "
            f"the text encoder gives {dim}"
        )
    backbone.context_adapter.load_state_dict(state)
    backbone.context_adapter.requires_grad_(False)  # the backbone learns on top of the aligned text
