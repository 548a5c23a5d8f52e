"""Text-to-video pipeline: what video adds to :class:`~mediadiff.pipelines.base.DiffusionPipeline`.

:class:`VideoPipeline` supplies video's own parts only: the size settings ``num_frames, height,
width`` and their latent shape, decoding latents to uint8 frames, :class:`VideoOutput` and its file
formats, the video backbones and autoencoders of a saved folder, and the shipped text-to-video
models::

    pipe = VideoPipeline.from_pretrained("shapes-dit")
    out = pipe("a yellow triangle moving up", seed=0)
    out.save("triangle.mp4")                    # out.frames: uint8 [b f h w 3]

The folder layout, prompt cache, seeds, guidance and sampling are the base class's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from einops import rearrange

from mediadiff.utils import atomic_write_bytes

from .base import DiffusionPipeline, item_paths, output_path

__all__ = ["IMAGE_EXTENSIONS", "VideoOutput", "VideoPipeline", "output_extensions", "parse_size"]

VIDEO_CHANNELS = 3  # RGB
IMAGE_EXTENSIONS = (".png",)  # what VideoOutput.save writes as one still frame grid


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (or ``"S"`` for a square) -> ``(height, width)``; raises ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise ValueError(
            f"--size must be HEIGHTxWIDTH in pixels (e.g. 64x64) or one number for a square, got {text!r}"
        )
    h = int(m.group(1))
    return h, int(m.group(2)) if m.group(2) is not None else h


def output_extensions() -> tuple[str, ...]:
    """Every extension :meth:`VideoOutput.save` accepts: the video formats of :mod:`mediadiff.video.io`
    (.mp4, .mov, .mkv, .webm, .gif) and :data:`IMAGE_EXTENSIONS`."""
    from mediadiff.video.io import WRITE_FORMATS

    return (*WRITE_FORMATS, *IMAGE_EXTENSIONS)


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
        path, ext = output_path(path, output_extensions())
        if ext in IMAGE_EXTENSIONS:
            return [_write_grid(path, self.frames)]
        from mediadiff.video.io import write_video

        return [write_video(p, clip, self.fps) for p, clip in zip(item_paths(path, len(self)), self.frames)]


def _write_grid(path: Path, frames: np.ndarray, gutter: int = 2) -> Path:
    """uint8 clips ``[b f h w 3]`` -> one PNG: row ``i`` holds clip ``i``'s frames left to right."""
    import imageio.v3 as iio

    grey = 64
    cells = np.pad(
        frames, ((0, 0), (0, 0), (gutter, 0), (gutter, 0), (0, 0)), constant_values=grey
    )  # [b f g+h g+w 3]
    grid = rearrange(cells, "b f h w c -> (b h) (f w) c")  # [b*(g+h) f*(g+w) 3]
    grid = np.pad(grid, ((0, gutter), (0, gutter), (0, 0)), constant_values=grey)  # [b*(g+h)+g f*(g+w)+g 3]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, iio.imwrite("<bytes>", grid, extension=".png"))
    return path


