"""The sizes a pipeline's model was trained on, and a warning when a call asks for another.

A diffusion model sampled off its training size still runs (the backbones take any size their patches
and the autoencoder allow) but often draws something else: the shipped 64x64 Shapes model asked for
128x128 draws several small objects instead of one. :func:`warn_if_untrained` warns
(:class:`UntrainedSizeWarning`) when a call's latent is outside the latents of the trained sizes, so
what counts is what the model sees: an audio clip cut from the trained number of latent frames is not
warned about.

Where the trained sizes come from, read from the pipeline folder (never from the model's name):

1. ``info["trained_sizes"]``: ``{setting: [lo, hi]}`` (or one number) for the size settings of the
   modality (``num_frames``, ``height``, ``width``; ``num_samples``), for a model trained on a range;
2. else, for a folder exported from a training run (its ``info`` holds the run's ``steps``, as
   :func:`~mediadiff.pipelines.export.export_run` writes it), the saved size ``defaults``: every recipe
   saves the size it trained at as its pipeline's defaults (``17x64x64`` for shapes-dit, recorded with
   the recipe's ``frames`` and ``size`` in ``info["config"]``);
3. else nothing is known (a pipeline built in code, a diffusers folder) and nothing is warned.
"""

from __future__ import annotations

import warnings
from typing import Any

from mediadiff.utils import MediadiffWarning

__all__ = ["UntrainedSizeWarning", "trained_sizes", "warn_if_untrained"]


class UntrainedSizeWarning(MediadiffWarning):
    """A size, length or duration outside what the model was trained on: it runs, but may go wrong."""


def trained_sizes(pipe: Any) -> dict[str, tuple[int, int]]:
    """``{size setting: (lo, hi)}`` the pipeline's model was trained on (see the module docstring);
    empty when its folder does not say. A malformed ``info["trained_sizes"]`` is a ValueError naming it."""
    names = tuple(pipe.SIZE_DEFAULTS)
    info = pipe.info or {}
    given = info.get("trained_sizes")
    if given is not None:
        if not isinstance(given, dict) or not set(given) <= set(names):
            raise ValueError(
                f"{type(pipe).__name__}: info['trained_sizes'] must map size settings {list(names)} to "
                f"[lo, hi], got {given!r}"
            )
        sizes = {}
        for name, value in given.items():
            lo, hi = (value, value) if isinstance(value, (int, float)) else tuple(value)
            if not 1 <= lo <= hi:
                raise ValueError(
                    f"{type(pipe).__name__}: info['trained_sizes'][{name!r}] must be [lo, hi] with "
                    f"1 <= lo <= hi, got {value!r}"
                )
            sizes[name] = (int(lo), int(hi))
        return sizes
    if "steps" in info:  # exported from a training run: its size defaults are the size it trained at
        return {name: (int(pipe.defaults[name]),) * 2 for name in names}
    return {}


def warn_if_untrained(pipe: Any, settings: dict[str, Any]) -> str | None:
    """Warn (:class:`UntrainedSizeWarning`) when resolved ``settings`` give a latent outside those of the
    trained sizes on some axis; returns the message (None: inside, or the trained sizes are unknown).

    The message names the size asked for and the trained one (the modality's ``describe``), e.g.
    ``VideoPipeline: 17 frames 128x128 at 8 fps is outside the size this model was trained on
    (17 frames 64x64 at 8 fps); ...``.
    """
    trained = trained_sizes(pipe)
    if not trained:
        return None
    lo = {**settings, **{k: v[0] for k, v in trained.items()}}
    hi = {**settings, **{k: v[1] for k, v in trained.items()}}
    try:
        latent, latent_lo, latent_hi = (pipe.latent_shape(s) for s in (settings, lo, hi))
    except ValueError:  # a trained size the current parts do not take: nothing to compare with
        return None
    if all(a <= n <= b for n, a, b in zip(latent[1:], latent_lo[1:], latent_hi[1:])):
        return None
    span = pipe.describe(lo) if lo == hi else f"{pipe.describe(lo)} to {pipe.describe(hi)}"
    message = (
        f"{type(pipe).__name__}: {pipe.describe(settings)} is outside the size this model was trained on "
        f"({span}); it still runs, but a model sampled off its training size often repeats, crops or "
        "loses what the prompt asks for"
    )
    warnings.warn(message, UntrainedSizeWarning, stacklevel=4)
    return message
