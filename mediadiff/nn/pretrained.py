"""Backbones that rebuild from a config: presets, ``save_pretrained`` / ``from_pretrained`` on a local folder.

A saved model is a folder with ``config.json`` (``{"type": <class name>, "config": {...}}``) and
``model.safetensors``; both are written atomically (temporary file in the same folder, fsync,
``os.replace``), and loading needs no network.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from mediadiff.utils import atomic_write_bytes

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "ConfigModel"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound="ConfigModel")


def _from_json(value: Any) -> Any:
    """JSON lists back to the tuples the frozen configs use (nested too)."""
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


class ConfigModel(nn.Module):
    """Base of the backbones: ``Model(config)`` or ``Model(**fields)``, named presets, local save/load.

    Subclasses set ``config_class`` (a frozen dataclass) and ``presets`` (name -> config).
    """

    config_class: ClassVar[type]
    presets: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__()
        self.config = self.make_config(config, **overrides)

    @classmethod
    def make_config(cls, config: Any = None, **overrides: Any) -> Any:
        """A config from a config instance, a dict of fields, or defaults, with ``overrides`` applied."""
        if config is None:
            config = cls.config_class()
        elif isinstance(config, dict):
            config = cls._config_from_dict(config)
        elif not isinstance(config, cls.config_class):
            raise TypeError(f"{cls.__name__}: config must be a {cls.config_class.__name__} or a dict")
        if overrides:
            cls._check_fields(overrides)
            config = dataclasses.replace(config, **overrides)
        return config

    @classmethod
    def _check_fields(cls, fields: dict[str, Any]) -> None:
        known = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown config fields {unknown}; known: {sorted(known)}")

    @classmethod
    def _config_from_dict(cls, fields: dict[str, Any]) -> Any:
        cls._check_fields(fields)
        return cls.config_class(**{k: _from_json(v) for k, v in fields.items()})

    @classmethod
    def from_preset(cls: type[M], name: str, **overrides: Any) -> M:
        """Build a named preset (see ``presets``), with config fields overridden by ``overrides``."""
        if name not in cls.presets:
            raise ValueError(f"{cls.__name__}: unknown preset {name!r}; known: {sorted(cls.presets)}")
        return cls(cls.presets[name], **overrides)

    def num_parameters(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed); returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write_bytes(directory / WEIGHTS_NAME, safetensors_bytes(state, metadata={"format": "pt"}))
        spec = {"type": type(self).__name__, "config": dataclasses.asdict(self.config)}
        atomic_write_bytes(directory / CONFIG_NAME, (json.dumps(spec, indent=2) + "\n").encode())
        return directory

    @classmethod
    def from_pretrained(
        cls: type[M], directory: str | os.PathLike, *, device: torch.device | str = "cpu", **overrides: Any
    ) -> M:
        """Load a folder written by :meth:`save_pretrained`; ``overrides`` change config fields that do not
        change the weights (e.g. ``gradient_checkpointing=True``, ``dropout``)."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for p in (config_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"{cls.__name__}.from_pretrained: {p} not found")
        spec = json.loads(config_path.read_text())
        if not isinstance(spec, dict) or "config" not in spec or spec.get("type") != cls.__name__:
            raise ValueError(
                f"{config_path}: expected a {cls.__name__} config "
                f'{{"type": "{cls.__name__}", "config": {{...}}}}, got type {spec.get("type")!r}'
            )
        model = cls(cls._config_from_dict(spec["config"]), **overrides)
        model.load_state_dict(load_file(weights_path, device=str(device)), strict=True)
        return model.to(device)
