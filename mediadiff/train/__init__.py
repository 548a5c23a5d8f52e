"""Training for every modality: one accelerate-based trainer, EMA, exact resume, latent and text caches.

- :class:`Trainer` - the loop (AdamW, warm-up + constant/cosine LR, gradient accumulation and clipping,
  bf16 autocast, EMA, condition dropout, periodic samples, metrics as JSON lines, checkpoints, resume).
- :class:`TrainConfig`, :func:`recipe_parser`, :func:`config_from_args` - the command line all recipes share.
- :class:`LatentCache` - latents and text embeddings computed once, on disk, keyed by a fingerprint.
- :class:`Recipe`, :class:`Parts` - the skeleton of a recipe script: flags, seeded build, cache, export, train.
- :class:`AutoencoderRecipe`, :class:`LossOutput`, :class:`LossContext` - what a recipe supplies to the one
  loop that trains autoencoders and vocoders (:mod:`mediadiff.train.autoencoder`: ``add_arguments``,
  ``parse_and_check``, ``train``; optional adversarial phase); :class:`IndexStream`, its resumable sampler.

Names are imported on first use, so ``import mediadiff.train`` stays light (no accelerate, no diffusers).
"""

from __future__ import annotations

from mediadiff.utils import lazy_exports

_NAMES = {  # module -> the names it exports here
    "autoencoder": ["AutoencoderRecipe", "IndexStream", "LossContext", "LossOutput"],
    "cache": ["CacheError", "CacheMismatchError", "LatentCache", "cache_fingerprint"],
    "checkpoint": ["CheckpointError", "latest_checkpoint", "load_model_weights"],
    "config": ["TrainConfig", "add_train_args", "config_from_args", "recipe_parser"],
    "data": ["ResumableSampler", "resolve_data_key"],
    "memory": ["DryRunReport"],
    "plot": ["plot_runs", "read_curves"],
    "precision": ["resolve_mixed_precision"],
    "recipe": ["Parts", "Recipe", "pipeline_sample_fn"],
    "text": [
        "add_folder_text_args",
        "add_text_recipe_args",
        "fit_pooled_norm",
        "install_text_adapter",
        "load_text_adapter",
    ],
    "trainer": ["NonFiniteLossError", "SampleContext", "Trainer", "ema_decay_at", "make_accelerator"],
}
_EXPORTS = {name: module for module, names in _NAMES.items() for name in names}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
