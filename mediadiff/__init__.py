"""mediadiff: train and sample text-to-video and text-to-audio diffusion models.

Importing the package is light: submodules (``mediadiff.diffusion``, later the video and audio
sides) are imported on first use, and nothing imports transformers or diffusers at import time.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("cli", "diffusion", "nn", "text", "train", "video")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"mediadiff.{name}")
    raise AttributeError(f"module 'mediadiff' has no attribute {name!r}")


__all__ = ["__version__"]
