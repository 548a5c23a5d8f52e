"""Training for every modality: one accelerate-based trainer, EMA, exact resume, latent and text caches.

- :class:`Trainer` - the loop (AdamW, warm-up + constant/cosine LR, gradient accumulation and clipping,
  bf16 autocast, EMA, condition dropout, periodic samples, metrics as JSON lines, checkpoints, resume).
- :class:`TrainConfig`, :func:`recipe_parser`, :func:`config_from_args` - the command line all recipes share.
- :class:`LatentCache` - latents and text embeddings computed once, on disk, keyed by a fingerprint.
- :class:`Recipe`, :class:`Parts` - the skeleton of a recipe script: flags, seeded build, cache, export, train.

Names are imported on first use, so ``import mediadiff.train`` stays light (no accelerate, no diffusers).
"""

from __future__ import annotations

from mediadiff.utils import lazy_exports

_EXPORTS = {
    "CacheError": "cache",
    "CacheMismatchError": "cache",
    "LatentCache": "cache",
    "cache_fingerprint": "cache",
    "latest_checkpoint": "checkpoint",
    "load_model_weights": "checkpoint",
    "TrainConfig": "config",
    "add_train_args": "config",
    "config_from_args": "config",
    "recipe_parser": "config",
    "ResumableSampler": "data",
    "resolve_data_key": "data",
    "Parts": "recipe",
    "Recipe": "recipe",
    "pipeline_sample_fn": "recipe",
    "DryRunReport": "memory",
    "resolve_mixed_precision": "precision",
    "NonFiniteLossError": "trainer",
    "SampleContext": "trainer",
    "Trainer": "trainer",
    "make_accelerator": "trainer",
    "ema_decay_at": "trainer",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
