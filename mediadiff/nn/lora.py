"""Low-rank adapters (LoRA) on any backbone, through peft: add, save, load, scale, merge and unload.

LoRA (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models", Eq. 3) keeps a layer's
weight ``W`` frozen and learns ``W + (alpha / r) * B A`` with ``A: [r in]``, ``B: [out r]`` and ``B``
started at zero, so a freshly added adapter leaves the model's output unchanged. peft supplies the
layers (:mod:`peft.tuners.lora`); this module picks the target layers of any ``nn.Module`` (ours or
an adapted diffusers model), freezes everything else, and keeps the adapter's weights in a small
safetensors file whose metadata says how to put them back::

    names = add_lora(backbone, rank=8)                  # only the adapters train
    save_lora(backbone, "concept.safetensors", info={"base": "shapes-dit"})
    ...
    load_lora(other_backbone, "concept.safetensors", scale=0.8)
    merge_lora(other_backbone)                           # fold B A into W: no cost per call
    unload_lora(other_backbone)                          # back to the plain layers

Targets are given as module-name patterns: a name (``to_q``) matches every module whose dotted name
ends with it (``blocks.3.cross.to_q``); a container (diffusers' ``to_out`` ModuleList) stands for the
linear and convolution layers inside it. The default, :data:`DEFAULT_TARGETS`, is every attention
projection under the names our backbones and diffusers' models use.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ADAPTER",
    "DEFAULT_TARGETS",
    "LORA_FORMAT",
    "LoraSettings",
    "add_lora",
    "has_lora",
    "load_lora",
    "lora_layers",
    "lora_state_dict",
    "lora_targets",
    "merge_lora",
    "read_lora",
    "save_lora",
    "set_lora_scale",
    "unload_lora",
]

ADAPTER = "default"  # peft's adapter name; one adapter per model at a time
LORA_FORMAT = "mediadiff.lora/1"  # the metadata "format" of a saved adapter file
# attention projections: ours (to_qkv, to_kv, to_q, to_out) and diffusers' (to_q, to_k, to_v,
# to_out.0, add_q_proj ... for joint attention)
DEFAULT_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_qkv",
    "to_kv",
    "to_out",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
)
_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)  # what peft's LoRA wraps


@dataclass(frozen=True)
class LoraSettings:
    """How an adapter is built: rank ``r``, ``alpha`` (the update is scaled by ``alpha / r``; None: ``r``,
    a scale of 1), the target patterns and the dropout on the adapter's input during training."""

    rank: int
    alpha: float | None = None
    targets: tuple[str, ...] = DEFAULT_TARGETS
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"LoRA targets must be non-empty module-name patterns, got {self.targets!r}")
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def scaling(self) -> float:
        """``alpha / r``, the factor on ``B A`` at scale 1."""
        return (self.rank if self.alpha is None else self.alpha) / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraSettings:
        return cls(
            int(d["rank"]), d.get("alpha"), tuple(d.get("targets") or DEFAULT_TARGETS), d.get("dropout", 0.0)
        )


def _matches(name: str, pattern: str) -> bool:
    """A dotted module name matches a pattern that it equals or ends with (``.to_q``), or that, as a
    regular expression, matches it whole."""
    if name == pattern or name.endswith("." + pattern):
        return True
    if any(c in pattern for c in "*[]()|+?\\^$"):
        try:
            return re.fullmatch(pattern, name) is not None
        except re.error:
            return False
    return False


def lora_targets(
    module: torch.nn.Module, patterns: tuple[str, ...] | list[str] = DEFAULT_TARGETS
) -> list[str]:
    """The dotted names of the linear / convolution layers of ``module`` that ``patterns`` select
    (a matched container stands for the layers inside it). ValueError when none is selected."""
    from peft.tuners.lora import LoraLayer

    chosen: list[str] = []
    for name, sub in module.named_modules():
        if not name or not any(_matches(name, p) for p in patterns):
            continue
        if isinstance(sub, LoraLayer):
            raise ValueError(f"{name} already has a LoRA adapter; unload_lora first")
        inner = [(name, sub)] if isinstance(sub, _LAYERS) else [
            (f"{name}.{n}", m) for n, m in sub.named_modules() if n and isinstance(m, _LAYERS)
        ]  # fmt: skip
        chosen += [n for n, _ in inner if n not in chosen]
    if not chosen:
        layers = sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, _LAYERS)})
        raise ValueError(
            f"LoRA targets {list(patterns)} select no linear or convolution layer of {type(module).__name__}; "
            f"its layer names end with: {layers}"
        )
    return chosen


def lora_layers(module: torch.nn.Module) -> dict[str, Any]:
    """Name -> peft LoRA layer, for every adapted layer of ``module``."""
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in module.named_modules() if isinstance(m, LoraLayer)}


def has_lora(module: torch.nn.Module) -> bool:
    """Whether ``module`` carries a LoRA adapter (its ``lora_A`` / ``lora_B`` weights; without importing peft)."""
    return any(".lora_" in name for name, _ in module.named_parameters())


