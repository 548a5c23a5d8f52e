"""Generation benchmark: seconds per clip, and how much of it the backbone and the autoencoder take.

    python benchmarks/generate.py                             # random pipelines of the shipped sizes
    python benchmarks/generate.py --model shapes-dit          # a shipped model (or a pipeline folder)
    python benchmarks/generate.py --threads 1 --repeats 5 --device cuda
    python benchmarks/generate.py --modality audio            # random tones-dit; --model tones-dit for the shipped one

One clip per call of the modality's pipeline (:class:`~mediadiff.pipelines.video.VideoPipeline` or
:class:`~mediadiff.pipelines.audio.AudioPipeline`; 20-step ``dpmpp_2m`` with
classifier-free guidance by default, so the backbone sees a batch of 2 per step), with fp32 and with
bf16 autocast. Each row is the median of ``--repeats`` timed calls after one warm-up call. Every timed
call uses a new prompt and an empty text cache, so it pays for encoding the prompt and the empty
prompt, as a fresh ``mediadiff generate`` does.

Columns: ``backbone`` is the time inside the backbone's ``forward`` (forward hooks), ``autoencoder`` the
time inside ``autoencoder.decode``, ``text`` the time inside ``text_encoder.encode``, ``other`` the rest
(sampler arithmetic, guidance, noise, frame or waveform conversion, argument checks). ``outside`` = (total -
backbone - autoencoder) / total: the issue's target is at most 5%. CUDA runs synchronise before each
clock read.

Without ``--model`` it builds, randomly initialised, the two shipped architectures (see
``recipes/video/shapes_dit.py`` and ``recipes/video/shapes_unet3d.py``):

- ``dit``: DiT width 128, depth 6, 4 heads, patch 1x2x2 on the shipped Shapes video VAE, 17x64x64
  clips (8x5x16x16 latents, 320 tokens);
- ``unet3d``: UNet3D channels 32, mult (1, 2, 2), one residual block per level, spatial + cross
  attention at the last level, temporal attention at levels 1-2, head dim 32, 8 norm groups, MLP
  ratio 2, in pixel space (identity autoencoder), 8x32x32 clips;

and for ``--modality audio`` (``recipes/audio/tones_latent.py``):

- ``tones-dit``: DiT1D width 128, depth 6, 4 heads, patch 2, a 768-wide text adapter, on the shipped
  Tones waveform VAE, 16384-sample clips (16x64 latents, 32 tokens);

all with the bundled all-MiniLM-L6-v2 text encoder. Speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch

from mediadiff.diffusion import FlowSchedule
from mediadiff.pipelines import AudioPipeline, DiffusionPipeline, VideoPipeline, pipeline_class
from mediadiff.text import load_text_encoder
from mediadiff.video import SHAPES_VAE_DIR, DiT, IdentityAutoencoder, UNet3D, load_autoencoder

AUDIO_PROMPTS = [
    "a square wave playing E4",
    "a sine tone at C4, rising",
    "a falling sawtooth starting on G3",
    "a triangle note on A4, holding steady",
    "synth square at C5 gliding down",
    "a sinusoidal tone at F#3",
    "one saw note from D4, gliding up",
    "a steady triangular wave from B3",
]

PROMPTS = [
    "a yellow triangle moving up",
    "a red circle moving right",
    "a blue square moving down",
    "a green triangle moving left",
    "a white circle moving up",
    "a red square moving left",
    "a blue circle moving right",
    "a yellow square moving down",
]


def random_pipeline(name: str, device: torch.device) -> DiffusionPipeline:
    """A randomly initialised pipeline with the architecture of a shipped model (``dit``, ``unet3d`` or
    ``tones-dit``)."""
    torch.manual_seed(0)
    text = load_text_encoder("minilm", device=device)
    pipeline_cls = VideoPipeline
    if name == "tones-dit":
        from mediadiff.audio import TONES_VAE_DIR, DiT1D
        from mediadiff.audio import load_autoencoder as load_audio_autoencoder

        pipeline_cls = AudioPipeline
        vae = load_audio_autoencoder(TONES_VAE_DIR, device=device)
        backbone = DiT1D(
            in_channels=16, patch=(2,), width=128, depth=6, heads=4, context_dim=text.dim,
            context_adapter_hidden=768,
        )  # fmt: skip
        defaults = {"num_samples": 16384}
    elif name == "dit":
        vae = load_autoencoder(SHAPES_VAE_DIR, device=device)
        backbone = DiT(in_channels=8, patch=(1, 2, 2), width=128, depth=6, heads=4, context_dim=text.dim)
        defaults = {"num_frames": 17, "height": 64, "width": 64}
    elif name == "unet3d":
        vae = IdentityAutoencoder()
        backbone = UNet3D(
            in_channels=3,
            channels=32,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            attention_levels=(False, False, True),
            temporal_attention_levels=(False, True, True),
            head_dim=32,
            norm_groups=8,
            mlp_ratio=2.0,
            context_dim=text.dim,
        )
        defaults = {"num_frames": 8, "height": 32, "width": 32}
    else:
        raise ValueError(f"unknown random pipeline {name!r}; known: ['dit', 'unet3d', 'tones-dit']")
    with torch.no_grad():  # leave the zero init of the output layers: every layer does real work
        for p in backbone.parameters():
            p.add_(0.02 * torch.randn_like(p))
    backbone = backbone.to(device).eval().requires_grad_(False)
    vae = vae.to(device).eval().requires_grad_(False)
    return pipeline_cls(backbone, vae, text, FlowSchedule(), defaults=defaults)


class Clock:
    """Accumulates seconds spent inside wrapped calls (synchronising CUDA around each)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self._start: float | None = None

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self, *_args) -> None:
        self._start = self.now()

    def stop(self, *_args) -> None:
        self.seconds += self.now() - self._start

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            self.start()
            try:
                return fn(*args, **kwargs)
            finally:
                self.stop()

        return timed


