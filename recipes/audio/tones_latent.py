"""Latent text-to-audio on Tones: a 1-D DiT (or UNet1D) on the waveform autoencoder's latents, text through MiniLM.

The design's main path for audio, and the default shipped model. Tones notes (16384 samples at
16 kHz, seed 0) go through the shipped waveform VAE (``mediadiff/weights/audio_vae_tones``: 16384
samples -> 16x64 latents) and captions through the bundled all-MiniLM-L6-v2; both are encoded once
into a latent cache. A small DiT1D (1-D RoPE over the 64 latent frames, adaLN-Zero, cross-attention
to the text tokens) learns rectified flow (Liu et al. 2022) with t uniform in [0, 1] and 10% caption
dropout for classifier-free guidance. Every ``--sample-every`` steps the EMA weights generate notes
for held-out captions, and the detector's pitch / contour / waveform accuracies go to
``metrics.jsonl`` with a spectrogram picture.

    # the shipped model: encode the cache, align the text to the notes, train on top of it
    python recipes/audio/tones_latent.py --cache-only
    python recipes/video/align_text.py --cache runs/tones_latent/cache -o runs/align_tones/adapter.safetensors
    python recipes/audio/tones_latent.py --text-adapter runs/align_tones/adapter.safetensors
    python recipes/audio/tones_latent.py --export mediadiff/weights/t2a_tones_dit   # newest checkpoint -> pipeline
    python recipes/audio/tones_latent.py --backbone unet --output-dir runs/tones_unet1d
    python recipes/audio/tones_latent.py --max-steps 200 --output-dir runs/tones_quick
    mediadiff train recipes/audio/tones_latent.py --resume
    # LoRA: teach the shipped model the two notes above its range (README "LoRA"; benchmarks/lora.py scores it)
    python recipes/audio/tones_latent.py --init-from tones-dit --pitches all --items 4000 --max-steps 200 \
        --lora-rank 16 --lora-targets to_qkv to_q to_kv to_out context_embed context_adapter \
        --lr 1e-3 --warmup-steps 30 --checkpoint-every 100 --sample-every 200 --output-dir runs/lora_pitches
    mediadiff generate audio "a sine tone at D5, steady" --lora runs/lora_pitches/lora.safetensors -o d5.wav
"""

from __future__ import annotations

from mediadiff.audio import ALL_PITCHES, PITCHES, DiT1D, Tones, UNet1D, load_autoencoder
from mediadiff.audio.autoencoder import TONES_VAE_DIR
from mediadiff.audio.evaluate import check_tones_args, periodic_eval, training_captions
from mediadiff.diffusion import FlowSchedule
from mediadiff.pipelines import AudioPipeline, export_run
from mediadiff.text import load_text_encoder
from mediadiff.train.recipe import Parts, Recipe
from mediadiff.train.text import (
    add_text_recipe_args,
    fit_pooled_norm,
    install_text_adapter,
    load_text_adapter,
)

SAMPLES, RATE = 16384, 16000  # one clip: 1.02 s at 16 kHz


def add_args(g) -> None:
    """This recipe's data, model and evaluation flags (the cache and export flags come with the Recipe)."""
    g.add_argument("--items", type=int, default=20_000, help="Tones notes encoded into the cache (one epoch)")
    g.add_argument("--backbone", choices=["dit", "unet"], default="dit", help="DiT1D or UNet1D")
    g.add_argument("--width", type=int, default=128, help="DiT token width / UNet1D first-level channels")
    g.add_argument(
        "--patch", type=int, default=2, help="DiT latent frames per token (64 frames -> 32 tokens)"
    )
    g.add_argument("--depth", type=int, default=6, help="DiT blocks")
    g.add_argument("--heads", type=int, default=4, help="DiT attention heads")
    g.add_argument("--autoencoder", default=str(TONES_VAE_DIR), help="audio autoencoder folder")
    g.add_argument(
        "--pitches",
        choices=["base", "all"],
        default="base",
        help="start notes: base = C3..C5, the shipped model's range; all = also C#5 and D5 (EXTRA_PITCHES)",
    )
    g.add_argument(
        "--text-adapter",
        default=None,
        help="frozen TokenAdapter weights from recipes/video/align_text.py, put in front of the text pathway",
    )
    add_text_recipe_args(g)


