"""What text-conditioned recipes share, whatever the modality: their conditioning flags, fitting the
pooled-text standardisation, and the aligned text adapter of ``recipes/video/align_text.py``.

A recipe calls :func:`add_text_recipe_args` on its argument group, :func:`fit_pooled_norm` with its
training captions when ``--pooled-norm`` is on, and :func:`load_text_adapter` /
:func:`install_text_adapter` for ``--text-adapter FILE``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "add_folder_text_args",
    "add_text_recipe_args",
    "fit_pooled_norm",
    "install_text_adapter",
    "load_text_adapter",
]


def add_text_recipe_args(group: Any, context_pool: str = "mean", pooled_norm: bool = False) -> None:
    """The flags every text-conditioned procedural recipe takes: data seed, text encoder, conditioning,
    training noise levels and the periodic evaluation.

    ``context_pool`` and ``pooled_norm``: the recipe's defaults for ``--context-pool`` and
    ``--pooled-norm`` (what its shipped model was trained with).
    """
    group.add_argument("--data-seed", type=int, default=0, help="stream of the procedural set trained on")
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
        help="training noise levels: uniform trains the high-noise steps where the layout is decided",
    )
    group.add_argument("--eval-num", type=int, default=24, help="clips per periodic evaluation")
    group.add_argument("--guidance", type=float, default=4.0, help="CFG scale of the periodic evaluation")


def add_folder_text_args(group: Any) -> None:
    """The text and sampling flags of a recipe on a user's captioned folder (video or audio): the text
    encoder, an aligned text adapter, the sample prompts and their CFG scale."""
    group.add_argument("--text-encoder", default="minilm", help='"minilm" or a local encoder folder')
    group.add_argument(
        "--text-adapter",
        default=None,
        help="frozen TokenAdapter weights from recipes/video/align_text.py --cache CACHE (built by a first run)",
    )
    group.add_argument("--prompt", action="append", default=None, help="sample prompt (repeatable)")
    group.add_argument("--guidance", type=float, default=4.0, help="CFG scale of the samples")


def fit_pooled_norm(backbone: torch.nn.Module, text_encoder: Any, captions: Sequence[str]) -> None:
    """Fit ``backbone.pooled_norm`` on training ``captions`` plus 10% empty prompts (what caption
    dropout feeds the backbone)."""
    from mediadiff.nn import masked_mean

    captions = list(captions)
    tokens, mask = text_encoder.encode(captions + [""] * (len(captions) // 10))  # [n l d], [n l]
    backbone.pooled_norm.fit(masked_mean(tokens, mask))  # [n d]


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