def add_lora(module: torch.nn.Module, settings: LoraSettings) -> list[str]:
    """Wrap the target layers of ``module`` (in place) in LoRA layers with a zero-initialised ``B``
    (so the output is unchanged) and freeze everything but the adapters. Returns the trainable
    parameter names. A model already carrying an adapter is refused."""
    from peft import LoraConfig, inject_adapter_in_model

    if has_lora(module):
        raise ValueError(f"{type(module).__name__} already carries a LoRA adapter; unload_lora first")
    targets = lora_targets(module, settings.targets)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.rank if settings.alpha is None else settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
    )
    device = next(module.parameters()).device
    inject_adapter_in_model(config, module, adapter_name=ADAPTER)
    module.to(device)
    module.requires_grad_(False)
    names = []
    for name, p in module.named_parameters():
        if ".lora_" in name:
            p.requires_grad_(True)
            names.append(name)
    module._mediadiff_lora = settings  # what save_lora records
    return names


def _key(name: str) -> str:
    """peft's parameter name -> the file's key: the adapter name dropped (``x.lora_A.default.weight``
    -> ``x.lora_A.weight``), as diffusers and peft write adapter files."""
    return name.replace(f".{ADAPTER}.", ".")


def lora_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights of ``module`` (``layer.lora_A.weight``, ``layer.lora_B.weight`` per layer), on the CPU."""
    state = {
        _key(n): p.detach().to("cpu", torch.float32).contiguous()
        for n, p in module.named_parameters()
        if ".lora_" in n
    }
    if not state:
        raise ValueError(f"{type(module).__name__} carries no LoRA adapter")
    return state


def save_lora(
    module: torch.nn.Module,
    path: str | os.PathLike,
    info: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``module``'s adapter (or ``state``, its keys as :func:`lora_state_dict` gives) to a
    safetensors file, atomically, with the settings and ``info`` (base model, run) in its metadata."""
    from safetensors.torch import save

    from mediadiff.utils import atomic_write_bytes

    settings = getattr(module, "_mediadiff_lora", None)
    if settings is None:
        raise ValueError(f"{type(module).__name__} carries no LoRA adapter added by add_lora / load_lora")
    state = lora_state_dict(module) if state is None else state
    metadata = {
        "format": LORA_FORMAT,
        "lora": json.dumps(settings.to_dict()),
        "info": json.dumps(info or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(state, metadata=metadata))
    return path


def read_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], LoraSettings, dict[str, Any]]:
    """``(weights, settings, info)`` of an adapter file, or a ValueError naming the file."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} does not exist")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != LORA_FORMAT:
        raise ValueError(
            f"{path}: not a mediadiff LoRA file (metadata format {meta.get('format')!r}, expected {LORA_FORMAT!r})"
        )
    return state, LoraSettings.from_dict(json.loads(meta["lora"])), json.loads(meta.get("info", "{}"))


def load_lora(module: torch.nn.Module, path: str | os.PathLike, scale: float = 1.0) -> dict[str, Any]:
    """Add the adapter saved in ``path`` to ``module`` at ``scale`` (the update ``scale * alpha / r * B A``);
    returns the file's ``info``. The file must fit: the same target layers with the same shapes,
    else a ValueError that names the file and the first mismatch, and ``module`` is left as it was."""
    state, settings, info = read_lora(path)
    base = info.get("base")
    trained_on = f" (trained on {base})" if base else ""
    try:
        add_lora(module, settings)
    except ValueError as err:
        raise ValueError(f"{path}{trained_on}: does not fit {type(module).__name__}: {err}") from None
    own = {_key(n): p for n, p in module.named_parameters() if ".lora_" in n}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        unload_lora(module, merge=False)
        first = (
            f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected
            else f"{bad[0]} is {tuple(state[bad[0]].shape)}, the model's {tuple(own[bad[0]].shape)}"
        )  # fmt: skip
        raise ValueError(f"{path}{trained_on}: does not fit {type(module).__name__} ({first})")
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(state[k])
    module.requires_grad_(False)
    set_lora_scale(module, scale)
    return info


def set_lora_scale(module: torch.nn.Module, scale: float) -> None:
    """Scale every adapter of ``module``: the update becomes ``scale * alpha / r * B A`` (0: the base model)."""
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale == scale:
        raise ValueError(f"LoRA scale must be a number, got {scale!r}")
    layers = lora_layers(module)
    if not layers:
        raise ValueError(f"{type(module).__name__} carries no LoRA adapter")
    for layer in layers.values():
        if layer.merged:
            raise ValueError("the LoRA adapter is merged; unload_lora and load it again to change its scale")
        layer.set_scale(ADAPTER, float(scale))


def merge_lora(module: torch.nn.Module) -> None:
    """Fold each adapter into its layer's weight (``W += scale * alpha / r * B A``): the same outputs,
    without the adapter's cost per call."""
    layers = lora_layers(module)
    if not layers:
        raise ValueError(f"{type(module).__name__} carries no LoRA adapter")
    for layer in layers.values():
        if not layer.merged:
            layer.merge(adapter_names=[ADAPTER])


def unload_lora(module: torch.nn.Module, merge: bool = False) -> None:
    """Put the plain layers back (with the adapters folded in when ``merge``; a merged adapter stays
    folded in). The module's state-dict keys are then those of the model without LoRA."""
    layers = lora_layers(module)
    if merge:
        merge_lora(module)
    for name, layer in layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
    if hasattr(module, "_mediadiff_lora"):
        del module._mediadiff_lora
