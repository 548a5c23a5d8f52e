"""Train the Vocos-style vocoder (``mediadiff.audio.vocoder.Vocoder``): log-mel -> waveform.

    python recipes/audio/train_vocoder.py --output-dir runs/vocoder --max-minutes 30        # on Tones
    python recipes/audio/train_vocoder.py --data path/to/clips --output-dir runs/my_vocoder  # a folder
    python recipes/audio/train_vocoder.py --output-dir runs/vocoder --max-minutes 40 --resume
    python recipes/audio/train_vocoder.py ... --adversarial-from 4000                       # + GAN phase

Loss: the multi-resolution STFT loss (Yamamoto et al. 2020, Eqs. 4-6) plus ``--mel-weight`` times the
L1 between the log-mels of output and input (HiFi-GAN, Kong et al. 2020, Eq. 4; Vocos). With
``--adversarial-from S`` a multi-resolution complex-STFT discriminator (EnCodec, Sec. 3.4) joins at
step ``S``: hinge losses, ``--adv-weight`` on the generator's adversarial term and ``--fm-weight`` on
feature matching (MelGAN, Eq. 6).

Data: ``--data tones`` streams :class:`mediadiff.audio.tones.Tones` with the training ``--seed``
(16 kHz, 16384-sample clips); each step trains on a random ``--crop`` of every clip (a multiple of
the mel hop, drawn from the step's generator, so ``--resume`` is exact). Held-out evaluation uses
Tones seed :data:`~mediadiff.audio.tones.HELDOUT_SEED`, which training refuses. With ``--data DIR``
(an :class:`~mediadiff.audio.datasets.AudioFolder`) the last ``--eval-clips`` files are held out.

The held-out numbers (whole clips): ``eval_mrstft`` (the loss's STFT distance, lower is better, the
main metric), ``eval_mel_l1``, and on Tones ``eval_pitch`` / ``eval_waveform`` (the share of clips
whose start pitch stays within half a semitone and whose waveform class is kept, read back by
:mod:`mediadiff.audio.detect`).
"""

from __future__ import annotations

import argparse

import torch

from mediadiff.audio.losses import MultiResolutionSTFTLoss, mel_loss
from mediadiff.audio.mel import MelConfig
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
from mediadiff.audio.vocoder import PHASES, Vocoder, VocoderConfig, stft_same
from mediadiff.train.autoencoder import (
    AutoencoderRecipe,
    LossContext,
    LossOutput,
    add_arguments,
    parse_and_check,
    train,
)
from mediadiff.utils import ArgumentParser  # one-line errors, exit code 2

_MRSTFT = MultiResolutionSTFTLoss()


def build(args: argparse.Namespace) -> Vocoder:
    mel = MelConfig(sample_rate=args.sample_rate, n_mels=args.n_mels)
    return Vocoder(
        VocoderConfig(
            dim=args.dim,
            num_blocks=args.blocks,
            phase=args.phase,
            mel=mel,
            head_fft=args.head_fft,
            prior=args.prior,
            prior_iterations=args.prior_iterations,
            phase_from_prior=args.phase_from_prior,
        )
    )


def loss(model, x: torch.Tensor, ctx: LossContext) -> LossOutput:
    vocoder = ctx.accelerator.unwrap_model(model)
    x = random_crop(x, ctx.args.crop, vocoder.config.mel.hop_length, ctx.generator)  # [b c crop]
    mel = vocoder.mel_of(x)  # [b c m f]
    with ctx.accelerator.autocast():
        y, magnitude = model(mel, with_spectrum=True)  # [b c crop], [b c bins f]
    y = y.float()
    stft = _MRSTFT(y, x)
    mel_l1 = mel_loss(vocoder.mel_of(y), mel)
    total = stft + ctx.args.mel_weight * mel_l1
    logs = {"mrstft": stft.detach(), "mel_l1": mel_l1.detach()}
    if ctx.args.spectrum_weight > 0:  # the head's own magnitudes against the target's STFT, bin by bin
        head = vocoder.head
        floor = vocoder.config.mel.floor
        target = stft_same(x.flatten(0, 1), head.n_fft, head.hop, head.window).abs()  # [b*c bins f]
        log_target = target.clamp_min(floor).log().view_as(magnitude)  # [b c bins f]
        spectrum_l1 = (magnitude.float().clamp_min(floor).log() - log_target).abs().mean()
        total = total + ctx.args.spectrum_weight * spectrum_l1
        logs["spectrum_l1"] = spectrum_l1.detach()
    if ctx.discriminator is not None:
        total, logs = gan_terms(total, logs, x, y, ctx)
    return LossOutput(total, logs, real=x, fake=y)


