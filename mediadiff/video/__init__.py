"""Video side: io, datasets, backbones (UNet3D, DiT), the causal video autoencoder, Shapes, detector, metrics.

Canonical layout inside models is ``[b c f h w]`` with values in [-1, 1]; at the edges (files,
pipelines) clips are uint8 ``[f h w 3]``. Names are imported from their submodules on first use, so
``import mediadiff.video`` stays light (no PyAV or transformers until needed).
"""

from __future__ import annotations

from mediadiff.utils import lazy_exports

_EXPORTS: dict[str, str] = {
    # io
    "READ_EXTENSIONS": "io",
    "WRITE_FORMATS": "io",
    "VideoError": "io",
    "VideoInfo": "io",
    "clip_indices": "io",
    "probe": "io",
    "read_video": "io",
    "to_model": "io",
    "to_uint8": "io",
    "video_info": "io",
    "write_video": "io",
    # datasets
    "VideoFolder": "datasets",
    "Shapes": "shapes",
    "COLOURS": "shapes",
    "ALL_COLOURS": "shapes",
    "EXTRA_COLOURS": "shapes",
    "SHAPES": "shapes",
    "DIRECTIONS": "shapes",
    "TRAIN_TEMPLATES": "shapes",
    "HELDOUT_TEMPLATES": "shapes",
    # backbones
    "UNet3D": "unet3d",
    "UNet3DConfig": "unet3d",
    "DiT": "dit",
    "DiTConfig": "dit",
    # autoencoders
    "CausalVideoVAE": "autoencoder",
    "IdentityAutoencoder": "autoencoder",
    "VideoAutoencoderConfig": "autoencoder",
    "load_autoencoder": "autoencoder",
    "SHAPES_VAE_DIR": "autoencoder",
    # metrics
    "psnr": "metrics",
    "mse": "metrics",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
