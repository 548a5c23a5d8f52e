"""Backbone benchmark: parameters, forward time and training-step time, fp32 vs bf16 autocast.

    python benchmarks/backbones.py                       # tiny and S presets of UNet3D and DiT on CPU
    python benchmarks/backbones.py --presets tiny,S,B --repeats 7 --device cuda

Representative inputs, batch 1 (change with --batch):

- UNet3D in pixel space: x [b 3 16 32 32] (16 frames of 32x32 RGB);
- DiT on video-VAE latents: x [b 8 5 16 16] (17 frames of 64x64 through a causal VAE that keeps the
  first frame and compresses 4x in time and space), patch (1, 2, 2): 320 tokens;
- both with 16 text tokens of width 384 (all-MiniLM-L6-v2), a random timestep.

"forward" is one ``torch.no_grad`` call in eval mode; "train step" is forward + backward of the
mean squared error in train mode (no optimizer step). Each number is the median of ``--repeats``
timed runs after one warm-up run; CUDA runs synchronise before reading the clock.
"""

from __future__ import annotations

import argparse
import platform

import torch
from timing import perturb_, time_backbone
from tqdm import tqdm

from mediadiff.video.dit import DiT
from mediadiff.video.unet3d import UNet3D

SHAPES = {"UNet3D": (3, 16, 32, 32), "DiT": (8, 5, 16, 16)}
MODELS = {"UNet3D": UNet3D, "DiT": DiT}


def measure(name: str, preset: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    model = perturb_(MODELS[name].from_preset(preset).to(device), gen)
    x = torch.randn(args.batch, *SHAPES[name], generator=gen).to(device)
    t = torch.rand(args.batch, generator=gen).to(device)
    context = torch.randn(args.batch, 16, model.config.context_dim, generator=gen).to(device)
    row = {"model": f"{name}-{preset}", "params": model.num_parameters(), "shape": list(x.shape)}
    return row | time_backbone(model, x, t, context, repeats=args.repeats, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="tiny,S", help="comma-separated presets (tiny, S, B)")
    parser.add_argument("--models", default="UNet3D,DiT", help="comma-separated backbones")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per number (median)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    jobs = [(m, p) for m in args.models.split(",") for p in args.presets.split(",")]
    for name, preset in jobs:
        if name not in MODELS or preset not in MODELS[name].presets:
            raise SystemExit(
                f"unknown backbone {name!r} or preset {preset!r}; known: {sorted(MODELS)}, tiny/S/B"
            )
    rows = [measure(name, preset, args) for name, preset in tqdm(jobs, desc="backbones")]

    device = (
        torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor()
    )
    print(
        f"\n{args.device} ({device or platform.machine()}), {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"batch {args.batch}, median of {args.repeats}; times in ms\n"
    )
    print("| backbone | params | input x | forward fp32 | forward bf16 | train step fp32 | train step bf16 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['shape']} | {r['fwd_fp32']:.1f} | {r['fwd_bf16']:.1f} "
            f"| {r['train_fp32']:.1f} | {r['train_bf16']:.1f} |"
        )


if __name__ == "__main__":
    main()
