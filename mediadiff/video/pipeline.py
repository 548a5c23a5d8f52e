"""Text-to-video pipeline: one object that holds every part, saves to a folder and generates clips.

:class:`VideoPipeline` composes a backbone (:class:`~mediadiff.video.dit.DiT` or
:class:`~mediadiff.video.unet3d.UNet3D`), a video autoencoder, a text encoder, a schedule and default
sampling settings; :meth:`VideoPipeline.save_pretrained` writes them to one folder that rebuilds with
nothing else, and :meth:`VideoPipeline.from_pretrained` reads such a folder, or a model shipped inside
the package by name (:data:`SHIPPED_MODELS`)::

    pipe = VideoPipeline.from_pretrained("shapes-dit")
    out = pipe("a yellow triangle moving up", seed=0)
    out.save("triangle.mp4")                    # out.frames: uint8 [b f h w 3]

A pipeline folder::

    pipeline.json     {"type": "VideoPipeline", "format": 1, "prediction", "schedule", "text_encoder",
                       "defaults", "info"}
    backbone/         config.json + model.safetensors (fp32, or fp16 / bf16 to keep shipped weights small)
    autoencoder/      config.json (+ model.safetensors for the VAE)
    text_encoder/     a copy of a local text-encoder folder (absent when the reference is "minilm",
                      the encoder bundled with mediadiff)

Sampling is :func:`~mediadiff.video.generate.sample_video`: classifier-free guidance (Ho & Salimans
2022) over one batched backbone call, any sampler of :data:`mediadiff.diffusion.SAMPLERS`, noise for
clip ``i`` from its own seeded generator, so a clip is the same alone or in a batch (up to float
rounding: batched matrix products sum in another order, which moves a rare pixel by one grey level).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from mediadiff.diffusion import PREDICTIONS, SAMPLERS, Schedule, build_schedule
from mediadiff.utils import cpu_bf16_supported

from .generate import sample_video

__all__ = [
    "DEFAULTS",
    "DEFAULT_MODEL",
    "IMAGE_EXTENSIONS",
    "PIPELINE_NAME",
    "SHIPPED_MODELS",
    "WEIGHTS_DIR",
    "VideoOutput",
    "VideoPipeline",
    "export_run",
    "output_extensions",
    "run_summary",
]

PIPELINE_NAME = "pipeline.json"
FORMAT = 1  # version of the folder layout; bumped when a reader of the old one would misread the new
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED_MODELS: dict[str, str] = {
    "shapes-dit": "t2v_shapes_dit",  # recipes/video/shapes_dit.py: latent DiT, 17x64x64
    "shapes-unet3d": "t2v_shapes_unet3d",  # recipes/video/shapes_unet3d.py: pixel UNet3D, 8x32x32
}
"""Name -> folder under ``mediadiff/weights/`` of the pipelines shipped inside the package."""
DEFAULT_MODEL = "shapes-dit"
"""The model ``mediadiff generate video`` uses without ``--model``."""

DEFAULTS: dict[str, Any] = {
    "num_frames": 17,
    "height": 64,
    "width": 64,
    "steps": 20,
    "sampler": "dpmpp_2m",
    "guidance_scale": 4.0,
    "fps": 8,
}
"""Fallback sampling settings; a pipeline's own ``defaults`` override them key by key."""

VIDEO_CHANNELS = 3  # RGB
CONTEXT_CACHE_SIZE = 256  # prompts whose text encoding a pipeline keeps
BACKBONES = {"DiT": "mediadiff.video.dit", "UNet3D": "mediadiff.video.unet3d"}  # type -> module
_TEXT_ENCODER_DIR = "text_encoder"
IMAGE_EXTENSIONS = (".png",)  # what VideoOutput.save writes as one still frame grid
_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def output_extensions() -> tuple[str, ...]:
    """Every extension :meth:`VideoOutput.save` accepts: the video formats of :mod:`mediadiff.video.io`
    (.mp4, .mov, .mkv, .webm, .gif) and :data:`IMAGE_EXTENSIONS`."""
    from .io import WRITE_FORMATS

    return (*WRITE_FORMATS, *IMAGE_EXTENSIONS)


# ----------------------------------------------------------------------------------------- output


