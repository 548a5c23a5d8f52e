"""What the audio training recipes (``recipes/audio/train_vocoder.py``, ``train_vae.py``) share: the
``--data`` flags and sets (Tones or an AudioFolder), collation, aligned random crops, the adversarial
terms of the generator and the discriminator, and the Tones scores of a held-out evaluation.

Nothing here imports :mod:`mediadiff.train` (audio sits below it); the loss helpers take the loop's
``LossContext`` (``ctx.discriminator``, ``ctx.args``, ``ctx.accelerator``, ``ctx.generator``) by duck typing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from .losses import STFTDiscriminator, discriminator_hinge_loss, feature_matching_loss, generator_hinge_loss
from .tones import HELDOUT_SEED, Tones

__all__ = [
    "add_data_arguments",
    "add_gan_arguments",
    "audio_collate",
    "build_audio_data",
    "build_discriminator",
    "discriminator_terms",
    "gan_terms",
    "heldout_seed",
    "random_crop",
    "tone_scores",
]


def add_data_arguments(parser: argparse.ArgumentParser, *, crop: int) -> None:
    """``--data`` (``tones`` or a folder), ``--sample-rate``, ``--num-samples`` and the training ``--crop``."""
    parser.add_argument("--data", default="tones", help="'tones' or a folder of audio files (AudioFolder)")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument(
        "--num-samples", type=int, default=16384, help="samples per clip (held-out clips too)"
    )
    parser.add_argument("--crop", type=int, default=crop, help="samples of each clip one training step sees")
    parser.add_argument(
        "--score-tones",
        type=int,
        default=16,
        help="held-out Tones clips read back with the pitch/waveform detector at each evaluation (0: none)",
    )


def add_gan_arguments(parser: argparse.ArgumentParser) -> None:
    """The adversarial phase's weights and discriminator width (the loop adds ``--adversarial-from``)."""
    parser.add_argument("--adv-weight", type=float, default=0.1, help="weight of the adversarial term")
    parser.add_argument("--fm-weight", type=float, default=1.0, help="weight of feature matching")
    parser.add_argument("--disc-channels", type=int, default=32, help="discriminator width")


def build_discriminator(args: argparse.Namespace) -> STFTDiscriminator:
    """The multi-resolution STFT discriminator of ``--disc-channels``."""
    return STFTDiscriminator(channels=args.disc_channels)


def heldout_seed(args: argparse.Namespace) -> int | None:
    """The seed training must not use: Tones' held-out seed, or none for a folder."""
    return HELDOUT_SEED if args.data == "tones" else None


def audio_collate(items: list[dict]) -> torch.Tensor:
    """Dataset items -> a batch of waveforms ``[b c t]``."""
    return torch.stack([item["audio"] for item in items])  # [b c t]


def build_audio_data(args: argparse.Namespace) -> tuple[Any, Any, bool]:
    """(training set, held-out set, infinite?) for ``--data``."""
    if args.data == "tones":
        train = Tones(
            length=10**9, sample_rate=args.sample_rate, num_samples=args.num_samples, seed=args.seed
        )
        heldout = Tones(
            length=args.eval_clips,
            sample_rate=args.sample_rate,
            num_samples=args.num_samples,
            seed=HELDOUT_SEED,
        )
        return train, heldout, True
    root = Path(args.data)
    if not root.is_dir():
        raise SystemExit(f"--data: {root} is neither 'tones' nor a folder")
    from .datasets import AudioFolder  # lazy: only folders need the decoders

    full = AudioFolder(
        root,
        sample_rate=args.sample_rate,
        duration=args.num_samples / args.sample_rate,
        seed=args.seed,
        default_caption="",  # an autoencoder needs no captions
    )
    if len(full) <= args.eval_clips:
        raise SystemExit(
            f"--data: {root} has {len(full)} clips; need more than --eval-clips ({args.eval_clips})"
        )
    n_train = len(full) - args.eval_clips
    return (
        torch.utils.data.Subset(full, range(n_train)),
        torch.utils.data.Subset(full, range(n_train, len(full))),
        False,
    )


def random_crop(x: torch.Tensor, length: int, multiple: int, generator: torch.Generator) -> torch.Tensor:
    """One random window of ``length`` samples (starting on a multiple of ``multiple``) per clip of ``x``
    ``[b c t]``, drawn from ``generator``; ``x`` itself when it is not longer."""
    t = x.shape[-1]
    if length >= t:
        return x
    if length % multiple:
        raise ValueError(f"--crop ({length}) must be a multiple of {multiple}")
    slots = (t - length) // multiple + 1
    starts = torch.randint(0, slots, (x.shape[0],), generator=generator, device=generator.device) * multiple
    index = starts.to(x.device)[:, None] + torch.arange(length, device=x.device)  # [b length]
    return torch.gather(x, 2, index[:, None, :].expand(-1, x.shape[1], -1))  # [b c length]


def gan_terms(
    total: torch.Tensor, logs: dict, real: torch.Tensor, fake: torch.Tensor, ctx
) -> tuple[torch.Tensor, dict]:
    """Add the generator's hinge term (``--adv-weight``) and feature matching (``--fm-weight``)."""
    with ctx.accelerator.autocast():
        _, real_features = ctx.discriminator(real)
        fake_logits, fake_features = ctx.discriminator(fake)
    adv = generator_hinge_loss([f.float() for f in fake_logits])
    fm = feature_matching_loss(
        [[f.float() for f in fs] for fs in real_features], [[f.float() for f in fs] for fs in fake_features]
    )
    total = total + ctx.args.adv_weight * adv + ctx.args.fm_weight * fm
    return total, logs | {"adv": adv.detach(), "fm": fm.detach()}


def discriminator_terms(
    discriminator, real: torch.Tensor, fake: torch.Tensor, ctx
) -> tuple[torch.Tensor, dict]:
    """The discriminator's hinge loss on detached real and generated audio, and its logs (the recipe
    wraps them in the loop's ``LossOutput``)."""
    with ctx.accelerator.autocast():
        real_logits, _ = discriminator(real)
        fake_logits, _ = discriminator(fake)
    loss = discriminator_hinge_loss([r.float() for r in real_logits], [f.float() for f in fake_logits])
    return loss, {"disc_hinge": loss.detach()}


def tone_scores(audio: torch.Tensor, items: list[dict], args: argparse.Namespace) -> dict[str, float]:
    """On Tones, the shares of the first ``--score-tones`` clips whose start pitch (within half a
    semitone) and waveform class survive; ``{}`` for a folder or with ``--score-tones 0``."""
    n = min(args.score_tones, len(items))
    if args.data != "tones" or n == 0:
        return {}
    from .detect import read_tones, score_tones

    scores = score_tones(read_tones(audio[:n], args.sample_rate), items[:n])
    return {"eval_pitch": scores["pitch"], "eval_waveform": scores["waveform"]}
