"""The modality-free pipeline: text encoder and prompt cache, device and precision, folder format, shipped
models, prompt / seed handling, sampling settings, and one sampling call given a latent shape.

A modality is a small subclass of :class:`DiffusionPipeline` (see :class:`~mediadiff.pipelines.video.
VideoPipeline`) that says what is its own:

================================  =====================================================================
class attribute / method          what the subclass supplies
================================  =====================================================================
``modality``                      its name in the CLI and the registry (``"video"``)
``SIZE_DEFAULTS``                 its size settings and their fallbacks (``num_frames``, ``height``...)
``EXTRA_DEFAULTS``                other saved defaults (``fps``), checked by :meth:`check_defaults`
``BACKBONES``                     backbone type name -> module that defines it (the folder registry)
``SHIPPED_MODELS``                shipped model name -> folder under ``mediadiff/weights/``
``SHIPPED_LORAS``                 shipped LoRA adapter name -> file under ``mediadiff/weights/``
``DEFAULT_MODEL``                 the shipped model used when none is named
``load_autoencoder(folder)``      rebuild the ``autoencoder/`` folder
``latent_shape(settings)``        the latent ``(c, ...)`` of one item for the resolved size settings
``decode(z, settings, ...)``      latents -> the modality's output object (e.g. uint8 frames)
``output_extensions()``           the file formats its output saves to
``__call__``                      its public signature; forwards to :meth:`generate`
================================  =====================================================================

Sampling (:meth:`DiffusionPipeline.sample_latents`) is classifier-free guidance (Ho & Salimans 2022,
Eq. 6) over one batched backbone call, with the guidance rescale of Lin et al. 2023 (Eq. 15-16) and
the guidance interval of Kynkaanniemi et al. 2024, any sampler of :data:`mediadiff.diffusion.SAMPLERS`,
noise for item ``i`` from its own CPU generator seeded ``seeds[i]``, so an item starts from the same noise
alone or in a batch and on any device.

Reproducibility. :meth:`DiffusionPipeline.generate` runs the backbone and the autoencoder on
``micro_batch`` items at a time (:attr:`DiffusionPipeline.micro_batch`), each micro-batch with its own
text context trimmed to its own prompts' length. With one item at a time (the default on a CPU) an item
is computed exactly as when it is generated alone, so on one machine a seed gives bit-identical output
across runs, batch sizes and ``--num`` splits. The whole batch at once (the default on CUDA) is
equal only up to float rounding: batched matrix products and convolutions sum in another order, which
moves about 1e-5 of the pixels by one grey level and audio samples by about 1e-4. Outputs on CPU and
CUDA are equal only up to rounding, whatever the micro-batch.

A pipeline folder::

    pipeline.json     {"type": <class name>, "format": 1, "prediction", "schedule", "text_encoder",
                       "defaults", "info"}
    backbone/         config.json + model.safetensors (fp32, or fp16 / bf16 to keep shipped weights small)
    autoencoder/      config.json (+ model.safetensors when it has weights)
    text_encoder/     a copy of a local text-encoder folder (absent when the reference is "minilm",
                      the encoder bundled with mediadiff)

Loading a folder (:meth:`DiffusionPipeline.from_pretrained`) checks it whole before anything runs and
names the file at fault: another modality's or a training run's folder, a bare backbone or autoencoder
folder, an unsupported diffusers pipeline (``FileNotFoundError`` / ``ValueError``); ``pipeline.json`` with
missing, unknown or mistyped keys; the components' configs and weights (:mod:`mediadiff.nn.pretrained`:
truncated or damaged safetensors, data failing its checksum, configs that no longer fit their weights);
and a backbone whose channels or text width do not match its autoencoder or text encoder (``ValueError``).
Nothing is unpickled: the folder's weights are safetensors, its settings JSON.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
import os
import re
import secrets
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

from mediadiff.diffusion import PREDICTIONS, SAMPLERS, Schedule, build_schedule, cfg, randn, sample
from mediadiff.text import sanitize_prompt
from mediadiff.text.context import Context, match_context, pack_context, pad_context
from mediadiff.utils import atomic_write_text, cpu_bf16_supported, staged_dir

from .trained import warn_if_untrained

__all__ = [
    "CONTEXT_CACHE_SIZE",
    "DEFAULT_STRENGTH",
    "EDIT_MODES",
    "FORMAT",
    "PIPELINE_NAME",
    "SAMPLING_DEFAULTS",
    "WEIGHTS_DIR",
    "DiffusionPipeline",
    "Edit",
    "as_prompts",
    "item_paths",
    "load_errors",
    "output_path",
    "sample_latents",
]

PIPELINE_NAME = "pipeline.json"
DIFFUSERS_INDEX = "model_index.json"  # a diffusers pipeline folder (DiffusionPipeline.from_diffusers)
FORMAT = 1  # version of the folder layout; bumped when a reader of the old one would misread the new
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
CONTEXT_CACHE_SIZE = 256  # prompts whose text encoding a pipeline keeps
TEXT_ENCODER_DIR = "text_encoder"
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

SAMPLING_DEFAULTS: dict[str, Any] = {
    "steps": 20,
    "sampler": "dpmpp_2m",
    "guidance_scale": 4.0,
    "guidance_rescale": 0.0,  # phi of Lin et al. 2023, Eq. 16 (0: plain CFG)
    "guidance_interval": (0.0, 1.0),  # t range where guidance applies (Kynkaanniemi et al. 2024)
}
"""Sampling settings every modality shares; a pipeline's saved ``defaults`` override them key by key."""

P = TypeVar("P", bound="DiffusionPipeline")


# ----------------------------------------------------------------------------------------- sampling


@torch.inference_mode()
def sample_latents(
    backbone: torch.nn.Module,
    schedule: Schedule,
    latent: Sequence[int],
    cond: Context,
    uncond: Context,
    *,
    seeds: Sequence[int],
    prediction: str = "flow",
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    guidance_scale: float = 4.0,
    guidance_rescale: float = 0.0,
    guidance_interval: tuple[float, float] = (0.0, 1.0),
    device: torch.device | str = "cpu",
    progress: bool = False,
    sampler_options: dict[str, Any] | None = None,
    edit: Edit | None = None,
) -> torch.Tensor:
    """Sample one latent of shape ``latent`` (``(c, ...)``, no batch) per seed from ready text contexts.

    cond: ``{"context": [b l d], "context_mask": [b l]}`` on ``device``; uncond: the same with batch
    ``b`` or 1 (one unconditional context shared by all items). Item ``i`` starts from noise drawn by a
    CPU generator seeded with ``seeds[i]``, which then drives the stochastic samplers' fresh noise too,
    so an item gets the same noise alone or in a batch and on any device (the backbone runs on the whole
    batch at once here: :meth:`DiffusionPipeline.sample_items` splits it for bit-exact items). ``guidance_scale`` 1 skips the
    unconditional pass. ``edit``: start from or keep an input's latents (:class:`Edit`, the same for
    every item). Runs under whatever autocast state the caller is in. Returns ``[b c ...]``.
    """
    device = torch.device(device)
    n = len(seeds)
    if cond["context"].shape[0] != n:
        raise ValueError(f"sample_latents: {n} seeds but {cond['context'].shape[0]} conditional contexts")
    cond, uncond = match_context(cond, uncond)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    noise = randn((n, *latent), generators, device=device)  # [b c ...]
    guided = cfg(
        backbone, cond, uncond, scale=guidance_scale, rescale=guidance_rescale, interval=guidance_interval
    )
    options = {"generator": generators, **(sampler_options or {})}  # deterministic samplers ignore it
    if edit is not None:
        if tuple(edit.latent.shape[1:]) != tuple(latent):
            raise ValueError(
                f"sample_latents: the edit's latent {tuple(edit.latent.shape[1:])} is not {tuple(latent)}"
            )
        given = edit.latent.to(device).expand(n, *latent)  # [b c ...]
        if edit.mode == "init":
            options.update(init=given, strength=edit.strength)
        else:
            options.update(known=given, mask=edit.mask.to(device))
    return sample(
        guided, noise, schedule, prediction, sampler, steps, progress=progress, **options
    )  # [b c ...]


