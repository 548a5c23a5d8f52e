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
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from mediadiff.utils import atomic_write_text, staged_dir
from mediadiff.video.autoencoder import CausalVideoVAE, VideoAutoencoderConfig
from mediadiff.video.metrics import psnr
from mediadiff.video.shapes import Shapes

HELDOUT_SEED = 12345  # Shapes seed of the held-out clips; training must use another seed
MAX_BAD_STEPS = 20  # consecutive non-finite steps before the run gives up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data", default="shapes", help="'shapes' or a folder of captioned videos (VideoFolder)")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument(
        "--final-dir", type=Path, default=None, help="where the final model goes (default OUTPUT_DIR/final)"
    )
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--max-minutes", type=float, default=None, help="stop early after this much training time")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--min-lr-ratio", type=float, default=0.05, help="cosine decays the lr to lr * this")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--l1-weight", type=float, default=1.0, help="weight of the L1 term (MSE has weight 1)")
    p.add_argument("--kl-weight", type=float, default=1e-6, help="weight of the KL per latent element")
    p.add_argument("--frames", type=int, default=17, help="frames per training clip: 1 + k * temporal_ratio")
    p.add_argument(
        "--eval-frames", type=int, default=None, help="frames per held-out clip (default: --frames)"
    )
    p.add_argument("--size", type=int, default=64, help="frame height and width")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUTPUT_DIR")
    p.add_argument("--precision", choices=["no", "bf16", "fp16"], default="bf16", help="autocast precision")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    # architecture (ignored on --resume, which reads the checkpoint's config)
    p.add_argument("--channels", default="64,128", help="comma-separated width per level")
    p.add_argument("--latent-channels", type=int, default=8)
    p.add_argument("--blocks-per-level", type=int, default=0)
    p.add_argument("--patch-size", type=int, default=2)
    p.add_argument("--spatial-ratio", type=int, default=4)
    p.add_argument("--temporal-ratio", type=int, default=4)
    p.add_argument(
        "--temporal-patch", type=int, default=4, help="frames folded into channels (<= temporal ratio)"
    )
    # bookkeeping
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-clips", type=int, default=32)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--keep", type=int, default=2, help="checkpoints to keep")
    p.add_argument("--stats-clips", type=int, default=256, help="training clips for the latent shift/scale")
    args = p.parse_args(argv)
    args.eval_frames = args.eval_frames or args.frames
    if args.data == "shapes" and args.seed == HELDOUT_SEED:
        p.error(f"--seed {HELDOUT_SEED} is the held-out Shapes seed; train with another one")
    for name in (
        "max_steps",
        "batch_size",
        "eval_every",
        "checkpoint_every",
        "keep",
        "log_every",
        "eval_clips",
    ):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


# ----------------------------------------------------------------------------------------- data


