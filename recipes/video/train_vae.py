"""Train the causal video VAE (``mediadiff.video.autoencoder.CausalVideoVAE``).

    python recipes/video/train_vae.py --output-dir runs/video_vae --max-steps 3000        # on Shapes
    python recipes/video/train_vae.py --data path/to/clips --output-dir runs/my_vae       # on a folder
    python recipes/video/train_vae.py --output-dir runs/video_vae --max-steps 4000 --resume

Loss: ``MSE + l1_weight * L1`` reconstruction plus ``kl_weight`` times the KL divergence of the diagonal Gaussian
posterior to ``N(0, I)`` per latent element (Kingma & Welling 2014, Eq. 10). AdamW, linear warm-up then
cosine decay, gradient clipping; a step whose loss or gradient is not finite is skipped (and logged).

Data: ``--data shapes`` streams :class:`mediadiff.video.shapes.Shapes` with the training ``--seed``;
step ``s`` uses clip indices ``s * batch ... (s + 1) * batch - 1``, so ``--resume`` continues exactly.
Held-out evaluation uses Shapes seed ``HELDOUT_SEED`` (12345), which training never touches. With
``--data DIR`` the last ``--eval-clips`` items of the folder are held out and never trained on.

Outputs in ``--output-dir``: ``metrics.jsonl`` (one JSON object per line), ``checkpoints/step_XXXXXXX/``
(the last ``--keep`` of them, written atomically) and ``final/`` (``save_pretrained`` folder with the
latent shift/scale measured on training clips, and ``training.json`` with the run's summary).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from accelerate import Accelerator

from mediadiff.train.autoencoder import (
    AutoencoderRecipe,
    LossContext,
    LossOutput,
    add_arguments,
    latent_stats,
    parse_and_check,
    train,
)
from mediadiff.utils import ArgumentParser  # one-line errors, exit code 2
from mediadiff.video.autoencoder import CausalVideoVAE, VideoAutoencoderConfig
from mediadiff.video.metrics import psnr
from mediadiff.video.shapes import Shapes

HELDOUT_SEED = 12345  # Shapes seed of the held-out clips; training must use another seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The shared flags of :mod:`mediadiff.train.autoencoder` (with this recipe's defaults) and the VAE's."""
    p = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", default="shapes", help="'shapes' or a folder of captioned videos (VideoFolder)")
    add_arguments(
        p,
        defaults=dict(
            max_steps=3000,
            batch_size=8,
            lr=1e-3,
            warmup_steps=100,
            precision="bf16",
            eval_every=250,
            eval_clips=32,
            checkpoint_every=250,
            keep=2,
        ),
    )
    g = p.add_argument_group("the video VAE")
    g.add_argument("--l1-weight", type=float, default=1.0, help="weight of the L1 term (MSE has weight 1)")
    g.add_argument("--kl-weight", type=float, default=1e-6, help="weight of the KL per latent element")
    g.add_argument("--frames", type=int, default=17, help="frames per training clip: 1 + k * temporal_ratio")
    g.add_argument(
        "--eval-frames", type=int, default=None, help="frames per held-out clip (default: --frames)"
    )
    g.add_argument("--size", type=int, default=64, help="frame height and width")
    # architecture (ignored on --resume, which reads the checkpoint's config)
    g.add_argument("--channels", default="64,128", help="comma-separated width per level")
    g.add_argument("--latent-channels", type=int, default=8)
    g.add_argument("--blocks-per-level", type=int, default=0)
    g.add_argument("--patch-size", type=int, default=2)
    g.add_argument("--spatial-ratio", type=int, default=4)
    g.add_argument("--temporal-ratio", type=int, default=4)
    g.add_argument(
        "--temporal-patch", type=int, default=4, help="frames folded into channels (<= temporal ratio)"
    )
    g.add_argument("--stats-clips", type=int, default=256, help="training clips for the latent shift/scale")
    args = parse_and_check(p, RECIPE, argv)
    args.eval_frames = args.eval_frames or args.frames
    return args


# ----------------------------------------------------------------------------------------- data


def collate(items: list[dict]) -> torch.Tensor:
    return torch.stack([item["video"] for item in items])  # [b c f h w]


def build_data(args: argparse.Namespace):
    """(training set, held-out set, infinite?) for ``--data``."""
    if args.data == "shapes":
        train = Shapes(length=10**9, num_frames=args.frames, size=args.size, seed=args.seed)
        heldout = Shapes(
            length=args.eval_clips, num_frames=args.eval_frames, size=args.size, seed=HELDOUT_SEED
        )
        return train, heldout, True
    root = Path(args.data)
    if not root.is_dir():
        raise SystemExit(f"--data: {root} is neither 'shapes' nor a folder")
    from mediadiff.video.datasets import VideoFolder  # lazy: only folders need the video decoders

    if args.eval_frames != args.frames:
        raise SystemExit(
            "--eval-frames must equal --frames with --data DIR (held-out clips come from the same folder)"
        )
    # captions are not needed to train an autoencoder, so un-captioned videos are welcome
    full = VideoFolder(root=root, num_frames=args.frames, size=args.size, seed=args.seed, default_caption="")
    if len(full) <= args.eval_clips:
        raise SystemExit(
            f"--data: {root} has {len(full)} clips; need more than --eval-clips ({args.eval_clips})"
        )
    n_train = len(full) - args.eval_clips
    train = torch.utils.data.Subset(full, range(n_train))
    heldout = torch.utils.data.Subset(full, range(n_train, len(full)))
    return train, heldout, False


