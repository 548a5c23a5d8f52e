"""Latent text-to-video on your own captioned videos: a DiT on a video autoencoder's latents.

A template to copy. Point ``--data`` at a folder of videos (mp4, webm, mov, mkv, avi, gif; in
subfolders too) with captions in ``metadata.jsonl`` / ``metadata.csv`` or ``.txt`` sidecars (see
:class:`mediadiff.video.VideoFolder`). Clips of ``--frames`` frames (1 + 4k for the causal VAE) are
cropped to ``--size``, encoded by the video autoencoder (``--autoencoder``: the shipped Shapes VAE by
default, which knows only flat shapes on black; train one on your videos first with
``python recipes/video/train_vae.py --data DIR``) and captions by MiniLM. The DiT learns rectified
flow with caption dropout for classifier-free guidance; ``--sample-every`` steps it writes a GIF grid
for ``--prompt`` (default: the first captions of the folder). Unreadable files are skipped, counted
and named in the log; they never stop a run.

    python recipes/video/train_vae.py --data my_videos --output-dir runs/my_vae
    python recipes/video/folder.py --data my_videos --autoencoder runs/my_vae/final --output-dir runs/my_t2v
    python recipes/video/folder.py --data my_videos --cache cache/my_videos   # encode once, then train
    mediadiff train recipes/video/folder.py --data my_videos --resume
    python recipes/video/folder.py --data my_videos --output-dir runs/my_t2v --export runs/my_t2v/pipeline
"""

from __future__ import annotations

from pathlib import Path

from mediadiff.diffusion import FlowSchedule
from mediadiff.pipelines import VideoPipeline, export_run
from mediadiff.text import load_text_encoder
from mediadiff.train.recipe import Parts, Recipe
from mediadiff.train.text import add_folder_text_args, install_text_adapter, load_text_adapter
from mediadiff.video import SHAPES_VAE_DIR, DiT, VideoFolder, load_autoencoder
from mediadiff.video.shapes_eval import save_grid


def add_args(g) -> None:
    """This recipe's data, model and sampling flags (the cache and export flags come with the Recipe)."""
    g.add_argument("--data", required=True, help="folder of captioned videos")
    g.add_argument("--frames", type=int, default=17, help="frames per clip (1 + 4k for the causal VAE)")
    g.add_argument("--size", type=int, default=64, help="height and width of the clips in pixels")
    g.add_argument("--stride", type=int, default=1, help="take every n-th source frame")
    g.add_argument("--width", type=int, default=256, help="DiT token width")
    g.add_argument("--depth", type=int, default=8, help="DiT blocks")
    g.add_argument("--heads", type=int, default=4, help="attention heads")
    g.add_argument("--autoencoder", default=str(SHAPES_VAE_DIR), help="video autoencoder folder")
    add_folder_text_args(g)


def build(args) -> Parts:
    """Dataset, frozen autoencoder and text encoder, the backbone and the sample grid."""
    autoencoder = load_autoencoder(args.autoencoder).eval().requires_grad_(False)
    text_encoder = load_text_encoder(args.text_encoder)
    try:
        latent = autoencoder.latent_shape((1, 3, args.frames, args.size, args.size))
    except ValueError as err:
        raise SystemExit(
            f"--frames {args.frames} / --size {args.size} do not suit {args.autoencoder}: {err}"
        ) from None
    dataset = VideoFolder(args.data, args.frames, args.size, stride=args.stride, seed=args.seed)
    adapter = load_text_adapter(args.text_adapter) if args.text_adapter else None
    backbone = DiT(
        in_channels=latent[1],
        patch=(1, 2, 2),
        width=args.width,
        depth=args.depth,
        heads=args.heads,
        context_dim=text_encoder.dim,
        context_adapter_hidden=adapter["mlp.0.weight"].shape[0] if adapter else 0,
    )
    if adapter:
        install_text_adapter(backbone, adapter)
    prompts = args.prompt or list(dict.fromkeys(c for _, c in dataset.items if c))[:4] or [""]

    def write_grid(pipeline, ctx) -> list[Path]:
        """A GIF grid for the sample prompts, generated with CFG by the (EMA) model."""
        frames = pipeline(prompts, seed=0).frames  # [n f h w 3]
        (Path(ctx.out_dir) / "prompts.txt").write_text("\n".join(prompts) + "\n")
        return [save_grid(frames, Path(ctx.out_dir) / "grid.gif", columns=4)]

    def report_skipped(trainer) -> None:
        if dataset.skipped:
            trainer.log(f"skipped {dataset.skipped} unreadable file(s): " + ", ".join(dataset.skipped_files))

    defaults = {
        "num_frames": args.frames,
        "height": args.size,
        "width": args.size,
        "guidance_scale": args.guidance,
    }
    return Parts(
        dataset, backbone, FlowSchedule(), "flow", data_key="video", autoencoder=autoencoder,
        text_encoder=text_encoder, pipeline_defaults=defaults, evaluate=write_grid, on_end=report_skipped,
    )  # fmt: skip


def extra(args) -> dict:
    """What config.json records of this recipe's flags."""
    return {
        "data": str(Path(args.data).resolve()), "frames": args.frames, "size": args.size, "stride": args.stride,
        "width": args.width, "depth": args.depth, "heads": args.heads, "autoencoder": args.autoencoder,
        "text_encoder": args.text_encoder, "text_adapter": args.text_adapter,
    }  # fmt: skip


RECIPE = Recipe(
    "recipes/video/folder.py", __doc__, add_args=add_args, build=build, extra=extra,
    defaults=dict(max_steps=10_000, batch_size=16, lr=2e-4, warmup_steps=500, checkpoint_every=500,
                  sample_every=1000, ema_decay=0.999, output_dir="runs/folder_dit"),
    cache=True, pipeline=VideoPipeline, export=export_run,
)  # fmt: skip
main = RECIPE.main


if __name__ == "__main__":
    main()
