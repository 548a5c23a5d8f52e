"""Latent text-to-video on Shapes: a DiT on the video autoencoder's latents, text through MiniLM.

The design's main path. Shapes clips (17 frames, 64x64, seed 0) go through the shipped causal
video VAE (``mediadiff/weights/video_vae_shapes``: 17x64x64 -> 8x5x16x16 latents) and captions
through the bundled all-MiniLM-L6-v2; both are encoded once into a latent cache. A small DiT
(3-D RoPE, adaLN-Zero, cross-attention; 1x2x2 patches, 320 tokens) learns rectified flow
(Liu et al. 2022) with t uniform in [0, 1] with 10% caption dropout for classifier-free
guidance. Every ``--sample-every`` steps the EMA weights generate clips for held-out captions and the
analytic detector's colour/shape/direction accuracies go to ``metrics.jsonl``.

    # the shipped model: encode the cache, align the text to the clips, train on top of it
    python recipes/video/shapes_dit.py --cache-only
    python recipes/video/align_text.py --cache runs/shapes_dit/cache -o runs/align/adapter.safetensors
    python recipes/video/shapes_dit.py --text-adapter runs/align/adapter.safetensors --sample-every 300 --max-steps 4400
    python recipes/video/shapes_dit.py --max-steps 200 --output-dir runs/dit_quick
    mediadiff train recipes/video/shapes_dit.py --resume
    python recipes/video/shapes_dit.py --export mediadiff/weights/t2v_shapes_dit   # newest checkpoint -> pipeline
    python recipes/video/shapes_dit.py --dry-run --memory-gb 8
    # LoRA: teach the shipped model two colours it never saw (README "LoRA"; benchmarks/lora.py scores it)
    python recipes/video/shapes_dit.py --init-from shapes-dit --colours all --items 4000 --max-steps 200 \
        --lora-rank 16 --lora-targets to_qkv to_q to_kv to_out context_embed context_adapter \
        --lr 1e-3 --warmup-steps 30 --checkpoint-every 100 --sample-every 200 --output-dir runs/lora_colours
    mediadiff generate video "an orange circle moving up" --lora runs/lora_colours/lora.safetensors -o orange.gif
"""

from __future__ import annotations

from mediadiff.diffusion import FlowSchedule
from mediadiff.pipelines import VideoPipeline, export_run
from mediadiff.text import load_text_encoder
from mediadiff.train.recipe import Parts, Recipe
from mediadiff.train.text import (
    add_text_recipe_args,
    fit_pooled_norm,
    install_text_adapter,
    load_text_adapter,
)
from mediadiff.video import ALL_COLOURS, COLOURS, SHAPES_VAE_DIR, DiT, Shapes, load_autoencoder
from mediadiff.video.shapes_eval import check_shapes_args, periodic_eval, training_captions

FRAMES, SIZE = 17, 64


def add_args(g) -> None:
    """This recipe's data, model and evaluation flags (the cache and export flags come with the Recipe)."""
    g.add_argument(
        "--items", type=int, default=24_000, help="Shapes clips encoded into the cache (one epoch)"
    )
    g.add_argument("--width", type=int, default=128, help="DiT token width")
    g.add_argument("--depth", type=int, default=6, help="DiT blocks")
    g.add_argument("--heads", type=int, default=4, help="attention heads")
    g.add_argument("--autoencoder", default=str(SHAPES_VAE_DIR), help="video autoencoder folder")
    g.add_argument(
        "--colours",
        nargs="+",
        default=list(COLOURS),
        choices=[*ALL_COLOURS, "all"],
        metavar="COLOUR",
        help=f"object colours of the clips (default the six the shipped model knows; 'all': {', '.join(ALL_COLOURS)})",
    )
    g.add_argument(
        "--text-adapter",
        default=None,
        help="frozen TokenAdapter weights from recipes/video/align_text.py, put in front of the text pathway",
    )
    add_text_recipe_args(g)


def build(args) -> Parts:
    """Dataset, frozen autoencoder and text encoder, the backbone and the periodic evaluation."""
    autoencoder = load_autoencoder(args.autoencoder).eval().requires_grad_(False)
    text_encoder = load_text_encoder(args.text_encoder)
    adapter = load_text_adapter(args.text_adapter) if args.text_adapter else None
    latent_channels = autoencoder.latent_shape((1, 3, FRAMES, SIZE, SIZE))[1]
    backbone = DiT(
        in_channels=latent_channels,
        patch=(1, 2, 2),
        width=args.width,
        depth=args.depth,
        heads=args.heads,
        context_dim=text_encoder.dim,
        pooled_context_norm=args.pooled_norm,
        context_pool=args.context_pool,
        context_adapter_hidden=adapter["mlp.0.weight"].shape[0] if adapter else 0,
    )
    if adapter:
        install_text_adapter(backbone, adapter)
    colours = colour_set(args)
    dataset = Shapes(length=args.items, num_frames=FRAMES, size=SIZE, seed=args.data_seed, colours=colours)
    if args.pooled_norm:
        fit_pooled_norm(backbone, text_encoder, training_captions(args.data_seed))
    return Parts(
        dataset, backbone, FlowSchedule(), "flow", data_key="video", autoencoder=autoencoder,
        text_encoder=text_encoder, t_sampler=args.t_sampler,
        pipeline_defaults={"num_frames": FRAMES, "height": SIZE, "width": SIZE, "guidance_scale": args.guidance},
        evaluate=periodic_eval(
            num_frames=FRAMES, size=SIZE, num=args.eval_num, guidance_scale=args.guidance, colours=colours
        ),
    )  # fmt: skip


def colour_set(args) -> tuple[str, ...]:
    """The ``--colours`` asked for, ``all`` standing for every colour Shapes can draw."""
    return ALL_COLOURS if "all" in args.colours else tuple(dict.fromkeys(args.colours))


def extra(args) -> dict:
    """What config.json records of this recipe's flags."""
    return {
        "items": args.items,
        "data_seed": args.data_seed,
        "frames": FRAMES,
        "t_sampler": args.t_sampler,
        "pooled_norm": args.pooled_norm,
        "context_pool": args.context_pool,
        "text_adapter": args.text_adapter,
        "size": SIZE,
        "colours": list(colour_set(args)),
        "width": args.width,
        "depth": args.depth,
        "heads": args.heads,
        "autoencoder": args.autoencoder,
        "text_encoder": args.text_encoder,
    }


RECIPE = Recipe(
    "recipes/video/shapes_dit.py", __doc__, add_args=add_args, build=build, extra=extra,
    defaults=dict(max_steps=2900, batch_size=32, lr=3e-4, warmup_steps=200, checkpoint_every=300,
                  sample_every=600, ema_decay=0.999, output_dir="runs/shapes_dit"),
    check=check_shapes_args, cache="{output_dir}/cache", pipeline=VideoPipeline, export=export_run,
)  # fmt: skip
main = RECIPE.main


if __name__ == "__main__":
    main()