@torch.no_grad()
def evaluate(model: Vocoder, heldout, args: argparse.Namespace, accelerator) -> dict[str, float]:
    clips, outputs, labels = [], [], []
    for start in range(0, len(heldout), args.batch_size):
        items = [heldout[i] for i in range(start, min(len(heldout), start + args.batch_size))]
        x = audio_collate(items).to(accelerator.device)  # [b c t]
        with accelerator.autocast():
            y = model(model.mel_of(x)).float().clamp(-1, 1)  # [b c t]
        clips.append(x.cpu())
        outputs.append(y.cpu())
        labels += items
    x, y = torch.cat(clips), torch.cat(outputs)
    result = {
        "eval_mrstft": _MRSTFT(y, x).item(),
        "eval_mel_l1": mel_loss(model.mel_of(y), model.mel_of(x)).item(),
    }
    return result | tone_scores(y, labels, args)


RECIPE = AutoencoderRecipe(
    script="recipes/audio/train_vocoder.py",
    name="train vocoder",
    build=build,
    load=Vocoder.from_pretrained,
    data=build_audio_data,
    collate=audio_collate,
    loss=loss,
    evaluate=evaluate,
    main_metric="eval_mrstft",
    higher_is_better=False,
    discriminator=build_discriminator,
    discriminator_loss=lambda d, real, fake, ctx: LossOutput(*discriminator_terms(d, real, fake, ctx)),
    heldout_seed=heldout_seed,
    summary=lambda args: {"data": args.data, "train_seed": args.seed, "crop": args.crop},
    progress={"mrstft": "{mrstft:.3f}"},
)


def main(argv: list[str] | None = None) -> dict:
    """Train with the command line ``argv`` (default ``sys.argv[1:]``); returns ``training.json``'s summary."""
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_arguments(
        parser,
        defaults={"max_steps": 8000, "batch_size": 16, "lr": 2e-3, "warmup_steps": 100, "eval_every": 1000},
        adversarial=True,
    )
    add_data_arguments(parser, crop=4096)
    parser.add_argument("--dim", type=int, default=VocoderConfig.dim, help="ConvNeXt width")
    parser.add_argument("--blocks", type=int, default=VocoderConfig.num_blocks, help="ConvNeXt blocks")
    parser.add_argument("--n-mels", type=int, default=MelConfig.n_mels)
    parser.add_argument(
        "--phase",
        choices=list(PHASES),
        default=VocoderConfig.phase,
        help="the ISTFT head's phase model (absolute: Vocos'; integrated: phase advances, see ISTFTHead)",
    )
    parser.add_argument(
        "--head-fft",
        type=int,
        default=VocoderConfig.head_fft,
        help="the ISTFT head's FFT size (0: the mel's); a longer window resolves low notes' partials",
    )
    parser.add_argument(
        "--prior",
        action=argparse.BooleanOptionalAction,
        default=VocoderConfig.prior,
        help="predict a correction to the mel's pseudo-inverse magnitudes (with --phase locked: pitch from the start)",
    )
    parser.add_argument(
        "--prior-iterations",
        type=int,
        default=VocoderConfig.prior_iterations,
        help="Richardson-Lucy steps that draw the prior's magnitudes back into peaks (needs --prior)",
    )
    parser.add_argument(
        "--phase-from-prior",
        action="store_true",
        help="with --phase locked --prior: lock the phase to the prior's peaks (the pitch is the mel's)",
    )
    parser.add_argument(
        "--spectrum-weight",
        type=float,
        default=0.0,
        help="weight of the L1 between the head's log-magnitudes and the target's STFT (same window and hop)",
    )
    parser.add_argument("--mel-weight", type=float, default=15.0, help="weight of the log-mel L1")
    add_gan_arguments(parser)
    return train(parse_and_check(parser, RECIPE, argv), RECIPE, argv=argv)


if __name__ == "__main__":
    main()
