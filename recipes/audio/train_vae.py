"""Train the waveform VAE (``mediadiff.audio.autoencoder.WaveformVAE``), or diffusers' Oobleck by the same recipe.

    python recipes/audio/train_vae.py --output-dir runs/audio_vae --max-minutes 45              # on Tones
    python recipes/audio/train_vae.py --data path/to/clips --output-dir runs/my_vae              # a folder
    python recipes/audio/train_vae.py --output-dir runs/audio_vae --max-minutes 60 --resume
    python recipes/audio/train_vae.py --arch oobleck --output-dir runs/oobleck --max-minutes 45  # reference

Loss: ``--mrstft-weight`` times the multi-resolution STFT loss (Yamamoto et al. 2020, Eqs. 4-6),
``--mel-weight`` times the log-mel L1 (HiFi-GAN, Eq. 4), ``--l1-weight`` times the waveform L1, and
``--kl-weight`` times the KL divergence of the diagonal Gaussian posterior to ``N(0, I)`` per latent
element (Kingma & Welling 2014, Eq. 10) -- the terms of Stable Audio's autoencoder (Evans et al. 2024,
Sec. 3.1) -- plus, with ``--adversarial-from S``, a multi-resolution STFT discriminator (hinge, feature
matching) from step S.

With ``--head vocoder`` (a log-mel decoded and rendered by a Vocoder inside the VAE, ``--vocoder DIR``
to start it from a trained one, ``--freeze-vocoder`` to keep it), ``--decoded-mel-weight`` adds an L1
between the decoded log-mel and the input's. With the waveform weights at 0 the vocoder does not run
in training at all (the shipped VAE: a code of the log-mel, which its trained vocoder renders):

    python recipes/audio/train_vae.py --output-dir runs/vae_mel --analysis mel --patch 256 --strides '' \
        --decoder-strides '' --channels 128 --head vocoder --vocoder mediadiff/weights/audio_vocoder_tones \
        --freeze-vocoder --decoded-mel-weight 3 --decoded-sc-weight 0.5 --mrstft-weight 0 --mel-weight 0 \
        --l1-weight 0 --crop 16384 --max-steps 7500 --max-minutes 16 --threads 1

Data: as ``recipes/audio/train_vocoder.py``: Tones with the training ``--seed`` (held-out seed
refused), or ``--data DIR``; each step sees a random ``--crop`` of every clip, aligned to the latent
frame. At the end the latent shift / scale is measured on ``--stats-clips`` training clips and stored
in the model's config, so ``encode`` gives near unit-variance latents.

``--arch oobleck`` trains diffusers' ``AutoencoderOobleck`` (wrapped by
:class:`~mediadiff.audio.autoencoder.OobleckVAE`) with the same data, losses and schedule, for the
side-by-side comparison in ``benchmarks/audio_autoencoders.py``; ``--strides`` then sets its
``downsampling_ratios`` (channel multiples 1, 2, 4, ...), the first ``--channels`` entry its
``decoder_channels`` and ``--latent-channels`` its latent width. Compare at the same ratio and latent
width: a 4x Oobleck with 16 latent channels stores 4 numbers per sample and keeps every note.
"""

from __future__ import annotations

import argparse

import torch

from mediadiff.audio.autoencoder import (
    ANALYSES,
    HEADS,
    OobleckVAE,
    OobleckVAEConfig,
    WaveformVAE,
    WaveformVAEConfig,
    load_autoencoder,
)
from mediadiff.audio.losses import MultiResolutionSTFTLoss, mel_loss, si_sdr, spectral_convergence
from mediadiff.audio.mel import LogMel, MelConfig
from mediadiff.audio.training import (
    add_data_arguments,
    add_gan_arguments,
    audio_collate,
    build_audio_data,
    build_discriminator,
    discriminator_terms,
    gan_terms,
    heldout_seed,
    random_crop,
    tone_scores,
)
from mediadiff.audio.vocoder import PHASES, Vocoder
from mediadiff.train.autoencoder import (
    AutoencoderRecipe,
    LossContext,
    LossOutput,
    add_arguments,
    latent_stats,
    parse_and_check,
    train,
)
from mediadiff.utils import ArgumentParser  # one-line errors, exit code 2

_MRSTFT = MultiResolutionSTFTLoss()
_MEL = LogMel()


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def build(args: argparse.Namespace):
    if args.arch == "oobleck":
        return OobleckVAE(
            OobleckVAEConfig(
                latent_channels=args.latent_channels,
                encoder_hidden_size=2 * args.latent_channels,
                decoder_channels=_ints(args.channels)[0],
                downsampling_ratios=_ints(args.strides),
                channel_multiples=tuple(2**i for i in range(len(_ints(args.strides)))),
                sample_rate=args.sample_rate,
            )
        )
    vocoder = Vocoder.from_pretrained(args.vocoder) if args.vocoder else None
    mel = (
        vocoder.config.mel
        if vocoder is not None
        else MelConfig(sample_rate=args.sample_rate, n_mels=args.n_mels)
    )
    vae = WaveformVAE(
        WaveformVAEConfig(
            latent_channels=args.latent_channels,
            patch=args.patch,
            strides=_ints(args.strides),
            decoder_strides=None if args.decoder_strides == "mirror" else _ints(args.decoder_strides),
            channels=_ints(args.channels),
            analysis=args.analysis,
            dilations=_ints(args.dilations),
            decoder_dilations=_ints(args.decoder_dilations),
            weight_norm=args.weight_norm,
            head=args.head,
            phase=args.phase,
            head_blocks=args.head_blocks,
            mel=mel,
            vocoder=vocoder.config if vocoder is not None else None,
        )
    )
    if vocoder is not None:
        vae.vocoder.load_state_dict(vocoder.state_dict())
    return vae