class IndexStream(torch.utils.data.Sampler):
    """Dataset indices for global sample positions ``start, start+1, ...`` of this process.

    Position ``pos`` maps to index ``pos`` on an infinite set, or to a per-epoch permutation (seeded by
    ``seed + epoch``) of ``range(n)`` on a finite one. Processes take interleaved positions. Pure in
    ``pos``, so resuming at a step reproduces the exact batches.
    """

    def __init__(self, n: int | None, start: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.start, self.seed, self.rank, self.world = n, start, seed, rank, world
        self._perm: tuple[int, torch.Tensor] | None = None

    def index(self, pos: int) -> int:
        if self.n is None:
            return pos
        epoch, i = divmod(pos, self.n)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return int(self._perm[1][i])

    def __iter__(self):
        pos = self.start
        while True:
            yield self.index(pos * self.world + self.rank)
            pos += 1


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


# ----------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(out: Path, step: int, model, optimizer, state: dict, keep: int) -> None:
    """Write ``checkpoints/step_XXXXXXX`` atomically (temp folder, fsync, rename) and prune to ``keep``."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    with staged_dir(root / f"step_{step:07d}") as tmp:  # fsynced and renamed into place on success
        model.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old)


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted((out / "checkpoints").glob("step_*"))
    return found[-1] if found else None


# ----------------------------------------------------------------------------------------- loop


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = min(1.0, (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate(model: CausalVideoVAE, data, batch_size: int, accelerator: Accelerator) -> float:
    """Mean reconstruction PSNR (dB, posterior mean, output clamped to [-1, 1]) over ``data``."""
    model.eval()
    scores = []
    for start in range(0, len(data), batch_size):
        x = collate([data[i] for i in range(start, min(len(data), start + batch_size))]).to(
            accelerator.device
        )
        with accelerator.autocast():
            rec, _ = model(x, sample=False)  # [b c f h w]
        scores.append(psnr(rec.float().clamp(-1, 1), x))
    model.train()
    return torch.cat(scores).mean().item()


@torch.no_grad()
def latent_stats(
    model: CausalVideoVAE, data, clips: int, batch_size: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel shift (mean) and scale (1 / std) of the posterior means over ``clips`` training clips."""
    model.eval()
    zs = []
    for start in tqdm(range(0, clips, batch_size), desc="latent stats", leave=False):
        x = collate([data[i] for i in range(start, min(clips, start + batch_size))]).to(device)
        zs.append(model.encode_posterior(x).mean)  # [b zc fz hz wz], float32
    z = torch.cat(zs).transpose(0, 1).flatten(1)  # [zc n]
    return z.mean(1).cpu(), (1.0 / z.std(1).clamp_min(1e-6)).cpu()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(mixed_precision=args.precision, cpu=not torch.cuda.is_available())
    torch.manual_seed(args.seed)

    ckpt = latest_checkpoint(out) if args.resume else None
    if ckpt is not None:
        model = CausalVideoVAE.from_pretrained(ckpt)
        state = json.loads((ckpt / "state.json").read_text())
        print(f"resuming from {ckpt} (step {state['step']})", file=sys.stderr)
    else:
        if args.resume:
            print(f"--resume: no checkpoint in {out / 'checkpoints'}; starting fresh", file=sys.stderr)
        config = VideoAutoencoderConfig(
            latent_channels=args.latent_channels,
            channels=tuple(int(c) for c in args.channels.split(",")),
            blocks_per_level=args.blocks_per_level,
            patch_size=args.patch_size,
            spatial_ratio=args.spatial_ratio,
            temporal_ratio=args.temporal_ratio,
            temporal_patch=args.temporal_patch,
        )
        model = CausalVideoVAE(config)
        state = {"step": 0, "train_seconds": 0.0, "skipped_steps": 0, "best_eval_psnr": None}
    for frames in (args.frames, args.eval_frames):  # fail early on bad sizes
        model.latent_shape((1, model.config.in_channels, frames, args.size, args.size))
    model.train()

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.99)
    )
    if ckpt is not None:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)

    train_data, heldout, infinite = build_data(args)
    step = state["step"]
    stream = IndexStream(
        None if infinite else len(train_data),
        step * args.batch_size,
        args.seed,
        accelerator.process_index,
        accelerator.num_processes,
    )
    loader = torch.utils.data.DataLoader(
        train_data,
        batch_size=args.batch_size,
        sampler=stream,
        collate_fn=collate,
        num_workers=args.num_workers,
    )
    batches = iter(loader)
    metrics_file = open(out / "metrics.jsonl", "a")

    def log(record: dict) -> None:
        if accelerator.is_main_process:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()

    log(
        {
            "event": "start",
            "step": step,
            "args": {k: str(v) for k, v in vars(args).items()},
            "params": sum(p.numel() for p in raw.parameters()),
            "config": raw.config.__dict__ | {"channels": list(raw.config.channels)},
        }
    )
    bar = tqdm(total=args.max_steps, initial=step, desc="train vae", disable=not accelerator.is_main_process)
    bad_in_a_row = 0
    t_run = time.perf_counter()
    train_seconds_at_start = state["train_seconds"]
    latest_eval = None
    while step < args.max_steps:
        if args.max_minutes is not None and state["train_seconds"] / 60 >= args.max_minutes:
            print(f"--max-minutes {args.max_minutes} reached at step {step}", file=sys.stderr)
            break
        x = next(batches).to(accelerator.device)  # [b c f h w]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        g = torch.Generator(device=accelerator.device).manual_seed(args.seed * 1_000_003 + step)
        with accelerator.autocast():
            rec, posterior = model(x, sample=True, generator=g)  # [b c f h w]
        rec = rec.float()
        mse = (rec - x).pow(2).mean()
        l1 = (rec - x).abs().mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
        loss = mse + args.l1_weight * l1 + args.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.grad_clip)
        else:
            grad_norm = torch.tensor(float("nan"))
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            state["skipped_steps"] += 1
            bad_in_a_row += 1
            log({"event": "skipped", "step": step, "loss": loss.item(), "grad_norm": grad_norm.item()})
            if bad_in_a_row >= MAX_BAD_STEPS:
                raise SystemExit(
                    f"{MAX_BAD_STEPS} non-finite steps in a row at step {step}; lower --lr and --resume"
                )
            optimizer.zero_grad(set_to_none=True)
            step += 1  # move on to the next batch so a bad batch is not retried forever
            continue
        bad_in_a_row = 0
        optimizer.step()
        step += 1
        state["train_seconds"] = train_seconds_at_start + time.perf_counter() - t_run
        bar.update(1)
        if step % args.log_every == 0 or step == 1:
            p = 10 * math.log10(4.0 / max(mse.item(), 1e-12))
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{p:.1f}", eval=latest_eval)
            log(
                {
                    "step": step,
                    "loss": loss.item(),
                    "mse": mse.item(),
                    "l1": l1.item(),
                    "kl": kl.item(),
                    "train_psnr": p,
                    "grad_norm": grad_norm.item(),
                    "lr": optimizer.param_groups[0]["lr"],
                    "train_seconds": state["train_seconds"],
                }
            )
        if step % args.eval_every == 0 or step == args.max_steps:
            value = evaluate(raw, heldout, args.batch_size, accelerator)
            latest_eval = f"{value:.2f}"
            state["best_eval_psnr"] = max(value, state["best_eval_psnr"] or -math.inf)
            log({"step": step, "eval_psnr": value, "train_seconds": state["train_seconds"]})
        if accelerator.is_main_process and (step % args.checkpoint_every == 0 or step == args.max_steps):
            state["step"] = step
            save_checkpoint(out, step, raw, optimizer, state, args.keep)
    bar.close()
    state["step"] = step

    # final model: latent statistics from training clips, then save_pretrained
    summary = {}
    if accelerator.is_main_process:
        shift, scale = latent_stats(
            raw, train_data, min(args.stats_clips, len(train_data)), args.batch_size, accelerator.device
        )
        raw.set_latent_stats(shift, scale)
        value = evaluate(raw, heldout, args.batch_size, accelerator)
        final_dir = args.final_dir or out / "final"
        raw.save_pretrained(final_dir)
        summary = {
            "data": args.data,
            "train_seed": args.seed,
            "heldout": f"Shapes seed {HELDOUT_SEED}, indices 0..{len(heldout) - 1}"
            if infinite
            else f"last {len(heldout)} clips of {args.data}",
            "frames": args.frames,
            "eval_frames": args.eval_frames,
            "size": args.size,
            "steps": step,
            "batch_size": args.batch_size,
            "train_seconds": round(state["train_seconds"], 1),
            "skipped_steps": state["skipped_steps"],
            "heldout_psnr_db": round(value, 3),
            "precision": args.precision,
            "torch_threads": torch.get_num_threads(),
            "command": "python recipes/video/train_vae.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
        }
        atomic_write_text(final_dir / "training.json", json.dumps(summary, indent=2) + "\n")
        log({"event": "final", **summary})
        print(json.dumps(summary, indent=2))
    metrics_file.close()
    return summary


if __name__ == "__main__":
    main()