@dataclass
class VideoOutput:
    """Generated clips: uint8 ``frames [b f h w 3]``; clip ``i`` came from ``prompts[i]``, ``seeds[i]``."""

    frames: np.ndarray  # [b f h w 3] uint8
    prompts: list[str]
    seeds: list[int]
    fps: float

    def __len__(self) -> int:
        return self.frames.shape[0]

    def save(self, path: str | os.PathLike) -> list[Path]:
        """Write the clips to ``path``; the extension picks the format. Returns the paths written.

        - ``.mp4``, ``.webm``, ``.gif`` (and ``.mov``, ``.mkv``): through
          :func:`mediadiff.video.io.write_video`. One clip is written to ``path`` itself; ``b > 1``
          clips go to one file each, ``stem-0.mp4``, ``stem-1.mp4``, ... beside ``path``.
        - ``.png``: one frame grid, one row per clip, frames left to right, 2-pixel grey gutters.

        Every file is written atomically (temporary name in the same folder, fsync, rename).
        """
        path = Path(path)
        ext = path.suffix.lower()
        if ext not in output_extensions():
            raise ValueError(
                f"{path}: cannot write {ext or 'a file without an extension'}; "
                f"supported: {', '.join(output_extensions())}"
            )
        if ext in IMAGE_EXTENSIONS:
            return [_write_grid(path, self.frames)]
        from .io import write_video

        if len(self) == 1:
            return [write_video(path, self.frames[0], self.fps)]
        return [
            write_video(path.with_name(f"{path.stem}-{i}{path.suffix}"), clip, self.fps)
            for i, clip in enumerate(self.frames)
        ]


def _write_grid(path: Path, frames: np.ndarray, gutter: int = 2) -> Path:
    """uint8 clips ``[b f h w 3]`` -> one PNG: row ``i`` holds clip ``i``'s frames left to right."""
    import imageio.v3 as iio

    from mediadiff.utils import atomic_write_bytes

    grey = 64
    cells = np.pad(
        frames, ((0, 0), (0, 0), (gutter, 0), (gutter, 0), (0, 0)), constant_values=grey
    )  # [b f g+h g+w 3]
    grid = rearrange(cells, "b f h w c -> (b h) (f w) c")  # [b*(g+h) f*(g+w) 3]
    grid = np.pad(grid, ((0, gutter), (0, gutter), (0, 0)), constant_values=grey)  # [b*(g+h)+g f*(g+w)+g 3]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, iio.imwrite("<bytes>", grid, extension=".png"))
    return path


# ----------------------------------------------------------------------------------------- pipeline