# ----------------------------------------------------------------------------------------- editing

EDIT_MODES = ("init", "extend", "inpaint")
DEFAULT_STRENGTH = 0.8  # SDEdit's strength when none is given (diffusers' img2img default)


@dataclass
class Edit:
    """An input clip made ready for editing: what :meth:`DiffusionPipeline.prepare_edit` returns.

    mode: ``"init"`` (SDEdit: start from ``latent`` noised to ``strength``), ``"extend"`` or ``"inpaint"``
    (keep ``latent`` where ``mask`` is True at every step, :func:`mediadiff.diffusion.keep_known`).
    latent: ``[1 c ...]`` the encoded input, of the output's latent shape (zeros where not given).
    mask: bool, ``[1 1 ...]`` with the latent time axis full (True: kept), broadcastable to the latent.
    source: the input's file name (or "the init array"), for messages.
    """

    mode: str
    latent: torch.Tensor
    strength: float = 1.0
    mask: torch.Tensor | None = None
    source: str = ""

    def describe(self) -> str:
        """A few words for messages: what was given and what is kept."""
        if self.mode == "init":
            return f"from {self.source} at strength {self.strength:g}"
        frames = int(self.mask.sum())
        verb = "extending" if self.mode == "extend" else "inpainting"
        return f"{verb} {self.source}, {frames} of {self.mask.numel()} latent frames kept"


# ----------------------------------------------------------------------------------------- arguments


def as_prompts(value: Any, name: str, who: str, allow_empty: bool = False) -> list[str]:
    """A prompt or a list of prompts as a non-empty list of strings; ``who`` starts the error message."""
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{who}: {name} must be a string or a non-empty list of strings, got {value!r}")
    try:
        cleaned = [sanitize_prompt(p) for p in prompts]  # control characters read as spaces
    except ValueError as err:
        raise ValueError(f"{who}: {name}: {err}") from None
    if not allow_empty and not all(p.strip() for p in cleaned):
        raise ValueError(f"{who}: {name} must not be empty (the empty prompt is the unconditional one)")
    return list(prompts)


