"""Backbones that rebuild from a config: presets, ``save_pretrained`` / ``from_pretrained`` on a local folder,
and the checked reading of every model folder (the autoencoders' too).

A saved model is a folder with ``config.json`` (``{"type": <class name>, "config": {...}}``) and
``model.safetensors``; both are written atomically (temporary file in the same folder, fsync,
``os.replace``), and loading needs no network. Nothing is unpickled: weights are safetensors and the
config is JSON.

Loading checks what a damaged or edited folder could get wrong, before any model runs, and says which file
and what was expected (``ValueError``, or ``FileNotFoundError`` for a missing file):

- ``config.json``: valid UTF-8 JSON, the expected ``type``, no unknown field, every required field, and
  each value of its field's type (:func:`config_from_dict`; a field added after a folder was written takes
  its default, which reproduces the older model);
- ``model.safetensors``: a whole, readable file (:func:`load_weights`: truncation or a damaged header is an
  error), whose data matches the SHA-256 that :func:`weights_bytes` stores in its metadata (a flipped bit in
  the data; folders written before the checksum are read without it), with finite float tensors;
- the two together: the same tensor names and shapes as the model the config builds (:func:`load_into`),
  so an edited channel count or width is named, not a torch traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes
from torch import nn

from mediadiff.utils import atomic_write_bytes

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ConfigModel",
    "config_from_dict",
    "load_into",
    "load_weights",
    "read_json",
    "weights_bytes",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CHECKSUM_KEY = "sha256"  # safetensors metadata: hex SHA-256 of the data section (the bytes after the header)


# ----------------------------------------------------------------------------------------- files


def read_json(path: str | os.PathLike, what: str = "a JSON object") -> dict[str, Any]:
    """The JSON object in ``path``: ``FileNotFoundError`` if it is missing, ``ValueError`` naming it if it is
    not UTF-8 JSON or not an object (``what`` says what was expected)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected {what}")
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); expected {what}"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); expected {what}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: holds a JSON {type(value).__name__}, expected {what}")
    return value


def weights_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A safetensors file of ``state`` whose metadata holds the SHA-256 of its data section
    (:data:`CHECKSUM_KEY`), so :func:`load_weights` can tell a damaged file from a good one."""
    plain = safetensors_bytes(state, metadata={"format": "pt"})
    data = plain[8 + int.from_bytes(plain[:8], "little") :]
    digest = hashlib.sha256(data).hexdigest()
    return safetensors_bytes(state, metadata={"format": "pt", CHECKSUM_KEY: digest})


def load_weights(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked (see the module docstring); ``ValueError`` naming the file
    and the fault: unreadable (truncated, damaged header), data that fails its stored checksum, or a float
    tensor with NaN / inf values. ``FileNotFoundError`` if it is missing."""
    from safetensors import SafetensorError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    raw = path.read_bytes()
    try:
        state = safetensors_load(raw)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as err:
        raise ValueError(
            f"{path}: not a readable safetensors file ({err}); it may be truncated or damaged, save it again"
        ) from None
    header = int.from_bytes(raw[:8], "little")
    try:
        metadata = json.loads(raw[8 : 8 + header]).get("__metadata__") or {}
    except (ValueError, AttributeError):  # safetensors read it, so this cannot fail; be safe anyway
        metadata = {}
    stored = metadata.get(CHECKSUM_KEY) if isinstance(metadata, dict) else None
    if stored is not None and hashlib.sha256(raw[8 + header :]).hexdigest() != stored:
        raise ValueError(
            f"{path}: its data does not match the checksum stored in it (sha256 {str(stored)[:12]}...): "
            "the file is damaged; save or copy it again"
        )
    for name, tensor in state.items():
        # a finite sum means every element is finite (a NaN or an inf anywhere makes the sum NaN or inf):
        # one pass without a mask; only a sum that overflowed or a damaged tensor gets the exact check
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
            continue
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"{path}: tensor {name!r} holds {bad} NaN or infinite values; the file is damaged"
            )
    return {k: v.to(device) for k, v in state.items()} if torch.device(device).type != "cpu" else state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], weights: Path, config: Path) -> None:
    """``model.load_state_dict(state, strict=True)`` after checking that ``state`` (read from ``weights``)
    has exactly the model's tensor names and shapes; ``ValueError`` naming both files and what differs
    (the config builds another model than the one the weights were saved from)."""
    own = model.state_dict()
    problems = [f"{k!r} is missing" for k in own if k not in state]
    problems += [f"{k!r} is not in the model" for k in state if k not in own]
    for k, v in state.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            problems.append(f"{k!r} is {list(v.shape)} in the file but {list(own[k].shape)} by the config")
        elif k in own and own[k].is_floating_point() != v.is_floating_point():
            problems.append(f"{k!r} is {v.dtype} in the file but {own[k].dtype} in the model")
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ValueError(
            f"{weights}: does not fit the {type(model).__name__} that {config} describes: {shown}"
            " (was the config edited, or the weights saved from another model?)"
        )
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------- configs