class VideoPipeline:
    """Text-to-video generation from a backbone, an autoencoder, a text encoder and a schedule.

    Args:
        backbone: ``backbone(x, t, context, context_mask) -> prediction`` over latents ``[b c f h w]``
            (a :class:`~mediadiff.nn.pretrained.ConfigModel`, so it can be saved).
        autoencoder: ``latent_shape``, ``decode`` (and ``save_pretrained``): a
            :class:`~mediadiff.video.autoencoder.CausalVideoVAE` or an ``IdentityAutoencoder``.
        text_encoder: ``encode(prompts) -> (tokens [b l d], mask [b l])``, e.g. a
            :class:`~mediadiff.text.encoder.TextEncoder`.
        schedule: the schedule the backbone was trained with (``to_config`` for saving).
        prediction: what the backbone predicts: ``eps | x0 | v | flow``.
        defaults: sampling settings (keys of :data:`DEFAULTS`); missing keys fall back to :data:`DEFAULTS`.
        text_encoder_ref: how a saved folder finds the text encoder again: ``"minilm"`` (the encoder
            bundled with mediadiff) or a local folder (copied into the saved pipeline). None: taken
            from the encoder's own folder (``text_encoder.path``) when it has one.
        info: free-form JSON-able dict saved with the pipeline (recipe, steps, training time, eval).

    ``autocast`` (attribute): bf16 autocast while sampling and decoding (True), fp32 (False), or
    None: bf16 on a CUDA device that supports it and on a CPU with native bf16 (AVX-512 BF16 / AMX),
    where it measured faster for the shipped models, else fp32.
    """

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
        if prediction not in PREDICTIONS:
            raise ValueError(f"VideoPipeline: unknown prediction {prediction!r}; known: {list(PREDICTIONS)}")
        unknown = sorted(set(defaults or {}) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"VideoPipeline: unknown defaults {unknown}; known: {sorted(DEFAULTS)}")
        self.backbone = backbone
        self.autoencoder = autoencoder
        self.text_encoder = text_encoder
        self.schedule = schedule
        self.prediction = prediction
        self.defaults: dict[str, Any] = {**DEFAULTS, **(defaults or {})}
        self.text_encoder_ref = None if text_encoder_ref is None else str(text_encoder_ref)
        self.info: dict[str, Any] = dict(info or {})
        self.autocast: bool | None = None
        self._contexts: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

        context_dim = getattr(getattr(backbone, "config", None), "context_dim", None)
        text_dim = getattr(text_encoder, "dim", None)
        if context_dim is not None and text_dim is not None and context_dim != text_dim:
            raise ValueError(
                f"VideoPipeline: the text encoder gives {text_dim}-d tokens but the backbone takes "
                f"context_dim={context_dim}"
            )
        d = self.defaults
        self.resolve(
            num_frames=d["num_frames"], height=d["height"], width=d["width"]
        )  # defaults must be valid
        if not (isinstance(d["fps"], (int, float)) and d["fps"] > 0):
            raise ValueError(f"VideoPipeline: defaults['fps'] must be > 0, got {d['fps']!r}")

    # ------------------------------------------------------------------------------------ device

    @property
    def device(self) -> torch.device:
        """Where the backbone (and so sampling) runs."""
        return next(self.backbone.parameters()).device

    def to(self, device: torch.device | str) -> VideoPipeline:
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
            return cpu_bf16_supported()
        return False

    # ------------------------------------------------------------------------------------ arguments

    def resolve(
        self,
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        guidance_scale: float | None = None,
    ) -> dict[str, Any]:
        """Fill unset sampling settings from ``defaults`` and check them; one clear ``ValueError`` each.

        Returns ``{"num_frames", "height", "width", "steps", "sampler", "guidance_scale"}``.
        """
        d = self.defaults
        s = {
            "num_frames": d["num_frames"] if num_frames is None else num_frames,
            "height": d["height"] if height is None else height,
            "width": d["width"] if width is None else width,
            "steps": d["steps"] if steps is None else steps,
            "sampler": d["sampler"] if sampler is None else sampler,
            "guidance_scale": d["guidance_scale"] if guidance_scale is None else guidance_scale,
        }
        for name in ("num_frames", "height", "width", "steps"):
            value = s[name]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"VideoPipeline: {name} must be a positive integer, got {value!r}")
            s[name] = int(value)
        if s["sampler"] not in SAMPLERS:
            raise ValueError(
                f"VideoPipeline: unknown sampler {s['sampler']!r}; choose from {sorted(SAMPLERS)}"
            )
        g = s["guidance_scale"]
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not np.isfinite(g) or g < 0:
            raise ValueError(f"VideoPipeline: guidance_scale must be a finite number >= 0, got {g!r}")
        s["guidance_scale"] = float(g)
        self._check_size(s["num_frames"], s["height"], s["width"])
        return s

    def _check_size(self, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """The latent shape ``(c, f', h', w')`` of a clip, or a ValueError saying what would suit."""
        try:
            latent = self.autoencoder.latent_shape((1, VIDEO_CHANNELS, num_frames, height, width))[1:]
        except ValueError as err:
            raise ValueError(
                f"VideoPipeline: {num_frames} frames of {height}x{width} do not suit the autoencoder: {err}"
            ) from None
        multiples = _backbone_multiples(self.backbone)
        name = type(self.backbone).__name__
        for axis, size, lat, m in zip(
            ("num_frames", "height", "width"), (num_frames, height, width), latent[1:], multiples
        ):
            if lat < 1 or lat % m:
                ratio = size // max(lat, 1) if axis != "num_frames" else None
                hint = f"; use a {axis} that is a multiple of {ratio * m}" if ratio else ""
                raise ValueError(
                    f"VideoPipeline: {axis}={size} gives {lat} latent {axis.replace('num_', '')}, "
                    f"but the {name} needs a positive multiple of {m}{hint}"
                )
        return tuple(latent)

    # ------------------------------------------------------------------------------------ text

    def _encode_one(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [l d], mask [l])`` of one prompt, encoded alone (so independent of any batch), cached."""
        hit = self._contexts.get(prompt)
        if hit is not None:
            self._contexts.move_to_end(prompt)
            return hit
        from mediadiff.text.context import pack_context

        tokens, mask = pack_context(*self.text_encoder.encode([prompt]))  # [1 l d], [1 l]
        entry = (tokens[0].to(self.device), mask[0].to(self.device))  # [l d], [l]
        self._contexts[prompt] = entry
        if len(self._contexts) > CONTEXT_CACHE_SIZE:
            self._contexts.popitem(last=False)
        return entry

    def encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Backbone kwargs for ``prompts``: ``{"context": [b l d], "context_mask": [b l]}`` on the device.

        Each distinct prompt is encoded once, alone, and kept (the last :data:`CONTEXT_CACHE_SIZE`
        prompts, the unconditional ``""`` among them), so repeated prompts cost no text-encoder time.
        """
        from mediadiff.text.context import pad_context

        parts = [self._encode_one(p) for p in prompts]
        tokens, mask = pad_context([t for t, _ in parts], [m for _, m in parts])  # [b l d], [b l]
        return {"context": tokens, "context_mask": mask}

    def clear_cache(self) -> None:
        """Forget the cached text encodings."""
        self._contexts.clear()

    # ------------------------------------------------------------------------------------ generate

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        guidance_scale: float | None = None,
        seed: int | None = None,
        num_videos: int = 1,
        progress: bool = False,
    ) -> VideoOutput:
        """Generate ``num_videos`` clips per prompt.

        prompt: one prompt or a list; clip ``i`` of the output comes from prompt ``i // num_videos``.
        negative_prompt: replaces the empty prompt as the unconditional context (one for all, or one
            per prompt).
        num_frames, height, width, steps, sampler, guidance_scale: None takes ``self.defaults``.
        seed: clip ``i`` starts from noise seeded with ``seed + i`` (None: a random seed, reported in
            ``VideoOutput.seeds``); the same seed gives the same clip (up to float rounding) whether
            generated alone or in a batch.
        progress: a tqdm bar over the sampling steps.
        Returns a :class:`VideoOutput` with uint8 ``frames [b f h w 3]``, ``b = len(prompts) * num_videos``.
        """
        prompts = _as_prompts(prompt, "prompt")
        settings = self.resolve(
            num_frames=num_frames,
            height=height,
            width=width,
            steps=steps,
            sampler=sampler,
            guidance_scale=guidance_scale,
        )
        if isinstance(num_videos, bool) or not isinstance(num_videos, int) or num_videos < 1:
            raise ValueError(f"VideoPipeline: num_videos must be a positive integer, got {num_videos!r}")
        if negative_prompt is None:
            negatives = None
        else:
            negatives = _as_prompts(negative_prompt, "negative_prompt", allow_empty=True)
            if len(negatives) == 1:
                negatives = negatives * len(prompts)
            if len(negatives) != len(prompts):
                raise ValueError(
                    f"VideoPipeline: {len(prompts)} prompts but {len(negatives)} negative prompts "
                    "(give one negative prompt, or one per prompt)"
                )
        if seed is None:
            seed = secrets.randbelow(2**31)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"VideoPipeline: seed must be a non-negative integer, got {seed!r}")

        clip_prompts = [p for p in prompts for _ in range(num_videos)]
        seeds = [int(seed) + i for i in range(len(clip_prompts))]
        cond = self.encode(clip_prompts)  # [b l d], [b l]
        if negatives is None:
            uncond = self.encode([""])  # [1 l d], [1 l]: one unconditional context for every clip
        else:
            uncond = self.encode([n for n in negatives for _ in range(num_videos)])  # [b l d], [b l]
        frames = sample_video(
            self.backbone,
            self.schedule,
            self.autoencoder,
            cond,
            uncond,
            num_frames=settings["num_frames"],
            height=settings["height"],
            width=settings["width"],
            seeds=seeds,
            prediction=self.prediction,
            sampler=settings["sampler"],
            steps=settings["steps"],
            guidance_scale=settings["guidance_scale"],
            device=self.device,
            autocast=self.use_bf16(),
            progress=progress,
        )  # [b f h w 3]
        return VideoOutput(frames.numpy(), clip_prompts, seeds, float(self.defaults["fps"]))

    # ------------------------------------------------------------------------------------ save / load

    def save_pretrained(self, folder: str | os.PathLike, dtype: str | torch.dtype | None = None) -> Path:
        """Write the pipeline to ``folder`` (see the module docstring for the layout); returns it.

        The folder is built under a temporary sibling name, fsynced and renamed into place, so
        ``folder`` is never half-written (an older ``folder`` is replaced whole). ``dtype``
        (``"float16"``, ``"bfloat16"`` or None for float32) is the storage type of the backbone
        weights; loading always gives float32 modules. The autoencoder keeps its own precision.
        """
        from mediadiff.utils import atomic_write_text, publish_dir

        folder = Path(folder).expanduser()
        storage = _storage_dtype(dtype)
        ref, source = self._text_encoder_source()
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            backbone = self.backbone
            if storage != torch.float32:
                backbone = copy.deepcopy(backbone).to(device="cpu", dtype=storage)
            backbone.save_pretrained(tmp / "backbone")
            self.autoencoder.save_pretrained(tmp / "autoencoder")
            if source is not None:
                _copy_text_encoder(source, tmp / _TEXT_ENCODER_DIR)
            spec = {
                "type": "VideoPipeline",
                "format": FORMAT,
                "prediction": self.prediction,
                "schedule": self.schedule.to_config(),
                "text_encoder": ref,
                "defaults": self.defaults,
                "info": self.info,
            }
            atomic_write_text(tmp / PIPELINE_NAME, json.dumps(spec, indent=2) + "\n")
            publish_dir(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    def _text_encoder_source(self) -> tuple[str, Path | None]:
        """``(reference stored in pipeline.json, folder to copy or None)`` for the text encoder."""
        from mediadiff.text import default_encoder_path

        own = getattr(self.text_encoder, "path", None)
        own = Path(own).resolve() if own is not None else None
        ref = self.text_encoder_ref
        if ref is None:
            if own is None:
                raise ValueError(
                    f"VideoPipeline.save_pretrained: the text encoder ({type(self.text_encoder).__name__}) "
                    "has no folder, so a saved pipeline could not rebuild it; use a TextEncoder "
                    "(mediadiff.text.load_text_encoder) or pass text_encoder_ref"
                )
            ref = "minilm" if own == default_encoder_path().resolve() else str(own)
        if ref in ("minilm", "all-MiniLM-L6-v2"):
            if own is not None and own != default_encoder_path().resolve():
                raise ValueError(
                    f"VideoPipeline.save_pretrained: text_encoder_ref is 'minilm' but the text encoder "
                    f"was loaded from {own}"
                )
            return "minilm", None
        source = Path(ref).expanduser().resolve()
        if not (source / "config.json").is_file():
            raise ValueError(
                f"VideoPipeline.save_pretrained: text_encoder_ref {ref!r} is neither 'minilm' nor a local "
                "text-encoder folder (with config.json)"
            )
        if own is not None and own != source:
            raise ValueError(
                f"VideoPipeline.save_pretrained: text_encoder_ref is {source} but the text encoder was "
                f"loaded from {own}"
            )
        return _TEXT_ENCODER_DIR, source

    @classmethod
    def from_pretrained(
        cls, name_or_folder: str | os.PathLike | None = None, device: torch.device | str = "cpu"
    ) -> VideoPipeline:
        """Load a pipeline folder, or a model shipped in the package by name (:data:`SHIPPED_MODELS`;
        None: :data:`DEFAULT_MODEL`).

        Modules load in float32, frozen (``requires_grad_(False)``) and in eval mode, on ``device``.
        Raises ``FileNotFoundError`` naming the shipped models for an unknown name or a missing folder.
        """
        folder = resolve_model(DEFAULT_MODEL if name_or_folder is None else name_or_folder)
        spec_path = folder / PIPELINE_NAME
        try:
            spec = json.loads(spec_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{spec_path}: not valid JSON ({err})") from None
        if not isinstance(spec, dict) or spec.get("type") != "VideoPipeline":
            raise ValueError(f"{spec_path}: not a VideoPipeline (type {spec.get('type')!r})")
        if spec.get("format") != FORMAT:
            raise ValueError(
                f"{spec_path}: folder format {spec.get('format')!r}; this mediadiff reads format {FORMAT}"
            )
        missing = [k for k in ("prediction", "schedule", "text_encoder") if k not in spec]
        if missing:
            raise ValueError(f"{spec_path}: missing {missing}")
        device = torch.device(device)
        backbone = _load_backbone(folder / "backbone", device)
        from .autoencoder import load_autoencoder

        autoencoder = load_autoencoder(folder / "autoencoder", device=device)
        autoencoder.eval().requires_grad_(False)
        from mediadiff.text import load_text_encoder

        ref = spec["text_encoder"]
        if ref == _TEXT_ENCODER_DIR:
            text_encoder = load_text_encoder(folder / _TEXT_ENCODER_DIR, device=device)
        elif ref == "minilm":
            text_encoder = load_text_encoder("minilm", device=device)
        else:
            raise ValueError(
                f"{spec_path}: text_encoder must be 'minilm' or {_TEXT_ENCODER_DIR!r}, got {ref!r}"
            )
        return cls(
            backbone,
            autoencoder,
            text_encoder,
            build_schedule(spec["schedule"]),
            prediction=spec["prediction"],
            defaults=spec.get("defaults"),
            text_encoder_ref=ref if ref == "minilm" else None,
            info=spec.get("info"),
        )

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.backbone.parameters())
        return (
            f"VideoPipeline(backbone={type(self.backbone).__name__} {n / 1e6:.2f}M, "
            f"autoencoder={type(self.autoencoder).__name__}, schedule={self.schedule!r}, "
            f"prediction={self.prediction!r}, defaults={self.defaults})"
        )


# ----------------------------------------------------------------------------------------- helpers


def installed_models() -> list[str]:
    """Names of :data:`SHIPPED_MODELS` whose folders are present in this installation."""
    return [name for name, sub in SHIPPED_MODELS.items() if (WEIGHTS_DIR / sub / PIPELINE_NAME).is_file()]


def resolve_model(name_or_folder: str | os.PathLike) -> Path:
    """The pipeline folder of a shipped model name or a folder path; ``FileNotFoundError`` if none."""
    name = str(name_or_folder)
    shipped = f"shipped: {installed_models() or 'none installed'}"
    if name in SHIPPED_MODELS:
        folder = WEIGHTS_DIR / SHIPPED_MODELS[name]
        if not (folder / PIPELINE_NAME).is_file():
            raise FileNotFoundError(
                f"model {name!r} is not installed ({folder / PIPELINE_NAME} missing); {shipped}; "
                "or give a folder written by VideoPipeline.save_pretrained"
            )
        return folder
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / PIPELINE_NAME).is_file():
            raise FileNotFoundError(
                f"{folder} is not a pipeline folder (no {PIPELINE_NAME}); give a folder written by "
                f"VideoPipeline.save_pretrained, or a shipped model: {sorted(SHIPPED_MODELS)}"
            )
        return folder
    raise FileNotFoundError(
        f"model {name!r} not found: neither a shipped model ({shipped}) nor a folder; "
        "give a folder written by VideoPipeline.save_pretrained"
    )


