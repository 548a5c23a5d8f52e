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

from .base import DIFFUSERS_INDEX, DiffusionPipeline, load_errors

__all__ = [
    "DIFFUSERS_PIPELINES",
    "MEDIADIFF_SETTINGS",
    "diffusers_class",
    "load_diffusers",
    "save_diffusers",
]

MEDIADIFF_SETTINGS = (
    "mediadiff.json"  # mediadiff's defaults and info beside model_index.json (diffusers ignores it)
)

DIFFUSERS_PIPELINES: dict[str, tuple[str, str]] = {
    "CogVideoXPipeline": ("video", "mediadiff.video.diffusers_cogvideox:components"),
    "LTXPipeline": ("video", "mediadiff.video.diffusers_ltx:components"),
    "StableAudioPipeline": ("audio", "mediadiff.audio.diffusers_stable_audio:components"),
    "TextToVideoSDPipeline": ("video", "mediadiff.video.diffusers_sdvideo:components"),
    "WanPipeline": ("video", "mediadiff.video.diffusers_wan:components"),
}
"""diffusers pipeline ``_class_name`` -> (modality, ``"module:function"`` building its components)."""


def diffusers_class(folder: Path) -> str:
    """The ``_class_name`` of ``folder/model_index.json``; ValueError naming the folder otherwise."""
    from mediadiff.nn.pretrained import read_json

    spec = read_json(folder / DIFFUSERS_INDEX, "a diffusers pipeline index with its _class_name")
    name = spec.get("_class_name")
    if not isinstance(name, str):
        raise ValueError(f"{folder / DIFFUSERS_INDEX}: no _class_name; not a diffusers pipeline folder")
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
    build = getattr(importlib.import_module(module), function)
    with load_errors(f"{folder}: cannot load this {name} folder"):
        components: dict[str, Any] = build(folder, device)
    sampler_options = components.pop("sampler_options", {})
    info = {**components.pop("info", {})}
    saved = folder / MEDIADIFF_SETTINGS  # written by save_diffusers: the pipeline's own defaults and info
    if saved.is_file():
        from mediadiff.nn.pretrained import read_json

        extra = read_json(saved, "mediadiff's settings of this folder (written by save_pretrained)")
        for key in ("defaults", "info"):
            if not isinstance(extra.get(key, {}), dict):
                raise ValueError(f"{saved}: {key!r} must be an object, got {extra[key]!r}")
        components["defaults"] = {**components.get("defaults", {}), **extra.get("defaults", {})}
        info.update(extra.get("info", {}))
    info["diffusers"] = {"folder": str(folder.resolve()), "class": name}
    try:
        pipe = cls(**components, info=info)
    except ValueError as err:
        raise ValueError(f"{folder}: {err}") from None
    pipe.sampler_options = dict(sampler_options)
    return pipe


def save_diffusers(pipe: DiffusionPipeline, folder: Path, storage: torch.dtype = torch.float32) -> Path:
    """Write a pipeline loaded by :func:`load_diffusers` back as a diffusers pipeline folder.

    The backbone's and the autoencoder's diffusers models are saved into the sub-folders that
    ``model_index.json`` names for their classes (so fine-tuned or LoRA-merged weights are kept; the
    backbone in ``storage`` precision), every other component (text encoder, tokenizer, scheduler) is
    copied from the source folder, and :data:`MEDIADIFF_SETTINGS` keeps the pipeline's defaults and info.
    Both ``from_pretrained`` and diffusers' own ``DiffusionPipeline.from_pretrained`` read the result.
    Built under a temporary name and renamed into place.
    """
    import copy
    import shutil

    from mediadiff.utils import atomic_write_text, staged_dir

    source = Path(pipe.info["diffusers"]["folder"])
    index = json.loads((source / DIFFUSERS_INDEX).read_text())
    backbone = getattr(pipe.backbone, "model", None)
    autoencoder = getattr(pipe.autoencoder, "model", None)
    if backbone is None or autoencoder is None:
        raise ValueError(
            f"{type(pipe).__name__}: not built from a diffusers folder, no diffusers models to save"
        )
    if storage != torch.float32:
        backbone = copy.deepcopy(backbone).to(device="cpu", dtype=storage)
    own = {type(backbone).__name__: backbone, type(autoencoder).__name__: autoencoder}
    with staged_dir(folder) as tmp:
        for key, value in index.items():
            if key.startswith("_") or not (isinstance(value, list) and len(value) == 2 and value[1]):
                continue
            model = own.get(value[1])
            if model is not None:
                model.save_pretrained(tmp / key)
            elif (source / key).is_dir():
                shutil.copytree(source / key, tmp / key)
        shutil.copy2(source / DIFFUSERS_INDEX, tmp / DIFFUSERS_INDEX)
        info = {k: v for k, v in pipe.info.items() if k != "diffusers"}
        extra = {"defaults": pipe.defaults, "info": info}
        atomic_write_text(tmp / MEDIADIFF_SETTINGS, json.dumps(extra, indent=2) + "\n")
    return Path(folder)