def prepare(model, args: argparse.Namespace) -> None:
    """``--freeze-vocoder``: the vocoder head keeps its (pretrained) weights; gradients still flow through it."""
    if args.freeze_vocoder:
        model.vocoder.requires_grad_(False)


def check(model, args: argparse.Namespace) -> None:
    for length in (args.crop, args.num_samples):  # fail early on sizes the autoencoder cannot take
        model.latent_shape((1, 1, length))


def loss(model, x: torch.Tensor, ctx: LossContext) -> LossOutput:
    args = ctx.args
    vae = ctx.accelerator.unwrap_model(model)
    x = random_crop(x, args.crop, vae.config.ratio, ctx.generator)  # [b c crop]
    render = bool(args.mrstft_weight or args.mel_weight or args.l1_weight or ctx.discriminator is not None)
    decoded = None
    with ctx.accelerator.autocast():
        if getattr(vae.config, "head", None) == "vocoder":
            rec, posterior, decoded = model(
                x, sample=True, generator=ctx.generator, with_mel=True, render=render
            )  # [b c crop] (None without render), posterior, [b c m crop/hop]
        else:
            rec, posterior = model(x, sample=True, generator=ctx.generator)  # [b c crop]
    kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent element
    total = args.kl_weight * kl
    logs = {"kl": kl.detach()}
    if render:
        rec = rec.float()
        stft = _MRSTFT(rec, x)
        mel_l1 = mel_loss(_MEL.to(x.device)(rec), _MEL(x))
        l1 = (rec - x).abs().mean()
        total = total + args.mrstft_weight * stft + args.mel_weight * mel_l1 + args.l1_weight * l1
        logs |= {"mrstft": stft.detach(), "mel_l1": mel_l1.detach(), "l1": l1.detach()}
    if args.decoded_mel_weight or args.decoded_sc_weight:  # the vocoder head's input against the input's
        target = vae.vocoder.mel_of(x)  # [b c m crop/hop] log-mel in the same analysis
    if args.decoded_mel_weight:
        decoded_l1 = mel_loss(decoded, target)
        total = total + args.decoded_mel_weight * decoded_l1
        logs["decoded_mel_l1"] = decoded_l1.detach()
    if args.decoded_sc_weight:  # the same, as magnitudes: weighs the loud bands, where the partials are
        mel = vae.vocoder.log_mel
        sc = spectral_convergence(mel.denormalize(decoded.float()).exp(), mel.denormalize(target).exp())
        total = total + args.decoded_sc_weight * sc
        logs["decoded_mel_sc"] = sc.detach()
    if ctx.discriminator is not None:
        total, logs = gan_terms(total, logs, x, rec, ctx)
    return LossOutput(total, logs, real=x, fake=rec)


@torch.no_grad()
def evaluate(model, heldout, args: argparse.Namespace, accelerator) -> dict[str, float]:
    clips, outputs, items = [], [], []
    for start in range(0, len(heldout), args.batch_size):
        batch = [heldout[i] for i in range(start, min(len(heldout), start + args.batch_size))]
        x = audio_collate(batch).to(accelerator.device)  # [b c t]
        with accelerator.autocast():
            y = model.decode(model.encode(x)).float()  # [b c t]
        clips.append(x.cpu())
        outputs.append(y.cpu())
        items += batch
    x, y = torch.cat(clips), torch.cat(outputs)
    result = {
        "eval_mrstft": _MRSTFT(y, x).item(),
        "eval_si_sdr": si_sdr(y, x).mean().item(),
        "eval_mel_l1": mel_loss(_MEL(y), _MEL(x)).item(),
    }
    return result | tone_scores(y, items, args)


def finalize(model, train_data, args: argparse.Namespace, accelerator) -> None:
    """The final model's latent shift / scale, measured on ``--stats-clips`` training clips."""
    clips = min(args.stats_clips, len(train_data))
    model.set_latent_stats(
        *latent_stats(model, train_data, audio_collate, clips, args.batch_size, accelerator.device)
    )


RECIPE = AutoencoderRecipe(
    script="recipes/audio/train_vae.py",
    name="train audio vae",
    build=build,
    load=load_autoencoder,
    data=build_audio_data,
    collate=audio_collate,
    loss=loss,
    evaluate=evaluate,
    main_metric="eval_mrstft",
    higher_is_better=False,
    check=check,
    prepare=prepare,
    discriminator=build_discriminator,
    discriminator_loss=lambda d, real, fake, ctx: LossOutput(*discriminator_terms(d, real, fake, ctx)),
    finalize=finalize,
    heldout_seed=heldout_seed,
    summary=lambda args: {"data": args.data, "arch": args.arch, "train_seed": args.seed, "crop": args.crop},
    progress={"mrstft": "{mrstft:.3f}"},
)


