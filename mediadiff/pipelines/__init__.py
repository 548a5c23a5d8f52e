"""Pipelines: one object per model that holds every part, saves to a folder and generates media.

- :class:`~mediadiff.pipelines.base.DiffusionPipeline`: what every modality shares (text encoder and
  prompt cache, device and precision, folder format, shipped models, seeds, guidance, sampling).
- :class:`~mediadiff.pipelines.video.VideoPipeline`: text to video.
- :class:`~mediadiff.pipelines.audio.AudioPipeline`: text to audio.
- :func:`~mediadiff.pipelines.export.export_run`: a training run's checkpoint as a pipeline folder.

:data:`MODALITIES` is the registry the ``mediadiff`` command builds ``generate`` and ``eval`` from: a
modality name -> ``"module:Class"`` of its pipeline. A new modality is a new pipeline subclass and one
entry here (or :func:`register_modality` from a plug-in), not a special case in the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

from mediadiff.utils import lazy_exports

MODALITIES: dict[str, str] = {
    "video": "mediadiff.pipelines.video:VideoPipeline",
    "audio": "mediadiff.pipelines.audio:AudioPipeline",
}
"""Modality name -> ``"module:Class"`` of its :class:`DiffusionPipeline` subclass."""

_EXPORTS: dict[str, str] = {
    "DiffusionPipeline": "base",
    "sample_latents": "base",
    "VideoPipeline": "video",
    "VideoOutput": "video",
    "AudioPipeline": "audio",
    "AudioOutput": "audio",
    "export_run": "export",
    "run_summary": "export",
}

__all__ = sorted([*_EXPORTS, "MODALITIES", "pipeline_class", "register_modality"])

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


def register_modality(name: str, target: str) -> None:
    """Add a modality: ``target`` is ``"module:Class"`` of its pipeline (imported on first use)."""
    if ":" not in target:
        raise ValueError(f"register_modality: target must be 'module:Class', got {target!r}")
    MODALITIES[name] = target


def pipeline_class(modality: str) -> Any:
    """The pipeline class of ``modality`` (a key of :data:`MODALITIES`)."""
    target = MODALITIES.get(modality)
    if target is None:
        raise KeyError(f"unknown modality {modality!r}; known: {sorted(MODALITIES)}")
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)