def build_backbone(args, latent_channels: int, context_dim: int, adapter_hidden: int):
    """The DiT1D (``--patch`` latent frames per token) or the UNet1D (two levels, attention at both)."""
    text = {
        "context_dim": context_dim,
        "pooled_context_norm": args.pooled_norm,
        "context_pool": args.context_pool,
        "context_adapter_hidden": adapter_hidden,
    }
    if args.backbone == "dit":
        return DiT1D(
            in_channels=latent_channels,
            patch=(1,),
            width=args.width,
            depth=args.depth,
            heads=args.heads,
            **text,
        )
    return UNet1D(
        in_channels=latent_channels,
        patch=1,
        channels=args.width,
        channel_mult=(1, 2),
        num_res_blocks=2,
        attention_levels=(True, True),
        head_dim=32,
        norm_groups=8,
        **text,
    )


def build(args) -> Parts:
    """Dataset, frozen autoencoder and text encoder, the backbone and the periodic evaluation."""
    autoencoder = load_autoencoder(args.autoencoder).eval().requires_grad_(False)
    text_encoder = load_text_encoder(args.text_encoder)
    adapter = load_text_adapter(args.text_adapter) if args.text_adapter else None
    latent_channels = autoencoder.latent_shape((1, 1, SAMPLES))[1]
    backbone = build_backbone(
        args, latent_channels, text_encoder.dim, adapter["mlp.0.weight"].shape[0] if adapter else 0
    )
    if adapter:
        install_text_adapter(backbone, adapter)
    pitches = ALL_PITCHES if args.pitches == "all" else PITCHES
    dataset = Tones(
        length=args.items, sample_rate=RATE, num_samples=SAMPLES, seed=args.data_seed, pitches=pitches
    )
    if args.pooled_norm:
        fit_pooled_norm(backbone, text_encoder, training_captions(args.data_seed))
    return Parts(
        dataset, backbone, FlowSchedule(), "flow", data_key="audio", autoencoder=autoencoder,
        text_encoder=text_encoder, t_sampler=args.t_sampler,
        pipeline_defaults={"num_samples": SAMPLES, "sample_rate": RATE, "guidance_scale": args.guidance},
        evaluate=periodic_eval(num_samples=SAMPLES, num=args.eval_num, guidance_scale=args.guidance, pitches=pitches),
    )  # fmt: skip


def extra(args) -> dict:
    """What config.json records of this recipe's flags."""
    return {
        "items": args.items, "data_seed": args.data_seed, "num_samples": SAMPLES, "sample_rate": RATE,
        "backbone": args.backbone, "patch": args.patch, "width": args.width, "depth": args.depth, "heads": args.heads,
        "t_sampler": args.t_sampler, "pooled_norm": args.pooled_norm, "context_pool": args.context_pool,
        "text_adapter": args.text_adapter, "autoencoder": args.autoencoder, "text_encoder": args.text_encoder,
        "pitches": args.pitches,
    }  # fmt: skip


RECIPE = Recipe(
    "recipes/audio/tones_latent.py", __doc__, add_args=add_args, build=build, extra=extra, check=check_tones_args,
    defaults=dict(max_steps=4500, batch_size=64, lr=3e-4, warmup_steps=200, checkpoint_every=500,
                  sample_every=500, ema_decay=0.999, mixed_precision="no", output_dir="runs/tones_latent"),
    cache="{output_dir}/cache", pipeline=AudioPipeline, export=export_run,
)  # fmt: skip
main = RECIPE.main


if __name__ == "__main__":
    main()
