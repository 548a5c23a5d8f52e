"""Pixel-space text-to-video on Shapes: a factorised (2+1)-D UNet3D on 8-frame 32x32 clips.

No autoencoder: the U-Net denoises RGB pixels directly. Captions go through the bundled
all-MiniLM-L6-v2 (pooled text modulates every residual block by AdaGN, tokens enter by
cross-attention at 8x8). Every residual block has a temporal convolution; temporal attention
with frame-index embeddings runs at 16x16 and 8x8. Rectified flow (Liu et al. 2022) with
t uniform in [0, 1], 10% caption dropout for classifier-free guidance, EMA weights.
Clips are rendered on the fly (Shapes seed 0; the evaluation stream is seed 12345). Every
``--sample-every`` steps the EMA weights generate clips for held-out captions and the analytic
detector's colour/shape/direction accuracies go to ``metrics.jsonl``.

    python recipes/video/shapes_unet3d.py                  # the shipped model's recipe
    python recipes/video/shapes_unet3d.py --max-steps 200 --output-dir runs/unet_quick
    python recipes/video/shapes_unet3d.py --coords --context-pool attention --output-dir runs/unet_variant
    mediadiff train recipes/video/shapes_unet3d.py --resume
    python recipes/video/shapes_unet3d.py --export mediadiff/weights/t2v_shapes_unet3d   # newest checkpoint -> pipeline
    python recipes/video/shapes_unet3d.py --dry-run --memory-gb 8

The shipped model was made in three resumed sessions (resume is exact); the README tells what changed
between them.
"""

from __future__ import annotations

import argparse

from mediadiff.diffusion import FlowSchedule
from mediadiff.pipelines import VideoPipeline, export_run
from mediadiff.text import load_text_encoder
from mediadiff.train.recipe import Parts, Recipe
from mediadiff.train.text import add_text_recipe_args, fit_pooled_norm
from mediadiff.video import IdentityAutoencoder, Shapes, UNet3D, shapes_eval

FRAMES, SIZE = 8, 32


def add_args(g) -> None:
    """This recipe's model and evaluation flags (the export flag comes with the Recipe)."""
    g.add_argument("--channels", type=int, default=32, help="width of the first U-Net level")
    g.add_argument(
        "--channel-mult", type=int, nargs="+", default=[1, 2, 2], help="width multiplier per level"
    )
    g.add_argument(
        "--coords",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="give the U-Net (frame, row, column) coordinate channels (UNet3DConfig.coord_channels)",
    )
    add_text_recipe_args(g)


def build(args) -> Parts:
    """Dataset, text encoder, the backbone in pixel space and the periodic evaluation."""
    text_encoder = load_text_encoder(args.text_encoder)
    levels = len(args.channel_mult)
    backbone = UNet3D(
        in_channels=3,
        channels=args.channels,
        channel_mult=tuple(args.channel_mult),
        num_res_blocks=1,
        attention_levels=tuple(i == levels - 1 for i in range(levels)),  # spatial + cross at the lowest level
        temporal_attention_levels=tuple(i > 0 for i in range(levels)),
        head_dim=32,
        norm_groups=8,
        mlp_ratio=2.0,
        context_dim=text_encoder.dim,
        pooled_context_norm=args.pooled_norm,
        context_pool=args.context_pool,
        coord_channels=args.coords,
    )
    # nominal epoch; clips are rendered on the fly, any index is valid
    dataset = Shapes(length=100_000, num_frames=FRAMES, size=SIZE, seed=args.data_seed)
    if args.pooled_norm:
        fit_pooled_norm(backbone, text_encoder, shapes_eval.training_captions(args.data_seed))
    evaluate = shapes_eval.periodic_eval(
        num_frames=FRAMES, size=SIZE, num=args.eval_num, guidance_scale=args.guidance
    )
    defaults = {"num_frames": FRAMES, "height": SIZE, "width": SIZE, "guidance_scale": args.guidance}
    # pixel space: the identity "autoencoder" trains on the clips themselves and decodes them as they are
    return Parts(
        dataset, backbone, FlowSchedule(), "flow", data_key="video", autoencoder=IdentityAutoencoder(),
        text_encoder=text_encoder, t_sampler=args.t_sampler, pipeline_defaults=defaults, evaluate=evaluate,
    )  # fmt: skip


RECIPE = Recipe(
    "recipes/video/shapes_unet3d.py", __doc__, add_args=add_args, build=build,
    defaults=dict(max_steps=2100, batch_size=16, lr=3e-4, warmup_steps=200, checkpoint_every=200,
                  sample_every=400, ema_decay=0.999, output_dir="runs/shapes_unet3d"),
    extra=lambda args: {  # what config.json records of the flags
        "data_seed": args.data_seed, "frames": FRAMES, "t_sampler": args.t_sampler, "pooled_norm": args.pooled_norm,
        "context_pool": args.context_pool, "coords": args.coords, "size": SIZE, "channels": args.channels,
        "channel_mult": list(args.channel_mult), "text_encoder": args.text_encoder,
    },
    check=shapes_eval.check_shapes_args, pipeline=VideoPipeline, export=export_run,
)  # fmt: skip
main = RECIPE.main


if __name__ == "__main__":
    main()