# ----------------------------------------------------------------------------------------- model


def build_model(args: argparse.Namespace) -> CausalVideoVAE:
    """A fresh VAE from the architecture flags."""
    config = VideoAutoencoderConfig(
        latent_channels=args.latent_channels,
        channels=tuple(int(c) for c in args.channels.split(",")),
        blocks_per_level=args.blocks_per_level,
        patch_size=args.patch_size,
        spatial_ratio=args.spatial_ratio,
        temporal_ratio=args.temporal_ratio,
        temporal_patch=args.temporal_patch,
    )
    return CausalVideoVAE(config)


def check_sizes(model: CausalVideoVAE, args: argparse.Namespace) -> None:
    """Fail early when ``--frames``, ``--eval-frames`` or ``--size`` do not suit the model."""
    for frames in (args.frames, args.eval_frames):
        model.latent_shape((1, model.config.in_channels, frames, args.size, args.size))


def loss(model: CausalVideoVAE, x: torch.Tensor, ctx: LossContext) -> LossOutput:
    """``MSE + l1_weight * L1 + kl_weight * KL`` per latent element, of a posterior sample's decoding."""
    args = ctx.args
    with ctx.accelerator.autocast():
        rec, posterior = model(x, sample=True, generator=ctx.generator)  # [b c f h w]
    rec = rec.float()
    mse = (rec - x).pow(2).mean()
    l1 = (rec - x).abs().mean()
    kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
    total = mse + args.l1_weight * l1 + args.kl_weight * kl
    logs = {"mse": mse.detach(), "l1": l1.detach(), "kl": kl.detach()}
    if ctx.logging:
        logs["train_psnr"] = 10 * math.log10(4.0 / max(mse.item(), 1e-12))
    return LossOutput(total, logs)


def evaluate(
    model: CausalVideoVAE, data, args: argparse.Namespace, accelerator: Accelerator
) -> dict[str, float]:
    """``eval_psnr``: mean reconstruction PSNR (dB, posterior mean, output clamped to [-1, 1]) over ``data``."""
    scores = []
    for start in range(0, len(data), args.batch_size):
        x = collate([data[i] for i in range(start, min(len(data), start + args.batch_size))]).to(
            accelerator.device
        )
        with accelerator.autocast():
            rec, _ = model(x, sample=False)  # [b c f h w]
        scores.append(psnr(rec.float().clamp(-1, 1), x))
    return {"eval_psnr": torch.cat(scores).mean().item()}


@torch.no_grad()
def set_latent_stats(
    model: CausalVideoVAE, train_data, args: argparse.Namespace, accelerator: Accelerator
) -> None:
    """The final model's latent shift/scale, measured on ``--stats-clips`` training clips."""
    clips = min(args.stats_clips, len(train_data))
    model.set_latent_stats(
        *latent_stats(model, train_data, collate, clips, args.batch_size, accelerator.device)
    )


def summary(args: argparse.Namespace) -> dict:
    """What the run trained on, first in ``training.json``."""
    heldout = (
        f"Shapes seed {HELDOUT_SEED}, indices 0..{args.eval_clips - 1}"
        if args.data == "shapes"
        else f"last {args.eval_clips} clips of {args.data}"
    )
    return {
        "data": args.data,
        "train_seed": args.seed,
        "heldout": heldout,
        "frames": args.frames,
        "eval_frames": args.eval_frames,
        "size": args.size,
    }


RECIPE = AutoencoderRecipe(
    script="recipes/video/train_vae.py",
    name="train vae",
    build=build_model,
    load=CausalVideoVAE.from_pretrained,
    data=build_data,
    collate=collate,
    loss=loss,
    evaluate=evaluate,
    main_metric="eval_psnr",
    higher_is_better=True,
    check=check_sizes,
    finalize=set_latent_stats,
    summary=summary,
    report=lambda metrics: {"heldout_psnr_db": round(metrics["eval_psnr"], 3)},
    heldout_seed=lambda args: HELDOUT_SEED if args.data == "shapes" else None,
    progress={"psnr": "{train_psnr:.1f}"},
)


def main(argv: list[str] | None = None) -> dict:
    """Train with the command line ``argv`` (default ``sys.argv[1:]``); returns ``training.json``'s summary."""
    return train(parse_args(argv), RECIPE, argv=argv)


if __name__ == "__main__":
    main()
