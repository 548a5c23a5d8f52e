"""Tiny latent text-to-video recipe: the trainer's machinery end to end in seconds on a CPU.

Clips of coloured squares moving one way (``MovingSquares``, captioned "a red square moving left")
go through a small 3D-conv autoencoder (frozen, randomly initialised: this recipe exercises the
training machinery, so its decoded samples are not meant to look like the data; the video recipes
use the trained video VAE) and a hash-based text encoder; a small conv backbone learns flow
matching on the latents, with caption dropout for classifier-free guidance.

    python recipes/examples/tiny_latent.py --max-steps 200 --output-dir runs/tiny
    python recipes/examples/tiny_latent.py --max-steps 200 --output-dir runs/tiny --cache cache/tiny
    mediadiff train recipes/examples/tiny_latent.py --max-steps 400 --output-dir runs/tiny --resume
    torchrun --standalone --nproc_per_node 2 recipes/examples/tiny_latent.py --max-steps 50
    python recipes/examples/tiny_latent.py --dry-run --memory-gb 8
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import torch

from mediadiff.diffusion import FlowSchedule, cfg, randn, sample
from mediadiff.text import pack_context
from mediadiff.train import SampleContext
from mediadiff.train.recipe import Parts, Recipe
from mediadiff.train.testing import HashTextEncoder, MovingSquares, TinyAutoencoder, TinyBackbone

PROMPTS = ["a red square moving right", "a blue square moving down"]


def add_args(g) -> None:
    """This recipe's data and model flags (the cache flags come with the Recipe)."""
    g.add_argument("--items", type=int, default=64, help="clips in the dataset")
    g.add_argument("--frames", type=int, default=8)
    g.add_argument("--size", type=int, default=16, help="height and width in pixels")
    g.add_argument("--width", type=int, default=32, help="backbone channels")
    g.add_argument("--ae-width", type=int, default=16, help="autoencoder channels")
    g.add_argument("--guidance", type=float, default=3.0, help="CFG scale of the samples")


def build(args) -> Parts:
    """Dataset, autoencoder, text encoder and backbone (identical in every process: seeded)."""
    dataset = MovingSquares(args.items, num_frames=args.frames, size=args.size)
    autoencoder = TinyAutoencoder(latent_channels=4, width=args.ae_width, levels=1)
    text_encoder = HashTextEncoder(dim=16, seed=args.seed)
    backbone = TinyBackbone(channels=4, width=args.width, depth=2, context_dim=16, dims=3)
    parts = Parts(
        dataset, backbone, FlowSchedule(), "flow", data_key="video", autoencoder=autoencoder,
        text_encoder=text_encoder,
    )  # fmt: skip
    parts.sample_fn = make_sample_fn(parts, args)
    return parts


def make_sample_fn(parts: Parts, args):
    """Write one GIF per prompt, sampled with CFG from the (EMA) model."""
    schedule, autoencoder, text_encoder = parts.schedule, parts.autoencoder, parts.text_encoder
    latent = autoencoder.latent_shape((3, args.frames, args.size, args.size))

    def write(ctx: SampleContext) -> list[Path]:
        n = len(PROMPTS)
        tokens, mask = pack_context(*text_encoder.encode([*PROMPTS, ""]))  # [n+1 l d], [n+1 l]; last: empty
        guided = cfg(
            ctx.model,
            {"context": tokens[:n], "context_mask": mask[:n]},
            {"context": tokens[n:], "context_mask": mask[n:]},
            scale=args.guidance,
        )
        noise = randn((n, *latent), [torch.Generator().manual_seed(i) for i in range(n)])
        z = sample(guided, noise.to(ctx.device), schedule, "flow", "euler", steps=16)  # [b c' f h' w']
        clips = autoencoder.decode(z.float()).clamp(-1, 1)  # [b 3 f h w]
        frames = ((clips + 1) * 127.5).round().to(torch.uint8).cpu()  # [b 3 f h w]
        frames = frames.permute(0, 2, 3, 4, 1).numpy()  # [b f h w 3]
        paths = []
        for prompt, clip in zip(PROMPTS, frames):
            path = ctx.out_dir / (prompt.replace(" ", "_") + ".gif")
            iio.imwrite(path, clip, duration=125, loop=0)
            paths.append(path)
        return paths

    return write


RECIPE = Recipe(
    "recipes/examples/tiny_latent.py", __doc__, add_args=add_args, build=build, cache=True,
    defaults=dict(max_steps=300, batch_size=8, lr=1e-3, warmup_steps=20, checkpoint_every=100,
                  sample_every=0, output_dir="runs/tiny_latent"),
    extra=lambda args: {"items": args.items, "frames": args.frames, "size": args.size, "width": args.width},
)  # fmt: skip
main = RECIPE.main


if __name__ == "__main__":
    main()
