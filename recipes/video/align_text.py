"""Align the text to the clips: pre-train a TokenAdapter on MiniLM's tokens contrastively against a
small encoder of the clips' latents (CLIP's symmetric InfoNCE, Radford et al. 2021, Fig. 3).

A sentence encoder such as all-MiniLM-L6-v2 was trained to put paraphrases together, so captions
that differ in the one word that decides the motion ("left" / "right") land almost on the same
pooled vector: over Shapes captions the direction word explains 5% of the variance of the pooled
tokens, and the text-to-video backbones do not learn it. The adapter (a residual per-token MLP,
:class:`mediadiff.nn.TokenAdapter`) learns, from the (clip, caption) pairs alone, which text
features the clips tell apart. ``shapes_dit.py --text-adapter FILE`` then puts the frozen adapter in
front of the DiT's text pathway.

The clips come as latents from a recipe's latent cache (built by ``shapes_dit.py``; the tokens in it
are the frozen encoder's), so nothing is re-encoded. Any cache with text works, video or audio: the
clip encoder takes latents with any number of axes (``[c f h w]``, ``[c l]``, ...)::

    python recipes/video/align_text.py --cache runs/shapes_dit/cache -o runs/align/adapter.safetensors

On a Shapes cache it prints, on held-out items, how much of the pooled text's variance colour, shape and direction
explain before and after (on a Tones cache: waveform, pitch and contour) (the between-class share, sum over classes of n_c |mean_c - mean|^2 over the
total sum of squares) and how often the clip a caption retrieves has its classes; on any cache, the share
of held-out captions whose own clip is the nearest (``retrieval_top1``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from mediadiff.nn import TokenAdapter, conv_nd, masked_mean
from mediadiff.train.cache import LatentCache
from mediadiff.utils import atomic_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--cache", default="runs/shapes_dit/cache", help="latent cache with text (from shapes_dit.py)"
    )
    p.add_argument("-o", "--output", default="runs/align/adapter.safetensors", help="adapter weights file")
    p.add_argument("--steps", type=int, default=200, help="contrastive steps")
    p.add_argument("--batch-size", type=int, default=128, help="pairs per step (negatives: the other pairs)")
    p.add_argument("--hidden", type=int, default=768, help="adapter MLP hidden width")
    p.add_argument("--embed-dim", type=int, default=128, help="shared text/clip embedding width")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--holdout", type=int, default=1000, help="last items kept out of training for the report")
    p.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="Shapes seed the cache was built from (labels for the report)",
    )
    p.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return p


class ClipEncoder(nn.Module):
    """Latents ``[b c ...]`` with ``dims`` axes -> embedding ``[b dim]``: three 3-wide convolutions, a mean.

    The second and third convolution halve the last two axes (h and w of a video latent, the length of
    a 1-D one) and keep any before them (a video's frames); then the mean over all axes and a linear
    head. ``dims`` 3 is the encoder the shipped adapter was aligned with (the same layers, in order).
    """

    def __init__(self, channels: int, dim: int, width: int = 64, dims: int = 3) -> None:
        super().__init__()
        halve = tuple(2 if axis >= dims - 2 else 1 for axis in range(dims))  # 3-D: (1, 2, 2); 1-D: (2,)
        self.net = nn.Sequential(
            conv_nd(dims, channels, width, 3, padding=1),
            nn.SiLU(),
            conv_nd(dims, width, 2 * width, 3, stride=halve, padding=1),
            nn.SiLU(),
            conv_nd(dims, 2 * width, 2 * width, 3, stride=halve, padding=1),
            nn.SiLU(),
        )
        self.head = nn.Linear(2 * width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[b c ...] -> [b dim]``."""
        return self.head(self.net(x).mean(tuple(range(2, x.ndim))))  # [b c ...] -> [b 2w] -> [b dim]


def load_cache(path: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every item of a latent cache: latents [n c ...], tokens [n l d], mask [n l], dataset index [n]."""
    cache = LatentCache(path)  # checks the build completed and the shards are whole
    if not cache.has_text:
        raise SystemExit(
            f"align_text: the cache at {path} has no text embeddings (build it with a text encoder)"
        )
    parts: dict[str, list[torch.Tensor]] = {"latent": [], "tokens": [], "mask": [], "index": []}
    for shard in cache.meta["shards"]:
        data = load_file(Path(path) / shard["file"])
        for k in parts:
            parts[k].append(data[k])
    width = max(t.shape[1] for t in parts["tokens"])
    parts["tokens"] = [F.pad(t, (0, 0, 0, width - t.shape[1])) for t in parts["tokens"]]
    parts["mask"] = [F.pad(m, (0, width - m.shape[1])) for m in parts["mask"]]
    return tuple(torch.cat(parts[k]) for k in ("latent", "tokens", "mask", "index"))  # type: ignore[return-value]


def held_out_labels(
    dataset_type: str, index: torch.Tensor, args: argparse.Namespace
) -> dict[str, torch.Tensor]:
    """Class ids ``[h]`` per attribute of the held-out items of a procedural cache (Shapes: colour, shape,
    direction; Tones: waveform, pitch, contour), for the class-share report; ``{}`` for any other data."""
    if dataset_type.endswith(".Shapes"):
        from mediadiff.video import Shapes

        shapes = Shapes(
            length=int(index.max()) + 1, num_frames=2, size=16, seed=args.data_seed
        )  # tiny renders
        items, keys = [shapes[int(i)] for i in index], ("colour", "shape", "direction")
    elif dataset_type.endswith(".Tones"):
        from mediadiff.audio import Tones

        tones = Tones(length=int(index.max()) + 1, seed=args.data_seed)
        items, keys = [tones.labels(int(i)) for i in index], ("waveform", "pitch", "contour")
    else:
        return {}
    return {k: torch.tensor([it[f"{k}_id"] for it in items]) for k in keys}


def between_share(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of the total sum of squares of x [n d] that the class means of labels [n] explain."""
    x = x - x.mean(0)  # [n d]
    between = sum((labels == c).sum() * x[labels == c].mean(0).square().sum() for c in labels.unique())
    return float(between / x.square().sum())


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    latents, tokens, mask, index = load_cache(args.cache)
    latents, tokens = latents.float(), tokens.float()
    n = len(latents)
    if not 0 < args.holdout < n // 2:
        raise SystemExit(f"align_text: --holdout must be in (0, {n // 2}), got {args.holdout}")
    train_n = n - args.holdout
    labels = held_out_labels(
        LatentCache(args.cache).meta["fingerprint"]["dataset"]["type"], index[train_n:], args
    )

    adapter = TokenAdapter(tokens.shape[-1], args.hidden)
    text_head = nn.Linear(tokens.shape[-1], args.embed_dim)
    clip_encoder = ClipEncoder(latents.shape[1], args.embed_dim, dims=latents.ndim - 2)  # any number of axes
    log_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # learned temperature, CLIP's init 1/0.07 ~ 14
    params = [*adapter.parameters(), *text_head.parameters(), *clip_encoder.parameters(), log_scale]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)

    def report(tag: str) -> dict:
        with torch.no_grad():
            t, m = tokens[train_n:], mask[train_n:]
            raw, aligned = masked_mean(t, m), masked_mean(adapter(t, m), m)  # [h d] each
            te = F.normalize(text_head(aligned), dim=-1)  # [h e]
            ve = F.normalize(clip_encoder(latents[train_n:]), dim=-1)  # [h e]
            best = (te @ ve.T).argmax(1)  # [h] the clip each caption retrieves
            row = {
                "tag": tag,
                "retrieval_top1": round(float((best == torch.arange(len(best))).float().mean()), 4),
                **{f"raw_{k}_share": round(between_share(raw, y), 4) for k, y in labels.items()},
                **{f"aligned_{k}_share": round(between_share(aligned, y), 4) for k, y in labels.items()},
            }
            for k, y in labels.items():  # the retrieved clip has the caption's class (moves its way, ...)
                row[f"retrieval_{k}_acc"] = round(float((y[best] == y).float().mean()), 4)
        print(json.dumps(row), flush=True)
        return row

    rows = [report("init")]
    losses: list[float] = []
    start = time.time()
    bar = tqdm(range(1, args.steps + 1), desc="align", unit="step")
    for step in bar:
        b = torch.randint(0, train_n, (args.batch_size,))
        te = F.normalize(text_head(masked_mean(adapter(tokens[b], mask[b]), mask[b])), dim=-1)  # [b e]
        ve = F.normalize(clip_encoder(latents[b]), dim=-1)  # [b e]
        logits = log_scale.exp().clamp(max=100.0) * te @ ve.T  # [b b]
        target = torch.arange(len(b))
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step % max(1, args.steps // 4) == 0 or step == args.steps:
            rows.append(report(f"step {step}"))
    out = Path(args.output)
    meta = {
        "hidden": str(args.hidden),
        "dim": str(tokens.shape[-1]),
        "steps": str(args.steps),
        "cache": args.cache,
    }
    with atomic_path(out) as tmp:  # a crash leaves the old file or none
        save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(tmp), metadata=meta)
    tail = max(1, len(losses) // 10)
    summary = {
        "output": str(out),
        "minutes": round((time.time() - start) / 60, 2),
        "first_loss": round(sum(losses[:tail]) / tail, 4),  # mean of the first and last 10% of steps
        "last_loss": round(sum(losses[-tail:]) / tail, 4),
        "report": rows,
    }
    out.with_suffix(".json").write_text(json.dumps({**vars(args), **summary}, indent=1))
    print(f"wrote {out} ({summary['minutes']} min)")
    return summary


if __name__ == "__main__":
    main()