def main(argv: list[str] | None = None) -> dict:
    """Train with the command line ``argv`` (default ``sys.argv[1:]``); returns ``training.json``'s summary."""
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_arguments(
        parser,
        defaults={"max_steps": 8000, "batch_size": 16, "lr": 1e-3, "warmup_steps": 100, "eval_every": 1000},
        adversarial=True,
    )
    add_data_arguments(parser, crop=4096)
    parser.add_argument("--arch", choices=["waveform", "oobleck"], default="waveform")
    # architecture (ignored on --resume, which reads the checkpoint's config)
    default = WaveformVAEConfig()
    parser.add_argument("--latent-channels", type=int, default=default.latent_channels)
    parser.add_argument("--patch", type=int, default=default.patch, help="samples folded into channels")
    parser.add_argument("--strides", default=",".join(map(str, default.strides)), help="encoder strides")
    parser.add_argument(
        "--decoder-strides",
        default=",".join(map(str, default.decoder_strides)),
        help="decoder up-sampling strides ('' decodes at the latent rate, 'mirror' mirrors --strides)",
    )
    parser.add_argument("--channels", default=",".join(map(str, default.channels)), help="width per level")
    parser.add_argument(
        "--analysis",
        choices=list(ANALYSES),
        default=default.analysis,
        help="encoder input (mel: the log-mel of --n-mels, or of --vocoder's; needs --patch = its hop)",
    )
    parser.add_argument("--n-mels", type=int, default=default.mel.n_mels, help="mel bands of --analysis mel")
    parser.add_argument(
        "--dilations",
        default=",".join(map(str, default.dilations)),
        help="encoder Snake residual units per level",
    )
    parser.add_argument(
        "--decoder-dilations",
        default=",".join(map(str, default.decoder_dilations)),
        help="decoder Snake residual units per level",
    )
    parser.add_argument(
        "--weight-norm",
        action=argparse.BooleanOptionalAction,
        default=default.weight_norm,
        help="weight-normalised convolutions",
    )
    parser.add_argument(
        "--head",
        choices=list(HEADS),
        default=default.head,
        help="decoder output (vocoder: a log-mel rendered by a Vocoder inside the VAE)",
    )
    parser.add_argument(
        "--vocoder",
        default=None,
        help="a trained Vocoder folder for --head vocoder (its weights start the head, its mel is the "
        "analysis'); e.g. mediadiff/weights/audio_vocoder_tones",
    )
    parser.add_argument(
        "--freeze-vocoder",
        action="store_true",
        help="keep the vocoder head's weights fixed (gradients still flow through it to the decoder)",
    )
    parser.add_argument(
        "--phase",
        choices=list(PHASES),
        default=default.phase,
        help="the ISTFT head's phase model (integrated: phase advances summed over frames, see ISTFTHead)",
    )
    parser.add_argument("--head-blocks", type=int, default=default.head_blocks)
    # losses
    parser.add_argument("--mel-weight", type=float, default=5.0, help="weight of the log-mel L1")
    parser.add_argument(
        "--l1-weight",
        type=float,
        default=1.0,
        help="weight of the waveform L1 (use 0 with --head istft --phase integrated: an integrated phase "
        "starts each crop at phase 0, so it cannot match the waveform sample by sample)",
    )
    parser.add_argument(
        "--mrstft-weight", type=float, default=1.0, help="weight of the multi-resolution STFT loss"
    )
    parser.add_argument(
        "--decoded-mel-weight",
        type=float,
        default=0.0,
        help="weight of the L1 between the decoded log-mel (the vocoder head's input) and the input's",
    )
    parser.add_argument(
        "--decoded-sc-weight",
        type=float,
        default=0.0,
        help="weight of the spectral convergence of the decoded mel magnitudes against the input's",
    )
    parser.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the KL per latent element")
    add_gan_arguments(parser)
    parser.add_argument(
        "--stats-clips", type=int, default=256, help="training clips for the latent shift/scale"
    )
    args = parse_and_check(parser, RECIPE, argv)
    used = [flag for flag, on in [("--vocoder", args.vocoder), ("--freeze-vocoder", args.freeze_vocoder),
                                  ("--decoded-mel-weight", args.decoded_mel_weight),
                                  ("--decoded-sc-weight", args.decoded_sc_weight)] if on]  # fmt: skip
    if used and (args.arch != "waveform" or args.head != "vocoder"):
        parser.error(f"{', '.join(used)} need --head vocoder (got --arch {args.arch} --head {args.head})")
    if not (
        args.mrstft_weight
        or args.mel_weight
        or args.l1_weight
        or args.decoded_mel_weight
        or args.decoded_sc_weight
    ):
        parser.error("every reconstruction weight is 0: nothing to learn")
    return train(args, RECIPE, argv=argv)


if __name__ == "__main__":
    main()