class VideoPipeline(DiffusionPipeline):
    """Text-to-video generation from a backbone over latents ``[b c f h w]`` (a
    :class:`~mediadiff.video.dit.DiT` or :class:`~mediadiff.video.unet3d.UNet3D`), a video
    autoencoder (:class:`~mediadiff.video.autoencoder.CausalVideoVAE` or ``IdentityAutoencoder``), a
    text encoder and a schedule. Arguments and attributes are :class:`DiffusionPipeline`'s; ``defaults``
    also take ``num_frames``, ``height``, ``width`` and ``fps``.
    """

    modality: ClassVar[str] = "video"
    SIZE_DEFAULTS: ClassVar[dict[str, int]] = {"num_frames": 17, "height": 64, "width": 64}
    EXTRA_DEFAULTS: ClassVar[dict[str, Any]] = {"fps": 8}
    BACKBONES: ClassVar[dict[str, str]] = {"DiT": "mediadiff.video.dit", "UNet3D": "mediadiff.video.unet3d"}
    SHIPPED_MODELS: ClassVar[dict[str, str]] = {
        "shapes-dit": "t2v_shapes_dit",  # recipes/video/shapes_dit.py: latent DiT, 17x64x64
        "shapes-unet3d": "t2v_shapes_unet3d",  # recipes/video/shapes_unet3d.py: pixel UNet3D, 8x32x32
    }
    SHIPPED_LORAS: ClassVar[dict[str, str]] = {
        # recipes/video/shapes_dit.py --init-from shapes-dit --lora-rank 16 --colours all: orange and white
        "shapes-dit-colours": "lora/shapes_dit_colours.safetensors",
    }
    DEFAULT_MODEL: ClassVar[str] = "shapes-dit"
    ITEM: ClassVar[str] = "clip"
    MASK_UNITS: ClassVar[str] = "frames"  # what an inpainting mask (start, end) counts
    EXAMPLE_PROMPT: ClassVar[str] = "a yellow triangle moving up"
    CLI_DESCRIPTION: ClassVar[str] = (
        "Generate clips for a prompt and write them (.mp4, .webm, .gif, .mov, .mkv, or .png for a frame grid; "
        "with --num N > 1, one file per clip: NAME-0.mp4, NAME-1.mp4, ...)."
    )
    EVAL_MODULE: ClassVar[str] = "mediadiff.video.evaluate"
    EVAL_DESCRIPTION: ClassVar[str] = "prompt-following accuracy and Frechet distance on Shapes"

    def check_defaults(self, defaults: dict[str, Any]) -> None:
        fps = defaults["fps"]
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
            raise ValueError(f"VideoPipeline: defaults['fps'] must be > 0, got {fps!r}")

    def latent_shape(self, settings: dict[str, Any]) -> tuple[int, ...]:
        """The latent ``(c, f', h', w')`` of a clip of ``num_frames x height x width``, or a ValueError
        saying what would suit the autoencoder and the backbone."""
        num_frames, height, width = settings["num_frames"], settings["height"], settings["width"]
        try:
            latent = self.autoencoder.latent_shape((1, VIDEO_CHANNELS, num_frames, height, width))[1:]
        except ValueError as err:
            raise ValueError(
                f"VideoPipeline: {num_frames} frames of {height}x{width} do not suit the autoencoder: {err}"
            ) from None
        self.check_latent(latent, ("num_frames", "height", "width"), (num_frames, height, width))
        return tuple(latent)

    def decode(
        self, z: torch.Tensor, settings: dict[str, Any], prompts: list[str], seeds: list[int]
    ) -> VideoOutput:
        from mediadiff.video.io import to_uint8

        video = self.decode_latents(z)  # [b 3 f h w], item by item on a CPU
        frames = to_uint8(video)  # [b f h w 3]
        return VideoOutput(frames.numpy(), prompts, seeds, float(self.defaults["fps"]))

    @classmethod
    def output_extensions(cls) -> tuple[str, ...]:
        return output_extensions()

    @classmethod
    def add_cli_arguments(cls, parser: Any) -> None:
        parser.add_argument(
            "--num-frames", type=int, default=None, help="frames per clip (default: the model's)"
        )
        parser.add_argument(
            "--size", default=None, help="HEIGHTxWIDTH in pixels, e.g. 64x64 (default: the model's)"
        )

    @classmethod
    def cli_settings(cls, args: Any) -> dict[str, Any]:
        if args.num_frames is not None and args.num_frames < 1:
            raise ValueError(f"--num-frames must be >= 1, got {args.num_frames}")
        height, width = parse_size(args.size) if args.size is not None else (None, None)
        return {"num_frames": args.num_frames, "height": height, "width": width}

    def describe(self, settings: dict[str, Any]) -> str:
        fps = float(self.defaults["fps"])
        return f"{settings['num_frames']} frames {settings['height']}x{settings['width']} at {fps:g} fps"

    # ------------------------------------------------------------------------------------ editing

    LATENT_TIME_AXIS: ClassVar[int] = -3  # f of a latent [c f h w]

    @property
    def temporal_ratio(self) -> int:
        """Frames per latent frame after the first (the causal autoencoder's ``temporal_ratio``; 1 in pixels)."""
        return int(getattr(getattr(self.autoencoder, "config", None), "temporal_ratio", 1))

    def read_input(self, source: Any, mode: str) -> torch.Tensor:
        """A video file (any format :func:`~mediadiff.video.io.read_video` reads), uint8 frames
        ``[f h w 3]`` or float ``[3 f h w]`` in [-1, 1] -> float ``[3 f h w]`` in [-1, 1]."""
        from mediadiff.video.io import read_video, to_model

        frames = read_video(source) if isinstance(source, (str, os.PathLike)) else source  # [f h w 3]
        x = torch.as_tensor(np.asarray(frames) if isinstance(frames, np.ndarray) else frames)
        if x.dtype == torch.uint8 and x.ndim == 4 and x.shape[-1] == VIDEO_CHANNELS:
            return to_model(x)  # [3 f h w]
        if x.is_floating_point() and x.ndim == 4 and x.shape[0] == VIDEO_CHANNELS:
            return x.float().clamp(-1, 1)  # [3 f h w]
        raise ValueError(
            f"VideoPipeline: {mode} must be a video file, uint8 frames [f h w 3] or float [3 f h w] in [-1, 1]; "
            f"got {x.dtype} {tuple(x.shape)}"
        )

    def _fit_frames(self, n: int, height: int, width: int, whole: bool, what: str) -> int:
        """The largest frame count ``<= n`` that the autoencoder takes (``whole``: that the backbone takes
        too, as a whole output), or a ValueError naming ``what``."""
        for m in range(n, 0, -1):
            try:
                if whole:
                    self.latent_shape({"num_frames": m, "height": height, "width": width})
                else:
                    self.autoencoder.latent_shape((1, VIDEO_CHANNELS, m, height, width))
                return m
            except ValueError:
                continue
        raise ValueError(f"VideoPipeline: {what} has {n} frames, fewer than any length the model takes")

    def edit_sizes(self, signal: torch.Tensor, mode: str, settings: dict[str, Any]) -> dict[str, Any]:
        """The output takes the model's (or the given) height and width, the input resized to them.
        ``init`` / ``inpaint``: the input's frames (the first ``num_frames`` when given), cut to the
        longest length the model takes; ``extend``: ``num_frames`` in all, or the kept frames plus the
        model's default, cut the same way."""
        s = dict(settings)
        height = s.get("height") or self.defaults["height"]
        width = s.get("width") or self.defaults["width"]
        n_in = signal.shape[1]
        if mode == "extend":
            kept = self._fit_frames(n_in, height, width, False, f"the {mode} clip")
            total = s.get("num_frames") or kept + self.defaults["num_frames"]
            s["num_frames"] = (
                total if s.get("num_frames") else self._fit_frames(total, height, width, True, "it")
            )
        elif s.get("num_frames") is None:
            s["num_frames"] = self._fit_frames(n_in, height, width, True, f"the {mode} clip")
        elif s["num_frames"] > n_in:
            raise ValueError(
                f"VideoPipeline: num_frames={s['num_frames']} but the {mode} clip has {n_in} frames"
            )
        return s

    def fit_input(self, signal: torch.Tensor, settings: dict[str, Any], mode: str) -> torch.Tensor:
        """The first frames of ``signal`` (``extend``: the longest run the autoencoder takes), resized
        (bilinear, antialiased; the aspect ratio is not kept) to the output's height and width."""
        height, width = settings["height"], settings["width"]
        if mode == "extend":
            n = self._fit_frames(signal.shape[1], height, width, False, f"the {mode} clip")
        else:
            n = settings["num_frames"]
        x = signal[:, :n]  # [3 n h0 w0]
        if tuple(x.shape[2:]) != (height, width):
            x = torch.nn.functional.interpolate(
                x.transpose(0, 1), size=(height, width), mode="bilinear", antialias=True, align_corners=False
            ).transpose(0, 1)  # [3 n h w]
        return x.contiguous()

    def latent_span(self, mask: tuple[float, float], settings: dict[str, Any]) -> tuple[int, int]:
        """Frames ``[start, end)`` -> the latent frames that hold them: frame 0 is latent frame 0, frame
        ``j >= 1`` latent frame ``1 + (j - 1) // temporal_ratio`` (the causal autoencoder's grouping)."""
        n = settings["num_frames"]
        start, end = mask
        ints = all(
            isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer()) for v in mask
        )
        if not ints or not 0 <= start < end <= n:
            raise ValueError(
                f"VideoPipeline: mask must be frames (start, end) with 0 <= start < end <= {n}, got {mask}"
            )
        rt = self.temporal_ratio

        def latent(j: int) -> int:
            return 0 if j == 0 else 1 + (j - 1) // rt

        return latent(int(start)), latent(int(end) - 1) + 1

    @classmethod
    def load_autoencoder(cls, folder: Path, device: torch.device) -> torch.nn.Module:
        from mediadiff.video.autoencoder import load_autoencoder

        return load_autoencoder(folder, device=device)

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
        guidance_rescale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        init: str | os.PathLike | np.ndarray | torch.Tensor | None = None,
        strength: float | None = None,
        extend: str | os.PathLike | np.ndarray | torch.Tensor | None = None,
        inpaint: str | os.PathLike | np.ndarray | torch.Tensor | None = None,
        mask: tuple[int, int] | None = None,
    ) -> VideoOutput:
        """Generate ``num_videos`` clips per prompt, from text alone or by editing a clip.

        prompt: one prompt or a list; clip ``i`` of the output comes from prompt ``i // num_videos``.
        negative_prompt: replaces the empty prompt as the unconditional context (one for all, or one
            per prompt).
        num_frames, height, width, steps, sampler, guidance_scale, guidance_rescale (Lin et al. 2023),
            guidance_interval (``(t_lo, t_hi)``, Kynkaanniemi et al. 2024): None takes ``self.defaults``.
        seed: clip ``i`` starts from noise seeded with ``seed + i`` (None: a random seed, reported in
            ``VideoOutput.seeds``); the same seed gives the same clip whether generated alone or in a
            batch: bit for bit on a CPU (``micro_batch`` "auto"), to float rounding on CUDA.
        progress: a tqdm bar over the sampling steps.
        init, strength: video-to-video (SDEdit, Meng et al. 2022): the clip (a file, uint8 ``[f h w 3]``)
            encoded, noised to the level ``strength`` (default 0.8) picks on the sampler's grid, and
            sampled from there; 0 returns its round trip through the autoencoder, 1 ignores it.
        extend: continuation: the clip's frames are kept (in latent space, at every step) and what follows
            is generated; ``num_frames`` is the whole output (default: the clip's plus the model's length).
        inpaint, mask: regenerate frames ``[start, end)`` of the clip and keep the rest.
        The input is resized to ``height x width`` and cut to a frame count the model takes (1 + 4k for
        the causal autoencoder); see :meth:`~mediadiff.pipelines.base.DiffusionPipeline.prepare_edit`.
        Returns a :class:`VideoOutput` with uint8 ``frames [b f h w 3]``, ``b = len(prompts) * num_videos``.
        """
        return self.generate(
            prompt,
            negative_prompt,
            seed=seed,
            num_per_prompt=num_videos,
            count_name="num_videos",
            progress=progress,
            num_frames=num_frames,
            height=height,
            width=width,
            steps=steps,
            sampler=sampler,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            guidance_interval=guidance_interval,
            init=init,
            strength=strength,
            extend=extend,
            inpaint=inpaint,
            mask=mask,
        )
