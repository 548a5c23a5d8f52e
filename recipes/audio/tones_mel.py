"""Mel-domain text-to-audio on Tones: the mel UNet2D on log-mel spectrograms, rendered by the trained vocoder.

The second audio path. Tones notes (16384 samples at 16 kHz, seed 0) become 128-band normalised
log-mel spectrograms of 64 frames (the analysis of the shipped vocoder,
``mediadiff/weights/audio_vocoder_tones``), standardised by their mean and spread over 256 training
clips (:class:`mediadiff.audio.MelAutoencoder`); a mel :class:`~mediadiff.audio.UNet2D` learns
rectified flow on them with 10% caption dropout, and a generated spectrogram goes back to audio through
the vocoder (``--renderer griffin_lim``: Griffin-Lim, no trained part at all). The periodic evaluation
logs pitch / contour / waveform accuracy as ``tones_latent.py`` does.

    python recipes/audio/tones_mel.py --cache-only
    python recipes/audio/tones_mel.py --max-steps 4000
    python recipes/audio/tones_mel.py --export mediadiff/weights/t2a_tones_mel
    python recipes/audio/tones_mel.py --renderer griffin_lim --output-dir runs/tones_mel_gl
"""

from __future__ import annotations

import torch

from mediadiff.audio import TONES_VOCODER_DIR, MelAutoencoder, Tones, UNet2D, Vocoder
from mediadiff.audio.evaluate import check_tones_args, periodic_eval, training_captions
from mediadiff.diffusion import FlowSchedule
from mediadiff.pipelines import AudioPipeline, export_run
from mediadiff.text import load_text_encoder
from mediadiff.train.recipe import Parts, Recipe
from mediadiff.train.text import add_text_recipe_args, fit_pooled_norm

SAMPLES, RATE = 16384, 16000  # one clip: 1.02 s at 16 kHz -> 128 x 64 log-mel
STATS_CLIPS = 256  # training clips that fix the spectrogram's shift and scale


def add_args(g) -> None:
    """This recipe's data, model and evaluation flags (the cache and export flags come with the Recipe)."""
    g.add_argument("--items", type=int, default=10_000, help="Tones notes encoded into the cache (one epoch)")
    g.add_argument("--channels", type=int, default=32, help="width of the first U-Net level")
    g.add_argument(
        "--channel-mult", type=int, nargs="+", default=[1, 2, 4], help="width multiplier per level"
    )
    g.add_argument("--vocoder", default=str(TONES_VOCODER_DIR), help="vocoder folder (renderer vocoder)")
    g.add_argument(
        "--renderer", choices=["vocoder", "griffin_lim"], default="vocoder", help="log-mel -> audio"
    )
    add_text_recipe_args(g)


def mel_autoencoder(args, dataset: Tones) -> MelAutoencoder:
    """The vocoder's analysis (or its mel with Griffin-Lim), standardised on the first training clips."""
    vocoder = Vocoder.from_pretrained(args.vocoder)
    if args.renderer == "vocoder":
        autoencoder = MelAutoencoder.from_vocoder(vocoder)
    else:
        autoencoder = MelAutoencoder(mel=vocoder.config.mel, renderer="griffin_lim")
    with torch.no_grad():
        mel = autoencoder.encode(torch.stack([dataset[i]["audio"] for i in range(STATS_CLIPS)]))  # [n 1 m f]
    autoencoder.set_latent_stats(mel.mean().view(1), (1.0 / mel.std()).view(1))
    return autoencoder.eval().requires_grad_(False)


def build(args) -> Parts:
    """Dataset, the mel autoencoder and text encoder, the backbone and the periodic evaluation."""
    text_encoder = load_text_encoder(args.text_encoder)
    dataset = Tones(length=args.items, sample_rate=RATE, num_samples=SAMPLES, seed=args.data_seed)
    autoencoder = mel_autoencoder(args, dataset)
    levels = len(args.channel_mult)
    backbone = UNet2D(
        channels=args.channels,
        channel_mult=tuple(args.channel_mult),
        num_res_blocks=1,
        attention_levels=tuple(i == levels - 1 for i in range(levels)),  # self + cross at the lowest level
        head_dim=min(32, args.channels),
        norm_groups=min(8, args.channels),
        context_dim=text_encoder.dim,
        pooled_context_norm=args.pooled_norm,
        context_pool=args.context_pool,
    )
    if args.pooled_norm:
        fit_pooled_norm(backbone, text_encoder, training_captions(args.data_seed))
    return Parts(
        dataset, backbone, FlowSchedule(), "flow", data_key="audio", autoencoder=autoencoder,
        text_encoder=text_encoder, t_sampler=args.t_sampler,
        pipeline_defaults={"num_samples": SAMPLES, "sample_rate": RATE, "guidance_scale": args.guidance},
        evaluate=periodic_eval(num_samples=SAMPLES, num=args.eval_num, guidance_scale=args.guidance),
    )  # fmt: skip


def extra(args) -> dict:
    """What config.json records of this recipe's flags."""
    return {
        "items": args.items, "data_seed": args.data_seed, "num_samples": SAMPLES, "sample_rate": RATE,
        "channels": args.channels, "channel_mult": list(args.channel_mult), "renderer": args.renderer,
        "vocoder": args.vocoder, "t_sampler": args.t_sampler, "pooled_norm": args.pooled_norm,
        "context_pool": args.context_pool, "text_encoder": args.text_encoder,
    }  # fmt: skip


RECIPE = Recipe(
    "recipes/audio/tones_mel.py", __doc__, add_args=add_args, build=build, extra=extra, check=check_tones_args,
    defaults=dict(max_steps=4000, batch_size=32, lr=3e-4, warmup_steps=200, checkpoint_every=500,
                  sample_every=500, ema_decay=0.999, output_dir="runs/tones_mel"),
    cache="{output_dir}/cache", pipeline=AudioPipeline, export=export_run,
)  # fmt: skip
main = RECIPE.main


if __name__ == "__main__":
    main()
