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
from mediadiff.train import SampleContext, Trainer, config_from_args, recipe_parser
from mediadiff.train.testing import HashTextEncoder, MovingSquares, TinyAutoencoder, TinyBackbone

PROMPTS = ["a red square moving right", "a blue square moving down"]


def build_parser():
    """The shared training flags plus this recipe's data, model and cache flags."""
    parser = recipe_parser(
        __doc__.splitlines()[0],
        max_steps=300,
        batch_size=8,
        lr=1e-3,
        warmup_steps=20,
        checkpoint_every=100,
        sample_every=0,
        output_dir="runs/tiny_latent",
    )
    g = parser.add_argument_group("tiny_latent")
    g.add_argument("--items", type=int, default=64, help="clips in the dataset")
    g.add_argument("--frames", type=int, default=8)
    g.add_argument("--size", type=int, default=16, help="height and width in pixels")
    g.add_argument("--width", type=int, default=32, help="backbone channels")
    g.add_argument("--ae-width", type=int, default=16, help="autoencoder channels")
    g.add_argument("--cache", default=None, help="latent + text cache folder (built on first use)")
    g.add_argument(
        "--cache-mismatch",
        choices=["rebuild", "error"],
        default="rebuild",
        help="what to do with a cache built by other parts",
    )
    g.add_argument("--guidance", type=float, default=3.0, help="CFG scale of the samples")
    return parser


def build(args) -> dict:
    """Dataset, autoencoder, text encoder and backbone (identical in every process: seeded)."""
    torch.manual_seed(args.seed)
    dataset = MovingSquares(args.items, num_frames=args.frames, size=args.size)
    autoencoder = TinyAutoencoder(latent_channels=4, width=args.ae_width, levels=1)
    text_encoder = HashTextEncoder(dim=16, seed=args.seed)
    backbone = TinyBackbone(channels=4, width=args.width, depth=2, context_dim=16, dims=3)
    return {
        "dataset": dataset,
        "autoencoder": autoencoder,
        "text_encoder": text_encoder,
        "backbone": backbone,
    }


def make_sample_fn(parts: dict, args):
    """Write one GIF per prompt, sampled with CFG from the (EMA) model."""
    schedule, autoencoder, text_encoder = FlowSchedule(), parts["autoencoder"], parts["text_encoder"]
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


def main(argv: list[str] | None = None):
    """Parse the command line, build the parts, then train (or ``--dry-run``)."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args, items=args.items, frames=args.frames, size=args.size, width=args.width)
    parts = build(args)
    trainer = Trainer(
        parts["backbone"],
        FlowSchedule(),
        parts["dataset"],
        config,
        prediction="flow",
        data_key="video",
        autoencoder=parts["autoencoder"],
        text_encoder=parts["text_encoder"],
        cache_dir=args.cache,
        cache_on_mismatch=args.cache_mismatch,
        sample_fn=make_sample_fn(parts, args),
        t_sampler="logit_normal",
    )
    return trainer.run(dry_run=args.dry_run, memory_gb=args.memory_gb)


if __name__ == "__main__":
    main()
