"""Training throughput with and without the latent + text cache, and bf16 vs fp32 step time, on this machine.

Two small latent recipes, each trained with the same :class:`~mediadiff.train.Trainer`:

- ``tiny``: the parts of ``recipes/examples/tiny_latent.py`` (MovingSquares 8x16x16, a small conv
  autoencoder, the hash text encoder, a small conv backbone);
- ``shapes``: Shapes clips 17x64x64 (the video VAE recipe's size), the causal video VAE (default
  config: 4x space, 4x time, 8 latent channels; untrained weights cost the same as trained ones),
  the bundled all-MiniLM-L6-v2 text encoder and the ``tiny`` UNet3D on the 8x5x16x16 latents.

For each: samples/s of optimizer steps encoding clips and captions on the fly, the one-off cache
build, samples/s training from the cache, their ratio and the number of epochs after which the
cache has paid for its build. A second table times one training step in fp32 and in bf16 autocast.

    .venv/bin/python benchmarks/cache.py                    # both tables
    .venv/bin/python benchmarks/cache.py --recipes tiny --steps 10
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mediadiff.diffusion import FlowSchedule
from mediadiff.train import TrainConfig, Trainer
from mediadiff.utils import cpu_bf16_supported


def tiny_parts(items: int) -> dict:
    """The tiny example recipe's parts."""
    from mediadiff.train.testing import HashTextEncoder, MovingSquares, TinyAutoencoder, TinyBackbone

    torch.manual_seed(0)
    return {
        "dataset": MovingSquares(items, num_frames=8, size=16),
        "autoencoder": TinyAutoencoder(latent_channels=4, width=16, levels=1),
        "text_encoder": HashTextEncoder(dim=16),
        "model": TinyBackbone(channels=4, width=32, depth=2, context_dim=16),
    }


def shapes_parts(items: int) -> dict:
    """Shapes + causal video VAE + MiniLM + tiny UNet3D."""
    from mediadiff.text import load_text_encoder
    from mediadiff.video import CausalVideoVAE, Shapes, UNet3D

    torch.manual_seed(0)
    text_encoder = load_text_encoder()
    return {
        "dataset": Shapes(length=items, num_frames=17, size=64),
        "autoencoder": CausalVideoVAE(),
        "text_encoder": text_encoder,
        "model": UNet3D.from_preset("tiny", in_channels=8, context_dim=text_encoder.dim),
    }


RECIPES = {"tiny": tiny_parts, "shapes": shapes_parts}


def make_trainer(parts: dict, out: Path, batch_size: int, precision: str, cache_dir: Path | None) -> Trainer:
    config = TrainConfig(
        output_dir=str(out), max_steps=10_000, batch_size=batch_size, lr=1e-4, mixed_precision=precision,
        ema_decay=0.999, cond_dropout=0.1, checkpoint_every=10_000,
    )  # fmt: skip
    return Trainer(
        parts["model"], FlowSchedule(), parts["dataset"], config, prediction="flow",
        autoencoder=parts["autoencoder"], text_encoder=parts["text_encoder"], cache_dir=cache_dir,
    )  # fmt: skip


def step_times(trainer: Trainer, steps: int, warmup: int) -> list[float]:
    """Seconds per optimizer step (data loading, encoding or cache reads, forward, backward, AdamW, EMA)."""
    trainer.model.train()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        trainer.train_step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def cache_row(name: str, args: argparse.Namespace, work: Path) -> dict:
    parts = RECIPES[name](args.items)
    fly = make_trainer(parts, work / f"{name}-fly", args.batch_size, args.precision, None)
    fly_times = step_times(fly, args.steps, args.warmup)
    cache_dir = work / f"{name}-cache"
    cached = make_trainer(
        RECIPES[name](args.items), work / f"{name}-cached", args.batch_size, args.precision, cache_dir
    )
    start = time.perf_counter()
    cached.training_data()  # builds the cache
    build = time.perf_counter() - start
    cached_times = step_times(cached, args.steps, args.warmup)
    per_step = args.batch_size
    fly_rate = per_step / statistics.median(fly_times)
    cached_rate = per_step / statistics.median(cached_times)
    epoch_saving = args.items / fly_rate - args.items / cached_rate  # seconds saved per epoch
    size = sum(p.stat().st_size for p in cache_dir.iterdir())
    return {
        "recipe": name,
        "precision": fly.mixed_precision,
        "fly": fly_rate,
        "cached": cached_rate,
        "ratio": cached_rate / fly_rate,
        "build_s": build,
        "break_even": build / epoch_saving if epoch_saving > 0 else float("inf"),
        "cache_mb": size / 2**20,
    }


def precision_row(name: str, args: argparse.Namespace, work: Path) -> dict:
    times = {}
    for precision in ("no", "bf16"):
        parts = RECIPES[name](args.items)
        trainer = make_trainer(
            parts, work / f"{name}-{precision}", args.batch_size, precision, work / f"{name}-cache"
        )
        trainer.training_data()
        times[precision] = statistics.median(step_times(trainer, args.steps, args.warmup))
    return {"recipe": name, "fp32_ms": 1e3 * times["no"], "bf16_ms": 1e3 * times["bf16"],
            "speedup": times["no"] / times["bf16"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    parser.add_argument("--items", type=int, default=64, help="clips in each dataset (one epoch)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady numbers on a shared CPU)"
    )
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "no", "bf16"], help="for the cache table"
    )
    parser.add_argument("--skip-precision", action="store_true", help="only the cache table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"# {torch.cuda.get_device_name(0) if torch.cuda.is_available() else f'CPU {cpu}'}, "
          f"torch {torch.__version__}, {args.threads} thread(s), cpu bf16: {cpu_bf16_supported()}, "
          f"batch {args.batch_size}, {args.items} clips, median of {args.steps} steps")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="mediadiff-cache-bench-"))
    try:
        print("\n| recipe | precision | on the fly (samples/s) | cached (samples/s) | speed-up | cache build (s) "
              "| pays off after (epochs) | cache size (MiB) |")  # fmt: skip
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for name in args.recipes:
            r = cache_row(name, args, work)
            print(f"| {r['recipe']} | {r['precision']} | {r['fly']:.1f} | {r['cached']:.1f} | {r['ratio']:.2f}x "
                  f"| {r['build_s']:.1f} | {r['break_even']:.2f} | {r['cache_mb']:.2f} |", flush=True)  # fmt: skip
        if not args.skip_precision:
            print("\n| recipe (cached) | fp32 step (ms) | bf16 autocast step (ms) | bf16 speed-up |")
            print("|---|---:|---:|---:|")
            for name in args.recipes:
                r = precision_row(name, args, work)
                print(
                    f"| {r['recipe']} | {r['fp32_ms']:.1f} | {r['bf16_ms']:.1f} | {r['speedup']:.2f}x |",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