def _type_error(value: Any, hint: Any, where: str) -> str | None:
    """None if the JSON ``value`` fits the type ``hint``, else what is wrong (for the message)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return None
    if origin in (typing.Union, types.UnionType):
        if any(_type_error(value, a, where) is None for a in args):
            return None
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        return f"{where} must be {names}, got {value!r}"
    if hint is type(None):
        return None if value is None else f"{where} must be null, got {value!r}"
    if hint is bool:
        return None if isinstance(value, bool) else f"{where} must be true or false, got {value!r}"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{where} must be an integer, got {value!r}"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else f"{where} must be a finite number, got {value!r}"
    if hint is str:
        return None if isinstance(value, str) else f"{where} must be a string, got {value!r}"
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return None
        if not isinstance(value, dict):
            return f"{where} must be an object of {hint.__name__} fields, got {value!r}"
        return _fields_error(hint, value, where)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return f"{where} must be a list, got {value!r}"
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return f"{where} must have {len(args)} entries, got {len(value)}"
            items = list(zip(value, args))
        else:
            items = [(v, args[0] if args else Any) for v in value]
        for i, (v, a) in enumerate(items):
            problem = _type_error(v, a, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if origin is dict or hint is dict:
        return None if isinstance(value, dict) else f"{where} must be an object, got {value!r}"
    return None  # a type JSON cannot hold: the constructor checks it


def _fields_error(
    config_class: type, fields: dict[str, Any], where: str, required: tuple[str, ...] = ()
) -> str | None:
    """What is wrong with ``fields`` as the fields of the dataclass ``config_class``: unknown or missing
    names (those without a default, and ``required``), or a value of the wrong type; None if nothing."""
    spec = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(str(k) for k in fields if k not in spec)
    if unknown:
        return f"{where}: unknown fields {unknown}; {config_class.__name__} has {sorted(spec)}"
    needed = [
        n for n, f in spec.items()
        if (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING) or n in required
    ]  # fmt: skip
    missing = [n for n in needed if n not in fields]
    if missing:
        return f"{where}: missing fields {missing} of {config_class.__name__}"
    hints = typing.get_type_hints(config_class)
    for name, value in fields.items():
        problem = _type_error(value, hints.get(name, Any), f"{where}.{name}")
        if problem:
            return problem
    return None


def _from_json(value: Any) -> Any:
    """JSON lists back to the tuples the frozen configs use (nested too)."""
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def config_from_dict(
    config_class: type, fields: Any, source: str | os.PathLike, required: tuple[str, ...] = ()
) -> Any:
    """``config_class(**fields)`` for a config read from ``source`` (a ``config.json``), checked first: an
    object, no unknown field, no missing field (those without a default, and ``required``), each value of
    its field's type; the constructor's own checks too. Any fault is a ``ValueError`` naming ``source``."""
    if not isinstance(fields, dict):
        raise ValueError(
            f'{source}: "config" must be an object of {config_class.__name__} fields, got {fields!r}'
        )
    problem = _fields_error(config_class, fields, "config", required)
    if problem:
        raise ValueError(f"{source}: {problem}")
    hints = typing.get_type_hints(config_class)
    values = {
        k: v
        if dataclasses.is_dataclass(hints.get(k)) or typing.get_origin(hints.get(k)) is list
        else _from_json(v)
        for k, v in fields.items()
    }
    try:
        return config_class(**values)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as err:
        raise ValueError(f"{source}: not a valid {config_class.__name__}: {err}") from None


M = TypeVar("M", bound="ConfigModel")


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
        """Write ``config.json`` and ``model.safetensors`` (with its data checksum, :func:`weights_bytes`) into
        ``directory`` (created if needed); returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write_bytes(directory / WEIGHTS_NAME, weights_bytes(state))
        spec = {"type": type(self).__name__, "config": dataclasses.asdict(self.config)}
        atomic_write_bytes(directory / CONFIG_NAME, (json.dumps(spec, indent=2) + "\n").encode())
        return directory

    @classmethod
    def from_pretrained(
        cls: type[M], directory: str | os.PathLike, *, device: torch.device | str = "cpu", **overrides: Any
    ) -> M:
        """Load a folder written by :meth:`save_pretrained`; ``overrides`` change config fields that do not
        change the weights (e.g. ``gradient_checkpointing=True``, ``dropout``).

        Everything is checked before the model is used (see the module docstring): ``FileNotFoundError`` for
        a missing file, ``ValueError`` naming the file for a damaged or edited one."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        spec = read_json(
            config_path, f'a {cls.__name__} config {{"type": "{cls.__name__}", "config": {{...}}}}'
        )
        if spec.get("type") != cls.__name__ or "config" not in spec:
            raise ValueError(
                f"{config_path}: expected a {cls.__name__} config "
                f'{{"type": "{cls.__name__}", "config": {{...}}}}, got type {spec.get("type")!r}'
            )
        config = config_from_dict(cls.config_class, spec["config"], config_path)
        state = load_weights(weights_path)
        try:
            model = cls(config, **overrides)
        except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as err:
            raise ValueError(f"{config_path}: cannot build a {cls.__name__} from it: {err}") from None
        load_into(model, state, weights_path, config_path)
        return model.to(device)
