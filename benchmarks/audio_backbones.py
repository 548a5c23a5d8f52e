"""Audio backbone benchmark: parameters, forward time and train-step time, fp32 vs bf16 autocast.

    python benchmarks/audio_backbones.py --threads 1                   # every preset, batch 1, CPU
    python benchmarks/audio_backbones.py --presets tiny,S --repeats 3 --batch 4
    python benchmarks/audio_backbones.py --variants --threads 1        # UNet1D-S: ways to make 16384 samples cheap

Inputs (one second of 16 kHz audio, batch ``--batch``), each with 16 text tokens of width 384
(all-MiniLM-L6-v2) and a random timestep:

- UNet1D on a mono waveform ``[b 1 16384]`` (the presets: a patch of 16 samples folded into channels);
- UNet1D on 1-D latents ``[b 16 64]`` (the presets with ``in_channels=16, patch=1``);
- UNet2D on a log-mel spectrogram ``[b 1 128 64]`` (128 bins, hop 256);
- DiT1D on 1-D latents ``[b 16 64]`` (patch 1: 64 tokens).

"forward" is one ``torch.no_grad`` call in eval mode; "train step" is forward + backward of the mean
square of the output + an AdamW step, in train mode. Each number is the median of ``--repeats`` timed
runs after one warm-up run (``benchmarks/timing.py``); CUDA runs synchronise before reading the clock.
``--variants`` times UNet1D-S on the waveform with the same widths and levels but other ways to
shorten the top level: no patch with strides 4, 4, 4 (thin or full first level), patch 4 with
strides 4, 2, 2, and the preset's patch 16 with strides 2, 2, 2.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from timing import perturb_, time_backbone
from tqdm import tqdm

from mediadiff.audio import DiT1D, UNet1D, UNet2D
from mediadiff.utils import machine

# row name -> (class, input shape after the batch axis, config overrides)
INPUTS: dict[str, tuple[type, tuple[int, ...], dict[str, Any]]] = {
    "UNet1D waveform": (UNet1D, (1, 16384), {}),
    "UNet1D latent": (UNet1D, (16, 64), {"in_channels": 16, "patch": 1}),
    "UNet2D mel": (UNet2D, (1, 128, 64), {}),
    "DiT1D latent": (DiT1D, (16, 64), {}),
}

# UNet1D-S on [b 1 16384], same widths (64, 128, 256, 256) and attention levels: what shortens the top level
VARIANTS: dict[str, dict[str, Any]] = {
    "patch 1, strides 4-4-4": {"patch": 1, "down_factors": (4, 4, 4)},
    "patch 1, strides 4-4-4, thin top (32, 128, 256, 256)": {
        "patch": 1,
        "down_factors": (4, 4, 4),
        "channels": 32,
        "channel_mult": (1, 4, 8, 8),
        "head_dim": 32,
    },
    "patch 4, strides 4-2-2": {"patch": 4, "down_factors": (4, 2, 2)},
    "patch 16, strides 2-2-2 (the preset)": {},
}


def measure(label: str, cls: type, preset: str, shape: tuple[int, ...], overrides: dict, args) -> dict:
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    model = perturb_(cls.from_preset(preset, **overrides).to(device), gen)
    x = torch.randn(args.batch, *shape, generator=gen).to(device)
    t = torch.rand(args.batch, generator=gen).to(device)
    context = torch.randn(args.batch, 16, model.config.context_dim, generator=gen).to(device)
    row = {"model": label, "params": model.num_parameters(), "shape": list(x.shape)}
    times = time_backbone(model, x, t, context, repeats=args.repeats, device=device, optimizer_step=True)
    return row | times


def table(rows: list[dict], first: str) -> list[str]:
    lines = [
        f"| {first} | params | input x | forward fp32 | forward bf16 | train step fp32 | train step bf16 |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['shape']} | {r['fwd_fp32']:.1f} | {r['fwd_bf16']:.1f} "
            f"| {r['train_fp32']:.1f} | {r['train_bf16']:.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="tiny,S,B", help="comma-separated presets (tiny, S, B)")
    parser.add_argument("--inputs", default=",".join(INPUTS), help=f"comma-separated rows of {list(INPUTS)}")
    parser.add_argument("--variants", action="store_true", help="time UNet1D-S waveform variants instead")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per number (median)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variants:
        jobs = [(name, UNet1D, "S", INPUTS["UNet1D waveform"][1], ov) for name, ov in VARIANTS.items()]
    else:
        jobs = []
        for name in args.inputs.split(","):
            if name not in INPUTS:
                raise SystemExit(f"unknown input {name!r}; known: {list(INPUTS)}")
            cls, shape, overrides = INPUTS[name]
            for preset in args.presets.split(","):
                if preset not in cls.presets:
                    raise SystemExit(f"unknown preset {preset!r}; known: {sorted(cls.presets)}")
                jobs.append((f"{cls.__name__}-{preset} ({name.split()[1]})", cls, preset, shape, overrides))
    rows = [measure(*job, args) for job in tqdm(jobs, desc="audio backbones")]

    info = machine(args.device)
    where = info.get("gpu", info["cpu"])
    print(
        f"\n{info['device']} ({where}), {info['cpu_count']} cores, {info['torch_threads']} torch threads, "
        f"torch {info['torch']}, python {info['python']}; batch {args.batch}, median of {args.repeats}; "
        f"train step = forward + backward + AdamW; times in ms\n"
    )
    print("\n".join(table(rows, "UNet1D-S on [b 1 16384]" if args.variants else "backbone (input)")))


if __name__ == "__main__":
    main()