def _as_prompts(value: Any, name: str, allow_empty: bool = False) -> list[str]:
    """A prompt or a list of prompts as a non-empty list of strings."""
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(
            f"VideoPipeline: {name} must be a string or a non-empty list of strings, got {value!r}"
        )
    if not allow_empty and not all(p.strip() for p in prompts):
        raise ValueError(
            f"VideoPipeline: {name} must not be empty (the empty prompt is the unconditional one)"
        )
    return list(prompts)


def _backbone_multiples(backbone: torch.nn.Module) -> tuple[int, int, int]:
    """What latent ``(f, h, w)`` must be multiples of: a DiT's ``config.patch``, a U-Net's
    ``downsample_factor`` in space; other backbones check their own input."""
    patch = getattr(getattr(backbone, "config", None), "patch", None)
    if patch is not None:
        return tuple(int(p) for p in patch)
    k = getattr(backbone, "downsample_factor", None)
    if k is not None:
        return (1, int(k), int(k))
    return (1, 1, 1)


def _storage_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in _STORAGE_DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _STORAGE_DTYPES:
        return _STORAGE_DTYPES[dtype]
    raise ValueError(
        f"VideoPipeline.save_pretrained: dtype must be one of {list(_STORAGE_DTYPES)} or None, got {dtype!r}"
    )


