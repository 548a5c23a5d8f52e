"""mediadiff: train and sample text-to-video and text-to-audio diffusion models.

Importing the package is light: submodules (``mediadiff.diffusion``, ``mediadiff.video``, ...) and
the top-level names (``from mediadiff import VideoPipeline``) are imported on first use, and nothing
imports transformers, diffusers or PyAV at import time.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("audio", "cli", "diffusion", "eval", "nn", "pipelines", "text", "train", "utils", "video")
_EXPORTS: dict[str, str] = {
    "DiffusionPipeline": "mediadiff.pipelines.base",
    "VideoPipeline": "mediadiff.pipelines.video",
    "VideoOutput": "mediadiff.pipelines.video",
    "AudioPipeline": "mediadiff.pipelines.audio",
    "AudioOutput": "mediadiff.pipelines.audio",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"mediadiff.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mediadiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES) | set(_EXPORTS))


__all__ = ["AudioOutput", "AudioPipeline", "DiffusionPipeline", "VideoOutput", "VideoPipeline", "__version__"]