def output_path(path: str | os.PathLike, extensions: Sequence[str]) -> tuple[Path, str]:
    """``(path, its lower-case extension)``, or a ValueError naming the path and the ``extensions`` an
    output's ``save`` writes."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in extensions:
        raise ValueError(
            f"{path}: cannot write {ext or 'a file without an extension'}; supported: {', '.join(extensions)}"
        )
    return path, ext


def item_paths(path: Path, count: int) -> list[Path]:
    """Where ``count`` items of an output go: ``path`` itself for one, else ``stem-0.ext``, ``stem-1.ext``, ...
    beside it."""
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(count)]


def _positive_int(value: Any, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _number(value: Any, name: str, who: str, lo: float, hi: float = float("inf")) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))
    if not ok or not np.isfinite(value) or not lo <= value <= hi:
        bound = f">= {lo:g}" if hi == float("inf") else f"in [{lo:g}, {hi:g}]"
        raise ValueError(f"{who}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------------- pipeline


class DiffusionPipeline:
    """A text-conditioned diffusion model ready to sample: backbone, autoencoder, text encoder, schedule.

    Args:
        backbone: ``backbone(x, t, context, context_mask) -> prediction`` over latents ``[b c ...]``
            (a :class:`~mediadiff.nn.pretrained.ConfigModel`, so it can be saved).
        autoencoder: ``latent_shape``, ``decode`` (and ``save_pretrained``).
        text_encoder: ``encode(prompts) -> (tokens [b l d], mask [b l])``, e.g. a
            :class:`~mediadiff.text.encoder.TextEncoder`.
        schedule: the schedule the backbone was trained with (``to_config`` for saving).
        prediction: what the backbone predicts: ``eps | x0 | v | flow``.
        defaults: saved settings (keys of :data:`SAMPLING_DEFAULTS`, the subclass's ``SIZE_DEFAULTS``
            and ``EXTRA_DEFAULTS``); missing keys fall back to those.
        text_encoder_ref: how a saved folder finds the text encoder again: ``"minilm"`` (the encoder
            bundled with mediadiff) or a local folder (copied into the saved pipeline). None: taken
            from the encoder's own folder (``text_encoder.path``) when it has one.
        info: free-form JSON-able dict saved with the pipeline (recipe, steps, training time, eval).

    ``autocast`` (attribute): bf16 autocast while sampling and decoding (True), fp32 (False), or
    None: bf16 on a CUDA device that supports it and, where the modality's ``CPU_BF16`` says so (it
    measured faster for its shipped models), on a CPU with native bf16 (AVX-512 BF16 / AMX); else fp32.

    ``micro_batch`` (attribute): how many items :meth:`generate` runs through the backbone and the
    autoencoder at once. ``1``: one at a time, so an item is bit-identical to the same prompt and seed
    generated alone (on the same machine), whatever the batch; ``None``: the whole batch at once,
    equal to that only up to float rounding; ``"auto"`` (the default): 1 on a CPU, the whole batch
    elsewhere (CUDA). The cost of one at a time, measured on a 2-core CPU for 4 clips: the shipped video
    model none (4.05 s batched, 3.85 s one by one), the shipped audio model about 1.9x (0.82 s, 1.52 s).

    ``decode_chunk`` (attribute): latent frames per autoencoder decode call; None (the default) decodes
    the whole clip at once, whose peak memory grows linearly with the clip's length. With a chunk size the
    causal video VAE streams over time with its cache and the waveform VAE decodes overlapping windows,
    so the decode's peak no longer grows with the length (``benchmarks/scaling.py``); the output equals
    the whole decode up to float rounding (a different convolution order per shape). Autoencoders that
    decode in one pass (identity, mel) ignore it; one whose ``decode`` takes no ``chunk_size`` refuses it.
    """

    modality: ClassVar[str] = ""
    SIZE_DEFAULTS: ClassVar[dict[str, int]] = {}
    EXTRA_DEFAULTS: ClassVar[dict[str, Any]] = {}
    BACKBONES: ClassVar[dict[str, str]] = {}
    SHIPPED_MODELS: ClassVar[dict[str, str]] = {}
    SHIPPED_LORAS: ClassVar[dict[str, str]] = {}
    DEFAULT_MODEL: ClassVar[str | None] = None
    # the command line (mediadiff generate / eval MODALITY)
    ITEM: ClassVar[str] = "item"  # what one output is called ("clip")
    MASK_UNITS: ClassVar[str] = "seconds"  # what an inpainting mask (start, end) counts ("frames", "seconds")
    EXAMPLE_PROMPT: ClassVar[str] = ""
    CLI_DESCRIPTION: ClassVar[str] = ""
    EVAL_MODULE: ClassVar[str | None] = None  # module with add_arguments(parser) and run(args, load)
    EVAL_DESCRIPTION: ClassVar[str] = ""
    CPU_BF16: ClassVar[bool] = True  # "auto" precision uses bf16 autocast on a CPU with native bf16

    def __init__(
        self,
        backbone: torch.nn.Module,
        autoencoder: torch.nn.Module,
        text_encoder: Any,
        schedule: Schedule,
        *,
        prediction: str = "flow",
        defaults: dict[str, Any] | None = None,
        text_encoder_ref: str | os.PathLike | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        who = type(self).__name__
        if prediction not in PREDICTIONS:
            raise ValueError(f"{who}: unknown prediction {prediction!r}; known: {list(PREDICTIONS)}")
        known = self.default_settings()
        unknown = sorted(set(defaults or {}) - set(known))
        if unknown:
            raise ValueError(f"{who}: unknown defaults {unknown}; known: {sorted(known)}")
        self.backbone = backbone
        self.autoencoder = autoencoder
        self.text_encoder = text_encoder
        self.schedule = schedule
        self.prediction = prediction
        self.defaults: dict[str, Any] = {**known, **(defaults or {})}
        if isinstance(self.defaults["guidance_interval"], list):  # JSON gives lists
            self.defaults["guidance_interval"] = tuple(self.defaults["guidance_interval"])
        self.text_encoder_ref = None if text_encoder_ref is None else str(text_encoder_ref)
        self.info: dict[str, Any] = dict(info or {})
        self.autocast: bool | None = None
        self.micro_batch: int | str | None = (
            "auto"  # items per backbone / autoencoder call (micro_batch_size)
        )
        self.decode_chunk: int | None = None  # latent frames per autoencoder decode call (None: all)
        # extra sample() arguments: a grid rule (timesteps / spacing, scale_noise) for every sampler, solver options for
        # the default sampler only (a diffusers scheduler read by mediadiff.diffusion.interop)
        self.sampler_options: dict[str, Any] = {}
        self.lora: Path | None = None  # the LoRA file loaded into the backbone (load_lora)
        self.lora_scale = 1.0
        self._contexts: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

        context_dim = getattr(getattr(backbone, "config", None), "context_dim", None)
        text_dim = getattr(text_encoder, "dim", None)
        if context_dim is not None and text_dim is not None and context_dim != text_dim:
            raise ValueError(
                f"{who}: the text encoder gives {text_dim}-d tokens but the backbone takes "
                f"context_dim={context_dim}"
            )
        self.check_channels(self.latent_shape(self.resolve()))  # the saved defaults must be valid, and
        self.check_defaults(self.defaults)  # the backbone must take the autoencoder's latents

    def check_channels(self, latent: Sequence[int]) -> None:
        """ValueError unless the backbone takes and predicts latents of ``latent[0]`` channels (its
        ``config.in_channels`` / ``out_channels``, where it has them): a backbone trained on another
        autoencoder's latents."""
        config = getattr(self.backbone, "config", None)
        c_in = getattr(config, "in_channels", None)
        if not isinstance(c_in, int):
            return
        c_out = getattr(config, "out_channels", None) or c_in
        if latent[0] != c_in or c_out != c_in:
            ae = type(self.autoencoder).__name__
            raise ValueError(
                f"{type(self).__name__}: the backbone ({type(self.backbone).__name__}) takes {c_in}-channel and "
                f"predicts {c_out}-channel latents, but the autoencoder ({ae}) makes {latent[0]}-channel latents; "
                "the backbone belongs with another autoencoder"
            )

    @classmethod
    def default_settings(cls) -> dict[str, Any]:
        """Every setting a saved pipeline may hold, with its fallback value."""
        return {**cls.SIZE_DEFAULTS, **SAMPLING_DEFAULTS, **cls.EXTRA_DEFAULTS}

    def check_defaults(self, defaults: dict[str, Any]) -> None:
        """Check the modality's ``EXTRA_DEFAULTS`` values (the subclass's own rules); raise ValueError."""

    # ------------------------------------------------------------------------------------ device

    @property
    def device(self) -> torch.device:
        """Where the backbone (and so sampling) runs."""
        return next(self.backbone.parameters()).device

    def to(self: P, device: torch.device | str) -> P:
        """Move backbone, autoencoder and text encoder to ``device``; returns self."""
        self.backbone.to(device)
        self.autoencoder.to(device)
        if hasattr(self.text_encoder, "to"):
            self.text_encoder.to(device)
        self._contexts = OrderedDict(
            (k, (t.to(device), m.to(device))) for k, (t, m) in self._contexts.items()
        )
        return self

    def use_bf16(self) -> bool:
        """Whether sampling runs under bf16 autocast (see the ``autocast`` attribute)."""
        if self.autocast is not None:
            return bool(self.autocast)
        if self.device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        if self.device.type == "cpu":
            return self.CPU_BF16 and cpu_bf16_supported()
        return False

    def autocast_context(self) -> Any:
        """The autocast context of sampling and decoding (see :meth:`use_bf16`)."""
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.use_bf16())

    def micro_batch_size(self, n: int) -> int:
        """Items per backbone / autoencoder call for a batch of ``n`` (see the ``micro_batch`` attribute)."""
        size = self.micro_batch
        if size == "auto":
            return 1 if self.device.type == "cpu" else max(n, 1)
        if size is None:
            return max(n, 1)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(
                f"{type(self).__name__}: micro_batch must be a positive integer, None (the whole batch) or "
                f"'auto', got {size!r}"
            )
        return int(size)

    # ------------------------------------------------------------------------------------ settings

    def resolve(self, **settings: Any) -> dict[str, Any]:
        """Fill unset (None) settings from ``defaults`` and check them; one clear ``ValueError`` each.

        Takes the subclass's size settings (``SIZE_DEFAULTS``) and ``steps``, ``sampler``,
        ``guidance_scale``, ``guidance_rescale``, ``guidance_interval``; returns all of them resolved.
        """
        who = type(self).__name__
        names = (*self.SIZE_DEFAULTS, *SAMPLING_DEFAULTS)
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise TypeError(f"{who}.resolve: unknown settings {unknown}; known: {list(names)}")
        s = {k: self.defaults[k] if settings.get(k) is None else settings[k] for k in names}
        for name in (*self.SIZE_DEFAULTS, "steps"):
            s[name] = _positive_int(s[name], name, who)
        if s["sampler"] not in SAMPLERS:
            raise ValueError(f"{who}: unknown sampler {s['sampler']!r}; choose from {sorted(SAMPLERS)}")
        s["guidance_scale"] = _number(s["guidance_scale"], "guidance_scale", who, 0.0)
        s["guidance_rescale"] = _number(s["guidance_rescale"], "guidance_rescale", who, 0.0, 1.0)
        interval = s["guidance_interval"]
        if not isinstance(interval, (tuple, list)) or len(interval) != 2:
            raise ValueError(f"{who}: guidance_interval must be a pair (lo, hi) of times, got {interval!r}")
        lo, hi = (_number(v, "guidance_interval", who, 0.0, 1.0) for v in interval)
        if lo > hi:
            raise ValueError(f"{who}: guidance_interval must have lo <= hi, got {interval!r}")
        s["guidance_interval"] = (lo, hi)
        self.latent_shape(s)  # the size must suit the autoencoder and the backbone
        warn_if_untrained(self, s)  # it runs off the trained size, with a warning naming that size
        return s

    def latent_shape(self, settings: dict[str, Any]) -> tuple[int, ...]:
        """The latent ``(c, ...)`` of one item for resolved size ``settings``; ValueError if they do not suit."""
        raise NotImplementedError(f"{type(self).__name__} must define latent_shape")

    def check_latent(self, latent: Sequence[int], axes: Sequence[str], sizes: Sequence[int]) -> None:
        """Check that each latent axis suits the backbone: a positive multiple of what it needs per axis.

        latent: ``(c, n_1, ...)``; axes / sizes: the setting name and value behind each ``n_i`` (for the
        message). The backbone says what it needs with ``size_multiples()`` (one int per axis after the
        channels); a backbone without it checks its own input.
        """
        multiples = self.backbone_multiples(len(axes))
        name = type(self.backbone).__name__
        for axis, size, lat, m in zip(axes, sizes, latent[1:], multiples):
            if lat < 1 or lat % m:
                ratio = size // lat if lat >= 1 and size % lat == 0 else None  # pixels per latent step
                hint = f"; use a {axis} that is a multiple of {ratio * m}" if ratio else ""
                raise ValueError(
                    f"{type(self).__name__}: {axis}={size} gives {lat} latent {axis.replace('num_', '')}, "
                    f"but the {name} needs a positive multiple of {m}{hint}"
                )

    def backbone_multiples(self, num_axes: int) -> tuple[int, ...]:
        """What each latent axis must be a multiple of: the backbone's ``size_multiples()``, else 1s."""
        get = getattr(self.backbone, "size_multiples", None)
        multiples = tuple(int(m) for m in get()) if callable(get) else ()
        return multiples if len(multiples) == num_axes else (1,) * num_axes

    # ------------------------------------------------------------------------------------ text

    def _encode_one(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [l d], mask [l])`` of one prompt, encoded alone (so independent of any batch), cached."""
        hit = self._contexts.get(prompt)
        if hit is not None:
            self._contexts.move_to_end(prompt)
            return hit
        tokens, mask = pack_context(*self.text_encoder.encode([prompt]))  # [1 l d], [1 l]
        entry = (tokens[0].to(self.device), mask[0].to(self.device))  # [l d], [l]
        self._contexts[prompt] = entry
        if len(self._contexts) > CONTEXT_CACHE_SIZE:
            self._contexts.popitem(last=False)
        return entry

    def encode(self, prompts: Sequence[str]) -> Context:
        """Backbone kwargs for ``prompts``: ``{"context": [b l d], "context_mask": [b l]}`` on the device.

        Each distinct prompt is encoded once, alone, and kept (the last :data:`CONTEXT_CACHE_SIZE`
        prompts, the unconditional ``""`` among them), so repeated prompts cost no text-encoder time.
        """
        parts = [self._encode_one(p) for p in prompts]
        tokens, mask = pad_context([t for t, _ in parts], [m for _, m in parts])  # [b l d], [b l]
        return {"context": tokens, "context_mask": mask}

    def clear_cache(self) -> None:
        """Forget the cached text encodings."""
        self._contexts.clear()

    # ------------------------------------------------------------------------------------ LoRA

    def load_lora(self, path: str | os.PathLike, scale: float = 1.0) -> dict[str, Any]:
        """Add the LoRA adapter saved in ``path`` (by a ``--lora-rank`` training run, see
        :mod:`mediadiff.nn.lora`) to the backbone at ``scale``; returns the file's info (base model,
        step). One adapter at a time: :meth:`unload_lora` the previous one first. A file made for
        another backbone is refused with a ValueError naming it, and the backbone is left as it was."""
        from mediadiff.nn.lora import has_lora, load_lora

        if has_lora(self.backbone):
            raise ValueError(
                f"{type(self).__name__} already carries a LoRA adapter ({self.lora}); unload_lora first"
            )
        path = self.resolve_lora(path)
        info = load_lora(self.backbone, path, scale=scale)
        self.lora, self.lora_scale = path, float(scale)
        return info

    @classmethod
    def resolve_lora(cls, name_or_file: str | os.PathLike) -> Path:
        """An adapter file, or the file of a shipped adapter by name (``SHIPPED_LORAS``); FileNotFoundError
        naming both kinds otherwise."""
        if str(name_or_file) in cls.SHIPPED_LORAS:
            path = WEIGHTS_DIR / cls.SHIPPED_LORAS[str(name_or_file)]
            if path.is_file():
                return path
        path = Path(name_or_file)
        if not path.is_file():
            raise FileNotFoundError(
                f"LoRA {name_or_file}: no such file, and not a shipped adapter: {sorted(cls.SHIPPED_LORAS)}"
            )
        return path

    def set_lora_scale(self, scale: float) -> None:
        """Scale the loaded adapter's update (0: the base model, 1: as trained)."""
        from mediadiff.nn.lora import set_lora_scale

        set_lora_scale(self.backbone, scale)
        self.lora_scale = float(scale)

    def merge_lora(self) -> None:
        """Fold the loaded adapter into the backbone's weights: the same samples without its per-call cost."""
        from mediadiff.nn.lora import merge_lora

        merge_lora(self.backbone)

    def unload_lora(self, merge: bool = False) -> None:
        """Take the adapter off (folded into the weights first when ``merge``): the plain backbone again."""
        from mediadiff.nn.lora import unload_lora

        unload_lora(self.backbone, merge=merge)
        self.lora = None

    # ------------------------------------------------------------------------------------ torch.compile

    COMPILE_MODES: ClassVar[tuple[str | None, ...]] = (
        None,
        "default",
        "reduce-overhead",
        "max-autotune",
        "max-autotune-no-cudagraphs",
    )

    def compile(self: P, mode: str | None = None, dynamic: bool | None = None) -> P:
        """Compile the backbone with ``torch.compile`` (TorchInductor) for sampling; returns self.

        In place (``nn.Module.compile``): ``self.backbone`` stays the same module with the same
        parameters and state-dict keys, so saving, ``to`` and LoRA keep working; loading, scaling or
        merging an adapter afterwards changes the module, which its guards see: the next call compiles
        again (once) and runs the adapted model. The first sampling step pays the compilation (seconds
        to minutes on a CPU: see ``benchmarks/compile.py``); later steps and calls reuse the graph.

        mode: ``torch.compile``'s (None: its default; ``"max-autotune"`` searches kernels longer).
        dynamic: None (``torch.compile``'s automatic dynamic shapes, the default): the first shape is
        compiled static and a second one (another prompt length, another micro-batch, ``cfg`` 1's
        batch without the unconditional half) once more with those sizes symbolic, after which they
        recompile no more; False: one static graph per shape (each new prompt length compiles again,
        and past ``torch._dynamo.config.recompile_limit`` of them the backbone runs eagerly);
        True: symbolic from the start. Every step of a clip runs the same graph: the guidance batch
        (conditional and unconditional halves, 2 per item) keeps its shape at every step, the guidance
        interval is a mask on the device, and the timestep is a tensor.

        RuntimeError naming what is missing when TorchInductor cannot run here: a C++ compiler on a
        CPU (``g++``), Triton on a GPU.
        """
        who = f"{type(self).__name__}.compile"
        if mode not in self.COMPILE_MODES:
            raise ValueError(f"{who}: mode must be one of {list(self.COMPILE_MODES)}, got {mode!r}")
        if dynamic not in (None, True, False):
            raise ValueError(f"{who}: dynamic must be None, True or False, got {dynamic!r}")
        if self.device.type == "cpu":
            from torch._inductor.cpp_builder import get_cpp_compiler

            try:
                get_cpp_compiler()
            except Exception as err:  # torch's InvalidCxxCompiler, or whatever its search raises
                raise RuntimeError(
                    f"{who}: TorchInductor compiles CPU kernels with a C++ compiler and found none "
                    f"({type(err).__name__}); install one (Debian/Ubuntu: apt-get install g++) or set CXX"
                ) from None
        elif self.device.type == "cuda":
            from torch.utils._triton import has_triton

            if not has_triton():
                raise RuntimeError(f"{who}: TorchInductor needs Triton on CUDA (pip install triton)")
        self.backbone.compile(mode=mode, dynamic=dynamic)
        return self

    # ------------------------------------------------------------------------------------ generate

    def prepare(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None,
        seed: int | None,
        num_per_prompt: int,
        count_name: str = "num",
    ) -> tuple[list[str], list[int], Context, Context]:
        """Check the prompts, negative prompts, seed and count; returns ``(prompts, seeds, cond, uncond)``
        with one entry per generated item (item ``i`` from prompt ``i // num_per_prompt``, seed ``seed + i``).

        ``seed`` None draws a random seed (reported in the seeds). A negative prompt replaces the empty
        prompt as the unconditional context: one for all prompts, or one per prompt.
        """
        who = type(self).__name__
        prompts = as_prompts(prompt, "prompt", who)
        if isinstance(num_per_prompt, bool) or not isinstance(num_per_prompt, int) or num_per_prompt < 1:
            raise ValueError(f"{who}: {count_name} must be a positive integer, got {num_per_prompt!r}")
        negatives = None
        if negative_prompt is not None:
            negatives = as_prompts(negative_prompt, "negative_prompt", who, allow_empty=True)
            if len(negatives) == 1:
                negatives = negatives * len(prompts)
            if len(negatives) != len(prompts):
                raise ValueError(
                    f"{who}: {len(prompts)} prompts but {len(negatives)} negative prompts "
                    "(give one negative prompt, or one per prompt)"
                )
        if seed is None:
            seed = secrets.randbelow(2**31)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"{who}: seed must be a non-negative integer, got {seed!r}")
        item_prompts = [p for p in prompts for _ in range(num_per_prompt)]
        seeds = [int(seed) + i for i in range(len(item_prompts))]
        cond = self.encode(item_prompts)  # [b l d], [b l]
        if negatives is None:
            uncond = self.encode([""])  # [1 l d], [1 l]: one unconditional context for every item
        else:
            uncond = self.encode([n for n in negatives for _ in range(num_per_prompt)])  # [b l d], [b l]
        return item_prompts, seeds, cond, uncond

    def sample_latents(
        self,
        settings: dict[str, Any],
        cond: Context,
        uncond: Context,
        seeds: Sequence[int],
        progress: bool = False,
        edit: Edit | None = None,
    ) -> torch.Tensor:
        """One latent per seed for resolved ``settings`` (:meth:`resolve`), in the caller's autocast.

        A ``timesteps`` rule in :attr:`sampler_options` with a ``for_latent(latent)`` method is first
        given the latent shape (a grid whose shift depends on the resolution, e.g. LTX-Video's)."""
        latent = self.latent_shape(settings)
        options = {
            k: v
            for k, v in self.sampler_options.items()
            if k in ("timesteps", "spacing", "scale_noise") or settings["sampler"] == self.defaults["sampler"]
        }
        if hasattr(options.get("timesteps"), "for_latent"):
            options["timesteps"] = options["timesteps"].for_latent(tuple(latent))
        return sample_latents(
            self.backbone,
            self.schedule,
            latent,
            cond,
            uncond,
            seeds=seeds,
            prediction=self.prediction,
            sampler=settings["sampler"],
            steps=settings["steps"],
            guidance_scale=settings["guidance_scale"],
            guidance_rescale=settings["guidance_rescale"],
            guidance_interval=settings["guidance_interval"],
            device=self.device,
            progress=progress,
            sampler_options=options,
            edit=edit,
        )  # [b c ...]

    def sample_items(
        self,
        settings: dict[str, Any],
        cond: Context,
        uncond: Context,
        seeds: Sequence[int],
        progress: bool = False,
        edit: Edit | None = None,
    ) -> torch.Tensor:
        """:meth:`sample_latents` over :meth:`micro_batch_size` items at a time; returns ``[b c ...]``.

        Each micro-batch takes its rows of ``cond`` (and of ``uncond`` when it has one per item) trimmed to
        its own prompts' length (:func:`~mediadiff.text.context.pack_context`; the contexts of
        :meth:`encode` are padded to the longest prompt of the whole batch), so a micro-batch of one item
        is computed exactly as that item alone is.
        """
        n = len(seeds)
        size = self.micro_batch_size(n)
        if size >= n:
            return self.sample_latents(settings, cond, uncond, seeds, progress, edit)
        per_item = uncond["context"].shape[0] == n  # one negative prompt per item, or one shared

        def rows(ctx: Context, lo: int, hi: int) -> Context:
            tokens, mask = pack_context(ctx["context"][lo:hi], ctx["context_mask"][lo:hi])  # [k l' d], [k l']
            return {**ctx, "context": tokens, "context_mask": mask}

        parts = []
        for lo in range(0, n, size):
            hi = min(lo + size, n)
            u = rows(uncond, lo, hi) if per_item else uncond
            parts.append(self.sample_latents(settings, rows(cond, lo, hi), u, seeds[lo:hi], progress, edit))
        return torch.cat(parts)  # [b c ...]

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """``autoencoder.decode`` over :meth:`micro_batch_size` items at a time (each item alone on a CPU,
        so its output does not depend on the batch): latents ``[b c ...]`` -> the autoencoder's output."""
        size = self.micro_batch_size(z.shape[0])
        decode = self.chunked_decode()
        if size >= z.shape[0]:
            return decode(z)
        return torch.cat([decode(part.clone()) for part in z.split(size)])

    def chunked_decode(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``autoencoder.decode`` with the ``decode_chunk`` attribute as its ``chunk_size``, as :meth:`generate`
        decodes; ValueError if the value is bad or the autoencoder cannot decode in chunks."""
        chunk, who = self.decode_chunk, type(self).__name__
        if chunk is None:
            return self.autoencoder.decode
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(
                f"{who}: decode_chunk must be a positive number of latent frames or None, got {chunk!r}"
            )
        if "chunk_size" not in inspect.signature(self.autoencoder.decode).parameters:
            raise ValueError(
                f"{who}: decode_chunk={chunk}, but {type(self.autoencoder).__name__} decodes whole clips only "
                "(its decode takes no chunk_size)"
            )
        return functools.partial(self.autoencoder.decode, chunk_size=int(chunk))

    @torch.inference_mode()
    def generate(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        seed: int | None = None,
        num_per_prompt: int = 1,
        count_name: str = "num",
        progress: bool = False,
        prepared: tuple[dict[str, Any], Edit | None] | None = None,
        **settings: Any,
    ) -> Any:
        """Resolve ``settings`` (with an edit's ``init``, ``strength``, ``extend``, ``inpaint``, ``mask``:
        :meth:`prepare_edit`), encode the prompts, sample and decode; returns the subclass's output.
        ``prepared``: what :meth:`prepare_edit` returned for these settings, so as not to read the input
        again (``settings`` are then ignored)."""
        settings, edit = self.prepare_edit(**settings) if prepared is None else prepared
        prompts, seeds, cond, uncond = self.prepare(prompt, negative_prompt, seed, num_per_prompt, count_name)
        with self.autocast_context():
            z = self.sample_items(settings, cond, uncond, seeds, progress, edit)  # [b c ...]
            return self.decode(z.float(), settings, prompts, seeds)

    # ------------------------------------------------------------------------------------ editing

    def prepare_edit(
        self,
        *,
        init: Any = None,
        strength: float | None = None,
        extend: Any = None,
        inpaint: Any = None,
        mask: tuple[float, float] | None = None,
        **settings: Any,
    ) -> tuple[dict[str, Any], Edit | None]:
        """Resolve ``settings`` for an edit of an input clip (a file or an array; at most one mode) and
        encode it; returns ``(settings, edit)`` (``edit`` None without an input).

        - ``init`` + ``strength`` (default :data:`DEFAULT_STRENGTH`): SDEdit. The output has the input's
          length (the first ``num_frames`` / ``seconds`` of it when those are given) at the model's size.
        - ``extend``: continuation. The output holds the input, then new content; its length is the
          size setting when given, else the input's plus the model's default length.
        - ``inpaint`` + ``mask`` ``(start, end)``: regenerate that time range of the input (frames for
          video, seconds for audio) and keep the rest; the output has the input's length.

        The subclass reads, sizes and encodes the input (:meth:`read_input`, :meth:`edit_sizes`,
        :meth:`fit_input`) and maps times to latent frames (:meth:`latent_span`). ValueError names the
        input and what was expected.
        """
        who = type(self).__name__
        given = {k: v for k, v in (("init", init), ("extend", extend), ("inpaint", inpaint)) if v is not None}
        if len(given) > 1:
            raise ValueError(f"{who}: give one of init, extend or inpaint, not {' and '.join(given)}")
        if strength is not None and init is None:
            raise ValueError(f"{who}: strength goes with init (the clip to start from)")
        if (mask is None) != (inpaint is None):
            raise ValueError(
                f"{who}: inpaint and mask go together (the clip and the (start, end) to regenerate)"
            )
        if not given:
            return self.resolve(**settings), None
        ((mode, source),) = given.items()
        name = str(source) if isinstance(source, (str, os.PathLike)) else f"the {mode} array"
        if mode == "init":
            strength = _number(DEFAULT_STRENGTH if strength is None else strength, "strength", who, 0.0, 1.0)
        signal = self.read_input(source, mode)  # [c ...] in the autoencoder's input range, on the CPU
        settings = self.resolve(**self.edit_sizes(signal, mode, settings))
        shape = self.latent_shape(settings)
        axis = self.LATENT_TIME_AXIS
        with torch.inference_mode():
            clip = self.fit_input(
                signal, settings, mode
            )  # [c ...] sized for the output (extend: the kept part)
            latent = self.autoencoder.encode(clip[None].to(self.device)).float()  # [1 c ...]
        frames = shape[axis]
        time_shape = [1] * (len(shape) + 1)
        time_shape[axis] = frames
        keep = torch.zeros(frames, dtype=torch.bool)
        if mode == "extend":
            k = latent.shape[axis]
            if k >= frames:
                raise ValueError(
                    f"{who}: {name} already fills the {self.describe(settings)} asked for; ask for a longer output"
                )
            latent = torch.cat(
                [latent, latent.new_zeros((1, *shape)).narrow(axis, k, frames - k)], dim=axis
            )  # [1 c ...] the given frames, then zeros to be generated
            keep[:k] = True
        elif mode == "inpaint":
            lo, hi = self.latent_span(mask, settings)
            keep[:] = True
            keep[lo:hi] = False
        if tuple(latent.shape[1:]) != tuple(shape):
            raise ValueError(f"{who}: {name} encodes to {tuple(latent.shape[1:])}, expected {shape}")
        edit_mask = None if mode == "init" else keep.view(time_shape)  # [1 1 .. f ..]
        return settings, Edit(mode, latent, strength if mode == "init" else 1.0, edit_mask, name)

    LATENT_TIME_AXIS: ClassVar[int] = -1  # the time axis of a latent ``[c ...]`` (video: -3 of [c f h w])

    def read_input(self, source: Any, mode: str) -> torch.Tensor:
        """An input clip (a file path or an array) as a float tensor ``[c ...]`` in the autoencoder's
        input range, at the model's rate; ValueError naming the file if it cannot be read."""
        raise NotImplementedError(f"{type(self).__name__} has no editing (read_input)")

    def edit_sizes(self, signal: torch.Tensor, mode: str, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` with the size settings of the output for an edit of ``signal`` in ``mode``
        (see :meth:`prepare_edit`)."""
        raise NotImplementedError(f"{type(self).__name__} has no editing (edit_sizes)")

    def fit_input(self, signal: torch.Tensor, settings: dict[str, Any], mode: str) -> torch.Tensor:
        """``signal`` cut, padded or resized so that it encodes to the output's latent (``"extend"``: to
        the leading latent frames that it fixes)."""
        raise NotImplementedError(f"{type(self).__name__} has no editing (fit_input)")

    def latent_span(self, mask: tuple[float, float], settings: dict[str, Any]) -> tuple[int, int]:
        """The latent frames ``[lo, hi)`` that cover the time range ``mask`` of an output of ``settings``."""
        raise NotImplementedError(f"{type(self).__name__} has no editing (latent_span)")

    def decode(self, z: torch.Tensor, settings: dict[str, Any], prompts: list[str], seeds: list[int]) -> Any:
        """Latents ``[b c ...]`` -> the modality's output object (inside the sampling autocast); decode with
        :meth:`decode_latents`, so that each item's output does not depend on the batch."""
        raise NotImplementedError(f"{type(self).__name__} must define decode")

    @classmethod
    def output_extensions(cls) -> tuple[str, ...]:
        """Every extension the output's ``save`` accepts."""
        return ()

    # ------------------------------------------------------------------------------------ command line

    @classmethod
    def add_cli_arguments(cls, parser: Any) -> None:
        """Add the modality's own ``mediadiff generate`` flags (its size settings) to ``parser``."""

    @classmethod
    def cli_settings(cls, args: Any) -> dict[str, Any]:
        """The size settings of parsed ``mediadiff generate`` flags (None: the model's); ValueError if bad."""
        return {}

    def describe(self, settings: dict[str, Any]) -> str:
        """The modality's part of the line ``mediadiff generate`` prints for an output (its size)."""
        return ", ".join(f"{k} {settings[k]}" for k in self.SIZE_DEFAULTS)

    def summary(self, settings: dict[str, Any], edit: Edit | None = None) -> str:
        """What was made, in one line (``mediadiff generate`` and ``mediadiff serve`` print it): the size,
        sampler, steps, guidance and the edit, for resolved ``settings``."""
        line = f"{self.describe(settings)}, {settings['sampler']} {settings['steps']} steps, cfg {settings['guidance_scale']:g}"
        if settings["guidance_rescale"] > 0:
            line += f" (rescale {settings['guidance_rescale']:g})"
        if settings["guidance_interval"] != (0.0, 1.0):
            line += " (t in [{:g}, {:g}])".format(*settings["guidance_interval"])
        if self.lora is not None:
            line += f", LoRA {self.lora.name} x{self.lora_scale:g}"
        return line if edit is None else f"{line}, {edit.describe()}"

    # ------------------------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | os.PathLike, dtype: str | torch.dtype | None = None) -> Path:
        """Write the pipeline to ``folder`` (see the module docstring for the layout); returns it.

        The folder is built under a temporary sibling name, fsynced and renamed into place, so
        ``folder`` is never half-written (an older ``folder`` is replaced whole). ``dtype``
        (``"float16"``, ``"bfloat16"`` or None for float32) is the storage type of the backbone
        weights; loading always gives float32 modules. The autoencoder keeps its own precision.
        """
        if self.lora is not None:
            raise ValueError(
                f"{type(self).__name__} carries the LoRA adapter {self.lora}: unload_lora(merge=True) to save the "
                "model with it folded in, or unload_lora() to save the base"
            )
        folder = Path(folder).expanduser()
        storage = self._storage_dtype(dtype)
        if "diffusers" in self.info:  # built from a diffusers folder: written back as one
            from .diffusers import save_diffusers

            return save_diffusers(self, folder, storage)
        ref, source = self._text_encoder_source()
        with staged_dir(folder) as tmp:
            backbone = self.backbone
            if storage != torch.float32:
                backbone = copy.deepcopy(backbone).to(device="cpu", dtype=storage)
            backbone.save_pretrained(tmp / "backbone")
            self.autoencoder.save_pretrained(tmp / "autoencoder")
            if source is not None:
                _copy_text_encoder(source, tmp / TEXT_ENCODER_DIR)
            spec = {
                "type": type(self).__name__,
                "format": FORMAT,
                "prediction": self.prediction,
                "schedule": self.schedule.to_config(),
                "text_encoder": ref,
                "defaults": self.defaults,
                "info": self.info,
            }
            atomic_write_text(tmp / PIPELINE_NAME, json.dumps(spec, indent=2) + "\n")
        return folder

    @classmethod
    def _storage_dtype(cls, dtype: str | torch.dtype | None) -> torch.dtype:
        if dtype is None:
            return torch.float32
        if isinstance(dtype, torch.dtype) and dtype in STORAGE_DTYPES.values():
            return dtype
        if isinstance(dtype, str) and dtype in STORAGE_DTYPES:
            return STORAGE_DTYPES[dtype]
        raise ValueError(
            f"{cls.__name__}.save_pretrained: dtype must be one of {list(STORAGE_DTYPES)} or None, got {dtype!r}"
        )

    def _text_encoder_source(self) -> tuple[str, Path | None]:
        """``(reference stored in pipeline.json, folder to copy or None)`` for the text encoder."""
        from mediadiff.text import default_encoder_path

        who = f"{type(self).__name__}.save_pretrained"
        own = getattr(self.text_encoder, "path", None)
        own = Path(own).resolve() if own is not None else None
        ref = self.text_encoder_ref
        if ref is None:
            if own is None:
                raise ValueError(
                    f"{who}: the text encoder ({type(self.text_encoder).__name__}) has no folder, so a "
                    "saved pipeline could not rebuild it; use a TextEncoder "
                    "(mediadiff.text.load_text_encoder) or pass text_encoder_ref"
                )
            ref = "minilm" if own == default_encoder_path().resolve() else str(own)
        if ref in ("minilm", "all-MiniLM-L6-v2"):
            if own is not None and own != default_encoder_path().resolve():
                raise ValueError(
                    f"{who}: text_encoder_ref is 'minilm' but the text encoder was loaded from {own}"
                )
            return "minilm", None
        source = Path(ref).expanduser().resolve()
        if not (source / "config.json").is_file():
            raise ValueError(
                f"{who}: text_encoder_ref {ref!r} is neither 'minilm' nor a local text-encoder folder "
                "(with config.json)"
            )
        if own is not None and own != source:
            raise ValueError(
                f"{who}: text_encoder_ref is {source} but the text encoder was loaded from {own}"
            )
        return TEXT_ENCODER_DIR, source

    SPEC_KEYS: ClassVar[dict[str, type | tuple[type, ...]]] = {
        "type": str,
        "format": int,
        "prediction": str,
        "schedule": dict,
        "text_encoder": str,
        "defaults": (dict, type(None)),
        "info": (dict, type(None)),
    }
    """The keys of ``pipeline.json`` and the JSON type of each (``defaults`` and ``info`` may be absent)."""

    @classmethod
    def read_spec(cls, folder: Path) -> dict[str, Any]:
        """``pipeline.json`` of ``folder``, checked to be this class's, of this format, complete, with no
        unknown key and each value of its type; ValueError naming the file otherwise."""
        from mediadiff.nn.pretrained import read_json

        spec_path = folder / PIPELINE_NAME
        spec = read_json(spec_path, f"a {cls.__name__} folder's settings (written by save_pretrained)")
        kind = spec.get("type")
        if kind != cls.__name__:
            other = _modality_of(kind)
            if other:
                article = "an" if kind[:1] in "AEIOU" else "a"
                raise ValueError(
                    f"{spec_path}: not a {cls.__name__} folder but {article} {kind} one (the {other} modality); "
                    f"load it with {kind}.from_pretrained or `mediadiff generate {other}`"
                )
            raise ValueError(f"{spec_path}: not a {cls.__name__} (type {kind!r})")
        if spec.get("format") != FORMAT:
            raise ValueError(
                f"{spec_path}: folder format {spec.get('format')!r}; this mediadiff reads format {FORMAT}"
            )
        missing = [k for k in ("prediction", "schedule", "text_encoder") if k not in spec]
        if missing:
            raise ValueError(f"{spec_path}: missing {missing}")
        unknown = sorted(set(spec) - set(cls.SPEC_KEYS))
        if unknown:
            raise ValueError(
                f"{spec_path}: unknown keys {unknown}; a pipeline folder holds {sorted(cls.SPEC_KEYS)}"
            )
        for key, types_ in cls.SPEC_KEYS.items():
            if key in spec and not isinstance(spec[key], types_):
                names = [t.__name__ for t in (types_ if isinstance(types_, tuple) else (types_,))]
                expected = " or ".join(
                    {"dict": "an object", "str": "a string", "int": "an integer"}.get(n, "null")
                    for n in names
                )
                raise ValueError(f"{spec_path}: {key!r} must be {expected}, got {spec[key]!r}")
        return spec

    @classmethod
    def from_pretrained(
        cls: type[P], name_or_folder: str | os.PathLike | None = None, device: torch.device | str = "cpu"
    ) -> P:
        """Load a pipeline folder, or a model shipped in the package by name (``SHIPPED_MODELS``;
        None: ``DEFAULT_MODEL``).

        Modules load in float32, frozen (``requires_grad_(False)``) and in eval mode, on ``device``.
        Raises ``FileNotFoundError`` naming the shipped models for an unknown name or a missing folder.
        """
        folder = cls.resolve_model(cls.DEFAULT_MODEL if name_or_folder is None else name_or_folder)
        if not (folder / PIPELINE_NAME).is_file() and (folder / DIFFUSERS_INDEX).is_file():
            return cls.from_diffusers(folder, device)
        spec = cls.read_spec(folder)
        spec_path = folder / PIPELINE_NAME
        ref = spec["text_encoder"]
        if ref not in (TEXT_ENCODER_DIR, "minilm"):
            raise ValueError(
                f"{spec_path}: text_encoder must be 'minilm' or {TEXT_ENCODER_DIR!r}, got {ref!r}"
            )
        try:
            schedule = build_schedule(spec["schedule"])
        except ValueError as err:
            raise ValueError(f"{spec_path}: schedule: {err}") from None
        device = torch.device(device)
        backbone = cls.load_backbone(folder / "backbone", device)
        autoencoder = cls.load_autoencoder(folder / "autoencoder", device)
        autoencoder.eval().requires_grad_(False)
        from mediadiff.text import load_text_encoder

        text_folder = folder / TEXT_ENCODER_DIR if ref == TEXT_ENCODER_DIR else "minilm"
        with load_errors(f"{text_folder}: cannot load the text encoder"):
            text_encoder = load_text_encoder(text_folder, device=device)
        try:
            return cls(
                backbone,
                autoencoder,
                text_encoder,
                schedule,
                prediction=spec["prediction"],
                defaults=spec.get("defaults"),
                text_encoder_ref=ref if ref == "minilm" else None,
                info=spec.get("info"),
            )
        except ValueError as err:
            raise ValueError(f"{folder}: {err} (from {PIPELINE_NAME}, backbone/ and autoencoder/)") from None

    @classmethod
    def from_diffusers(cls: type[P], folder: str | os.PathLike, device: torch.device | str = "cpu") -> P:
        """A diffusers pipeline folder (``model_index.json``) of this modality as a pipeline: its transformer,
        VAE, text encoder and scheduler through the family's adapters (:mod:`mediadiff.pipelines.diffusers`).
        ValueError naming the folder and its ``_class_name`` when it is not a supported pipeline of
        this modality."""
        from .diffusers import load_diffusers

        return load_diffusers(cls, Path(folder).expanduser(), torch.device(device))

    @classmethod
    def load_backbone(cls, folder: Path, device: torch.device) -> torch.nn.Module:
        """Rebuild the backbone a ``backbone/`` folder names (``BACKBONES``), float32, frozen, in eval mode."""
        from mediadiff.nn.pretrained import read_json

        config_path = folder / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path}: missing; the pipeline folder has no backbone")
        kind = read_json(config_path, 'a backbone config {"type": ..., "config": {...}}').get("type")
        if not isinstance(kind, str) or kind not in cls.BACKBONES:
            raise ValueError(
                f"{config_path}: unknown {cls.modality} backbone type {kind!r}; known: {sorted(cls.BACKBONES)}"
            )
        model_cls = getattr(importlib.import_module(cls.BACKBONES[kind]), kind)
        model = model_cls.from_pretrained(folder, device=device).float()
        return model.eval().requires_grad_(False)

    @classmethod
    def load_autoencoder(cls, folder: Path, device: torch.device) -> torch.nn.Module:
        """Rebuild the ``autoencoder/`` folder on ``device``."""
        raise NotImplementedError(f"{cls.__name__} must define load_autoencoder")

    # ------------------------------------------------------------------------------------ shipped models

    @classmethod
    def installed_models(cls) -> list[str]:
        """Names of ``SHIPPED_MODELS`` whose folders are present in this installation."""
        return [n for n, sub in cls.SHIPPED_MODELS.items() if (WEIGHTS_DIR / sub / PIPELINE_NAME).is_file()]

    @classmethod
    def resolve_model(cls, name_or_folder: str | os.PathLike) -> Path:
        """The pipeline folder of a shipped model name, a folder path, or a Hugging Face Hub model id
        (``"org/name"``, optionally ``"org/name@revision"``); ``FileNotFoundError`` if none.

        A hub id resolves through huggingface_hub's cache (:func:`huggingface_hub.snapshot_download`:
        ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE=1`` and tokens work as they do for every hub library); with no
        connection it takes the cached snapshot.
        """
        name = str(name_or_folder)
        shipped = f"shipped: {cls.installed_models() or 'none installed'}"
        writer = f"{cls.__name__}.save_pretrained"
        if name in cls.SHIPPED_MODELS:
            folder = WEIGHTS_DIR / cls.SHIPPED_MODELS[name]
            if not (folder / PIPELINE_NAME).is_file():
                raise FileNotFoundError(
                    f"model {name!r} is not installed ({folder / PIPELINE_NAME} missing); {shipped}; "
                    f"or give a folder written by {writer}"
                )
            return folder
        folder = Path(name).expanduser()
        if folder.is_dir():
            if not (folder / PIPELINE_NAME).is_file() and not (folder / DIFFUSERS_INDEX).is_file():
                raise FileNotFoundError(
                    f"{folder} is not a pipeline folder (no {PIPELINE_NAME}) nor a diffusers one (no {DIFFUSERS_INDEX})"
                    f"{_folder_kind(folder)}; give a folder written by {writer}, or a shipped model: "
                    f"{sorted(cls.SHIPPED_MODELS)}"
                )
            return folder
        if HUB_ID.fullmatch(name):
            return _hub_snapshot(name, writer)
        raise FileNotFoundError(
            f"model {name!r} not found: neither a shipped model ({shipped}), a folder, nor a hub id "
            f"(org/name); give a folder written by {writer}"
        )

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.backbone.parameters())
        return (
            f"{type(self).__name__}(backbone={type(self.backbone).__name__} {n / 1e6:.2f}M, "
            f"autoencoder={type(self.autoencoder).__name__}, schedule={self.schedule!r}, "
            f"prediction={self.prediction!r}, defaults={self.defaults})"
        )


@contextmanager
def load_errors(where: str) -> Iterator[None]:
    """Re-raise what diffusers, transformers and safetensors raise for a damaged or incomplete folder (a
    missing sub-folder or file, bad JSON, truncated weights, a config that does not fit its weights) as one
    ``FileNotFoundError`` (a missing file) or ``ValueError`` starting with ``where``."""
    from pickle import UnpicklingError  # torch.load(weights_only=True) refusing a pickle: nothing is run

    from safetensors import SafetensorError

    try:
        yield
    except (
        UnpicklingError,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        RuntimeError,
        SafetensorError,
    ) as err:
        lines = str(err).strip().splitlines()
        reason = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
        kind = FileNotFoundError if isinstance(err, FileNotFoundError) else ValueError
        raise kind(f"{where} ({reason})") from None


def _modality_of(kind: Any) -> str | None:
    """The modality whose pipeline class is named ``kind`` (:data:`mediadiff.pipelines.MODALITIES`), or None."""
    from mediadiff.pipelines import MODALITIES

    return next((m for m, target in MODALITIES.items() if target.rpartition(":")[2] == kind), None)


def _folder_kind(folder: Path) -> str:
    """What a folder that is not a pipeline folder looks like, for the error message ("" if nothing known)."""
    if (folder / "checkpoints").is_dir() or (folder / "metrics.jsonl").is_file():
        return (
            ": it is a training run folder; write its newest checkpoint as a pipeline folder first "
            "(the recipe's --export FOLDER, or mediadiff.pipelines.export_run)"
        )
    if (folder / "state.json").is_file() and (folder / "model.safetensors").is_file():
        return ": it is a training checkpoint; export the run it belongs to (the recipe's --export FOLDER)"
    if (folder / "backbone").is_dir() or (folder / "autoencoder").is_dir():
        return (
            ": it has backbone/ or autoencoder/ but no pipeline.json (a pipeline folder not fully written?)"
        )
    config = folder / "config.json"
    try:
        kind = json.loads(config.read_text()).get("type") if config.is_file() else None
    except (ValueError, UnicodeDecodeError, AttributeError, OSError):
        kind = None
    if isinstance(kind, str):
        return (
            f": it is a single model's folder (a {kind}); a pipeline folder holds {PIPELINE_NAME}, backbone/ "
            "and autoencoder/"
        )
    return ""


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")  # org/name[@revision]


def _hub_snapshot(repo: str, writer: str) -> Path:
    """The local snapshot of hub model ``repo`` (``org/name[@revision]``) holding a pipeline folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(
            f"model {repo!r}: no such folder, and not in the Hugging Face Hub cache nor downloadable ({reason})"
        ) from None
    if not (folder / PIPELINE_NAME).is_file():
        raise FileNotFoundError(
            f"hub model {repo!r} ({folder}) has no {PIPELINE_NAME}; it was not written by {writer}"
        )
    return folder


def _copy_text_encoder(source: Path, target: Path) -> None:
    """Copy the files a text encoder loads from (top-level config, tokenizer and weight files)."""
    target.mkdir()
    for p in sorted(source.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in (".md", ".lock"):
            shutil.copy2(p, target / p.name)