@contextmanager
def clocks(pipe: DiffusionPipeline):
    """Clocks on the backbone's forward, ``autoencoder.decode`` and ``text_encoder.encode``."""
    device = pipe.device
    c = {"backbone": Clock(device), "autoencoder": Clock(device), "text": Clock(device)}
    hooks = [
        pipe.backbone.register_forward_pre_hook(c["backbone"].start),
        pipe.backbone.register_forward_hook(c["backbone"].stop),
    ]
    decode, encode = pipe.autoencoder.decode, pipe.text_encoder.encode
    pipe.autoencoder.decode = c["autoencoder"].wrap(decode)
    pipe.text_encoder.encode = c["text"].wrap(encode)
    try:
        yield c
    finally:
        for h in hooks:
            h.remove()
        pipe.autoencoder.decode, pipe.text_encoder.encode = decode, encode


def measure(pipe: DiffusionPipeline, bf16: bool, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per clip: total, inside the backbone, the autoencoder, the text encoder, and the rest."""
    pipe.autocast = bf16
    rows = []
    prompts = AUDIO_PROMPTS if pipe.modality == "audio" else PROMPTS
    for i in range(args.repeats + 1):  # the first call warms up
        pipe.clear_cache()
        clock = Clock(pipe.device)
        with clocks(pipe) as c:
            start = clock.now()
            pipe(
                prompts[i % len(prompts)],
                seed=i,
                steps=args.steps,
                sampler=args.sampler,
                guidance_scale=args.cfg,
            )
            total = clock.now() - start
        row = {"total": total, **{k: v.seconds for k, v in c.items()}}
        row["other"] = total - row["backbone"] - row["autoencoder"] - row["text"]
        row["outside"] = (total - row["backbone"] - row["autoencoder"]) / total
        if i:
            rows.append(row)
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        help="shipped model name or pipeline folder (repeatable); default: random pipelines of the shipped sizes",
    )
    parser.add_argument(
        "--modality", choices=["video", "audio"], default="video", help="what --model generates"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed clips per row (default 3)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="dpmpp_2m")
    parser.add_argument("--cfg", type=float, default=4.0, help="guidance scale (> 1: a batch of 2 per step)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    randoms = {"video": ["random:dit", "random:unet3d"], "audio": ["random:tones-dit"]}
    targets = args.model or randoms[args.modality]
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.device}, "
        f"{torch.get_num_threads()} threads; one clip, {args.sampler} {args.steps} steps, cfg {args.cfg:g}; "
        f"median of {args.repeats}\n"
    )
    print("| model | clip | precision | total s | backbone s | autoencoder s | text s | other s | outside |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for target in targets:
        if target.startswith("random:"):
            pipe = random_pipeline(target.split(":", 1)[1], device)
        else:
            pipe = pipeline_class(args.modality).from_pretrained(target, device=device)
        params = sum(p.numel() for p in pipe.backbone.parameters()) / 1e6
        label = f"{target} ({type(pipe.backbone).__name__} {params:.2f}M)"
        clip = pipe.describe(pipe.resolve())
        for precision in args.precisions.split(","):
            r = measure(pipe, precision == "bf16", args)
            print(
                f"| {label} | {clip} | {precision} | {r['total']:.3f} | {r['backbone']:.3f} | "
                f"{r['autoencoder']:.3f} | {r['text']:.3f} | {r['other']:.3f} | {100 * r['outside']:.1f}% |",
                flush=True,
            )


if __name__ == "__main__":
    main()
