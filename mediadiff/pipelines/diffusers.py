"""diffusers pipeline folders as mediadiff pipelines: ``VideoPipeline.from_diffusers(folder)``.

A diffusers pipeline folder holds ``model_index.json`` (its ``_class_name``, e.g. ``"CogVideoXPipeline"``,
and one sub-folder per component: ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``). :data:`DIFFUSERS_PIPELINES` maps that class name to the modality and to the family's
``components(folder, device) -> dict`` (in ``mediadiff/video/diffusers_*.py`` or
``mediadiff/audio/diffusers_*.py``), which returns the keyword arguments of the modality's pipeline
constructor (``backbone``, ``autoencoder``, ``text_encoder``, ``schedule``, ``prediction``, ``defaults``,
``info``) plus ``sampler_options`` (the scheduler's grid rule and solver options, see
:mod:`mediadiff.diffusion.interop`). The family modules never import ``pipelines/``; this module builds
the pipeline from what they return.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch

from .base import DIFFUSERS_INDEX, DiffusionPipeline

__all__ = ["DIFFUSERS_PIPELINES", "diffusers_class", "load_diffusers"]

DIFFUSERS_PIPELINES: dict[str, tuple[str, str]] = {
    "CogVideoXPipeline": ("video", "mediadiff.video.diffusers_cogvideox:components"),
    "LTXPipeline": ("video", "mediadiff.video.diffusers_ltx:components"),
    "TextToVideoSDPipeline": ("video", "mediadiff.video.diffusers_sdvideo:components"),
    "WanPipeline": ("video", "mediadiff.video.diffusers_wan:components"),
}
"""diffusers pipeline ``_class_name`` -> (modality, ``"module:function"`` building its components)."""


def diffusers_class(folder: Path) -> str:
    """The ``_class_name`` of ``folder/model_index.json``; ValueError naming the folder otherwise."""
    index = folder / DIFFUSERS_INDEX
    try:
        spec = json.loads(index.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}: no {DIFFUSERS_INDEX}; not a diffusers pipeline folder") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{index}: not valid JSON ({err})") from None
    name = spec.get("_class_name") if isinstance(spec, dict) else None
    if not isinstance(name, str):
        raise ValueError(f"{index}: no _class_name; not a diffusers pipeline folder")
    return name


def load_diffusers(cls: type[DiffusionPipeline], folder: Path, device: torch.device) -> Any:
    """Build ``cls`` (a modality's pipeline class) from the diffusers pipeline folder ``folder``."""
    name = diffusers_class(folder)
    entry = DIFFUSERS_PIPELINES.get(name)
    supported = sorted(k for k, (m, _) in DIFFUSERS_PIPELINES.items() if m == cls.modality)
    if entry is None or entry[0] != cls.modality:
        other = f" (a {entry[0]} pipeline)" if entry is not None else ""
        raise ValueError(
            f"{folder}: diffusers pipeline {name!r}{other} is not a supported {cls.modality} pipeline; "
            f"supported {cls.modality} pipelines: {supported or 'none'}"
        )
    module, function = entry[1].split(":")
    components: dict[str, Any] = getattr(importlib.import_module(module), function)(folder, device)
    sampler_options = components.pop("sampler_options", {})
    info = {"diffusers": {"folder": str(folder.resolve()), "class": name}, **components.pop("info", {})}
    pipe = cls(**components, info=info)
    pipe.sampler_options = dict(sampler_options)
    return pipe