def _copy_text_encoder(source: Path, target: Path) -> None:
    """Copy the files a text encoder loads from (top-level config, tokenizer and weight files)."""
    target.mkdir()
    for p in sorted(source.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in (".md", ".lock"):
            shutil.copy2(p, target / p.name)


def _load_backbone(folder: Path, device: torch.device) -> torch.nn.Module:
    """Rebuild the backbone a ``backbone/`` folder names, float32, frozen, in eval mode."""
    import importlib

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing; the pipeline folder has no backbone")
    kind = json.loads(config_path.read_text()).get("type")
    if kind not in BACKBONES:
        raise ValueError(f"{config_path}: unknown backbone type {kind!r}; known: {sorted(BACKBONES)}")
    cls = getattr(importlib.import_module(BACKBONES[kind]), kind)
    model = cls.from_pretrained(folder, device=device).float()
    return model.eval().requires_grad_(False)


def run_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What a training run folder says about itself: its config, steps, last loss and training time.

    ``train_minutes`` adds up the run's sessions: each from a ``start`` event of the trainer (after
    any cache build) to the last record before the next start (a resumed run has several).
    """
    run = Path(run_dir)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r and "event" not in r]
    evals = [r for r in records if r.get("event") == "samples" and "direction_acc" in r]
    seconds, begin, last = 0.0, None, None
    for r in records:
        if r.get("event") == "start":
            if begin is not None:
                seconds += last - begin
            begin = r["time"]
        last = r.get("time", last)
    if begin is not None:
        seconds += last - begin
    summary: dict[str, Any] = {
        "run_dir": str(run),
        "steps": max((r.get("step", 0) for r in records), default=0),
        "last_loss": steps[-1]["loss"] if steps else None,
        "train_minutes": round(seconds / 60, 1) if begin is not None else None,
        "sessions": sum(r.get("event") == "start" for r in records),
        "periodic_eval": [
            {k: r[k] for k in ("step", "colour_acc", "shape_acc", "direction_acc", "all_acc") if k in r}
            for r in evals
        ],
    }
    config = run / "config.json"
    if config.is_file():
        summary["config"] = json.loads(config.read_text())
    return summary


def export_run(
    run_dir: str | os.PathLike,
    folder: str | os.PathLike,
    backbone: torch.nn.Module,
    autoencoder: torch.nn.Module,
    text_encoder: Any,
    schedule: Schedule,
    *,
    prediction: str = "flow",
    defaults: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    dtype: str | None = "float16",
) -> Path:
    """Write the newest checkpoint of a training run (its EMA weights) as a pipeline folder.

    ``backbone`` must be built as the recipe built it; its weights are replaced by the checkpoint's
    (the EMA's when the run kept one). The folder's ``info`` holds
    :func:`run_summary` (steps, training time, periodic evaluation) merged with ``info``.
    """
    from mediadiff.train.checkpoint import load_model_weights, read_state

    weights = load_model_weights(run_dir, backbone, ema=True)  # the checkpoint's ema.safetensors if any
    summary = {
        **run_summary(run_dir),
        "checkpoint": str(weights.parent),
        "weights": weights.name,
        **(info or {}),
    }
    summary["steps"] = read_state(weights.parent)["step"]  # the checkpoint's, not the log's last line
    pipe = VideoPipeline(
        backbone.eval().requires_grad_(False),
        autoencoder.eval().requires_grad_(False),
        text_encoder,
        schedule,
        prediction=prediction,
        defaults=defaults,
        info=summary,
    )
    return pipe.save_pretrained(folder, dtype=dtype)
