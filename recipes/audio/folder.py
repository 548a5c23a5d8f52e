"""Latent text-to-audio on your own captioned audio: a 1-D DiT on a waveform autoencoder's latents.

A template to copy. Point ``--data`` at a folder of audio files (wav, flac, ogg, mp3, m4a, ...; in
subfolders too) with captions in ``metadata.jsonl`` / ``metadata.csv`` or ``.txt`` sidecars (see
:class:`mediadiff.audio.AudioFolder`). Clips of ``--seconds`` are cut at random places from each file
(shorter files are zero-padded), mixed to mono at the autoencoder's rate, encoded by the autoencoder
(``--autoencoder``: the shipped Tones VAE by default, which knows only synthetic notes; train one on
your audio first with ``python recipes/audio/train_vae.py --data DIR``) and captions by MiniLM. The
DiT learns rectified flow with caption dropout for classifier-free guidance; every ``--sample-every``
steps it writes a spectrogram picture and a wav per ``--prompt`` (default: the first captions of the
folder). Unreadable files are skipped, counted and named in the log; they never stop a run.

    python recipes/audio/train_vae.py --data my_sounds --output-dir runs/my_vae
    python recipes/audio/folder.py --data my_sounds --autoencoder runs/my_vae/final --output-dir runs/my_t2a
    python recipes/audio/folder.py --data my_sounds --cache cache/my_sounds   # encode once (one crop per file)
    mediadiff train recipes/audio/folder.py --data my_sounds --resume
    python recipes/audio/folder.py --data my_sounds --output-dir runs/my_t2a --export runs/my_t2a/pipeline
"""

from __future__ import annotations

from pathlib import Path

from mediadiff.audio import TONES_VAE_DIR, AudioFolder, DiT1D, load_autoencoder
from mediadiff.diffusion import FlowSchedule
from mediadiff.pipelines import AudioPipeline, export_run
from mediadiff.text import load_text_encoder
from mediadiff.train.recipe import Parts, Recipe
from mediadiff.train.text import add_folder_text_args, install_text_adapter, load_text_adapter


def add_args(g) -> None:
    """This recipe's data, model and sampling flags (the cache and export flags come with the Recipe)."""
    g.add_argument("--data", required=True, help="folder of captioned audio files")
    g.add_argument(
        "--seconds", type=float, default=1.024, help="clip length (rounded to whole latent frames)"
    )
    g.add_argument("--patch", type=int, default=2, help="DiT latent frames per token")
    g.add_argument("--width", type=int, default=256, help="DiT token width")
    g.add_argument("--depth", type=int, default=8, help="DiT blocks")
    g.add_argument("--heads", type=int, default=4, help="attention heads")
    g.add_argument("--autoencoder", default=str(TONES_VAE_DIR), help="audio autoencoder folder")
    add_folder_text_args(g)


def build(args) -> Parts:
    """Dataset, frozen autoencoder and text encoder, the backbone and the samples."""
    autoencoder = load_autoencoder(args.autoencoder).eval().requires_grad_(False)
    text_encoder = load_text_encoder(args.text_encoder)
    config = autoencoder.config
    rate = config.mel.sample_rate if hasattr(config, "mel") else config.sample_rate
    if not args.seconds > 0:
        raise SystemExit(f"--seconds must be > 0, got {args.seconds}")
    frames = -(-round(args.seconds * rate) // (config.ratio * args.patch)) * args.patch  # whole tokens
    num_samples = frames * config.ratio
    dataset = AudioFolder(args.data, sample_rate=rate, num_samples=num_samples, channels=1, seed=args.seed)
    adapter = load_text_adapter(args.text_adapter) if args.text_adapter else None
    backbone = DiT1D(
        in_channels=autoencoder.latent_shape((1, 1, num_samples))[1],
        patch=(args.patch,),
        width=args.width,
        depth=args.depth,
        heads=args.heads,
        context_dim=text_encoder.dim,
        context_adapter_hidden=adapter["mlp.0.weight"].shape[0] if adapter else 0,
    )
    if adapter:
        install_text_adapter(backbone, adapter)
    prompts = args.prompt or list(dict.fromkeys(c for _, c in dataset.items if c))[:4] or [""]

    def write_samples(pipeline, ctx) -> list[Path]:
        """A spectrogram picture and one wav per sample prompt, generated with CFG by the (EMA) model."""
        out = pipeline(prompts, seed=0)
        (Path(ctx.out_dir) / "prompts.txt").write_text("\n".join(prompts) + "\n")
        return [
            *out.save(Path(ctx.out_dir) / "spectrograms.png"),
            *out.save(Path(ctx.out_dir) / "sample.wav"),
        ]

    def report_skipped(trainer) -> None:
        if dataset.skipped:
            trainer.log(f"skipped {dataset.skipped} unreadable file(s): " + ", ".join(dataset.skipped_files))

    defaults = {"num_samples": num_samples, "sample_rate": rate, "guidance_scale": args.guidance}
    return Parts(
        dataset, backbone, FlowSchedule(), "flow", data_key="audio", autoencoder=autoencoder,
        text_encoder=text_encoder, pipeline_defaults=defaults, evaluate=write_samples, on_end=report_skipped,
    )  # fmt: skip


def extra(args) -> dict:
    """What config.json records of this recipe's flags."""
    return {
        "data": str(Path(args.data).resolve()), "seconds": args.seconds, "patch": args.patch,
        "width": args.width, "depth": args.depth, "heads": args.heads, "autoencoder": args.autoencoder,
        "text_encoder": args.text_encoder, "text_adapter": args.text_adapter,
    }  # fmt: skip


RECIPE = Recipe(
    "recipes/audio/folder.py", __doc__, add_args=add_args, build=build, extra=extra,
    defaults=dict(max_steps=10_000, batch_size=32, lr=2e-4, warmup_steps=500, checkpoint_every=500,
                  sample_every=1000, ema_decay=0.999, output_dir="runs/folder_t2a"),
    cache=True, pipeline=AudioPipeline, export=export_run,
)  # fmt: skip
main = RECIPE.main


if __name__ == "__main__":
    main()
