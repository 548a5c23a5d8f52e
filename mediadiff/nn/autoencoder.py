"""What every autoencoder shares, whatever it encodes: the diagonal Gaussian posterior, stored latent
normalisation, and its model folder (``config.json`` + ``model.safetensors``, written atomically).

A modality's autoencoders (the causal video VAE, the waveform VAE) subclass :class:`LatentAutoencoder`
and keep only their architecture; :func:`load_model_folder` rebuilds whichever class a folder names
from the table of classes a modality passes in (so nothing here knows a modality). A folder is read with
the checks of :mod:`mediadiff.nn.pretrained` (config fields and types, a whole safetensors file whose
checksum and shapes fit); ``latent_shift`` and ``latent_scale`` must be in the config (an empty list is
"none"), since without them a model would decode silently wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from mediadiff.utils import atomic_write_bytes

from .pretrained import config_from_dict, load_into, load_weights, read_json, weights_bytes

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "DiagonalGaussian",
    "IdentityAutoencoder",
    "LatentAutoencoder",
    "check_latent_stats",
    "load_model_folder",
    "read_config",
    "save_model_folder",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def check_latent_stats(config) -> None:
    """Make ``config.latent_shift`` / ``latent_scale`` lists, each empty or one entry per latent channel."""
    for name in ("latent_shift", "latent_scale"):
        value = list(getattr(config, name))
        if value and len(value) != config.latent_channels:
            raise ValueError(
                f"{name} needs {config.latent_channels} entries (one per latent channel), got {len(value)}"
            )
        setattr(config, name, value)


class DiagonalGaussian:
    """Diagonal Gaussian posterior ``q(z|x) = N(mean, exp(logvar))`` over latents ``[b c *s]``."""

    def __init__(self, moments: torch.Tensor) -> None:
        # moments: [b 2c *s]
        self.mean, logvar = moments.float().chunk(2, dim=1)  # [b c *s] each
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised draw ``mean + std * eps`` (Kingma & Welling 2014, Eq. 4)."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def kl(self) -> torch.Tensor:
        """``KL(q || N(0, I))`` summed over latent dims, per sample: ``[b]`` (Kingma & Welling 2014, Eq. 10)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).flatten(1).sum(1)


class LatentAutoencoder(nn.Module):
    """Base of the VAEs: per-channel latent ``shift`` / ``scale`` kept in ``config`` and in buffers, the
    normalised ``encode``, and the model folder. Subclasses set ``latent_axes`` (signal axes of ``z``),
    call :meth:`init_latent_stats` and define ``encode_posterior``."""

    latent_axes: int = 1
    # config fields a saved folder must hold even though they have defaults: missing, the latents would be
    # decoded without their normalisation
    required_fields: tuple[str, ...] = ("latent_shift", "latent_scale")

    def init_latent_stats(self) -> None:
        c = self.config
        view = (-1,) + (1,) * self.latent_axes
        shift = c.latent_shift or [0.0] * c.latent_channels
        scale = c.latent_scale or [1.0] * c.latent_channels
        self.register_buffer("latent_shift", torch.tensor(shift).view(view), persistent=False)
        self.register_buffer("latent_scale", torch.tensor(scale).view(view), persistent=False)

    def encode(
        self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Input -> normalised latents; ``sample=False`` takes the posterior mean, ``True`` a draw."""
        posterior = self.encode_posterior(x)
        z = posterior.sample(generator) if sample else posterior.mean  # [b zc *s]
        return self.normalize(z)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> ``(z - latent_shift) * latent_scale`` (near unit variance)."""
        return (z - self.latent_shift) * self.latent_scale

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        return z / self.latent_scale + self.latent_shift

    def set_latent_stats(self, shift: torch.Tensor, scale: torch.Tensor) -> None:
        """Store per-channel ``latent_shift`` and ``latent_scale`` (``[zc]``) in the config and buffers."""
        zc = self.config.latent_channels
        if shift.numel() != zc or scale.numel() != zc:
            raise ValueError(f"shift and scale need {zc} entries, got {shift.numel()} and {scale.numel()}")
        self.config.latent_shift = [float(v) for v in shift.flatten()]
        self.config.latent_scale = [float(v) for v in scale.flatten()]
        self.latent_shift.copy_(shift.view_as(self.latent_shift))
        self.latent_scale.copy_(scale.view_as(self.latent_scale))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` (with ``"type"``) and ``model.safetensors`` atomically into ``directory``."""
        import dataclasses

        save_model_folder(
            self, directory, {"type": type(self).__name__, "config": dataclasses.asdict(self.config)}
        )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu"):
        """Load a folder written by :meth:`save_pretrained` (local, no network); ``FileNotFoundError`` for a
        missing file, ``ValueError`` naming the file for a damaged or edited one."""
        config_path, weights_path = Path(directory) / CONFIG_NAME, Path(directory) / WEIGHTS_NAME
        spec = read_config(directory)
        if spec.get("type") != cls.__name__:
            raise ValueError(f"{config_path}: type is {spec.get('type')!r}, expected {cls.__name__!r}")
        config = config_from_dict(cls.config_class, spec["config"], config_path, cls.required_fields)
        state = load_weights(weights_path)
        try:
            model = cls(config)
        except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as err:
            raise ValueError(f"{config_path}: cannot build a {cls.__name__} from it: {err}") from None
        load_into(model, state, weights_path, config_path)
        return model.to(device).eval()


class IdentityAutoencoder(nn.Module):
    """Signal-space "autoencoder" with the VAE interface: ``encode`` and ``decode`` return their input.

    ``axes`` is the number of signal axes after the channel axis (3 for video ``[b c f h w]``, 1 for
    waveforms ``[b c t]``).
    """

    def __init__(self, in_channels: int = 3, axes: int = 3) -> None:
        super().__init__()
        self.in_channels, self.axes = in_channels, axes

    def latent_shape(self, input_shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """Same as the input shape."""
        if len(input_shape) != 2 + self.axes or input_shape[1] != self.in_channels:
            raise ValueError(
                f"input must have {2 + self.axes} axes and {self.in_channels} channels, got shape {tuple(input_shape)}"
            )
        return tuple(input_shape)

    def encode(
        self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Identity (shape checked)."""
        self.latent_shape(tuple(x.shape))
        return x

    def decode(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Identity."""
        return z

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` only (there are no weights)."""
        config = {"in_channels": self.in_channels}
        if self.axes != 3:  # folders written before audio had no "axes" and mean video
            config["axes"] = self.axes
        save_model_folder(None, directory, {"type": "IdentityAutoencoder", "config": config})

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, device: str | torch.device = "cpu"
    ) -> IdentityAutoencoder:
        """Load a folder written by :meth:`save_pretrained` (``axes`` absent: 3, as folders before audio)."""
        path = Path(directory) / CONFIG_NAME
        config = read_config(directory)["config"]
        if (
            not isinstance(config, dict)
            or set(config) - {"in_channels", "axes"}
            or "in_channels" not in config
        ):
            raise ValueError(
                f'{path}: expected "config": {{"in_channels": int, "axes": int}}, got {config!r}'
            )
        for name, value in config.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{path}: config.{name} must be a positive integer, got {value!r}")
        return cls(**config)


def read_config(directory: str | os.PathLike) -> dict:
    """Read ``config.json`` from a model folder, with a clear error when it is missing or malformed."""
    path = Path(directory) / CONFIG_NAME
    spec = read_json(path, 'a model config {"type": ..., "config": {...}} written by save_pretrained')
    if "config" not in spec:
        raise ValueError(f'{path}: expected {{"type": ..., "config": {{...}}}}')
    return spec


def save_model_folder(model: nn.Module | None, directory: str | os.PathLike, spec: dict) -> None:
    """Atomically write ``spec`` as ``config.json`` and ``model``'s state dict as ``model.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if model is not None:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        atomic_write_bytes(directory / WEIGHTS_NAME, weights_bytes(tensors))
    atomic_write_bytes(directory / CONFIG_NAME, (json.dumps(spec, indent=2) + "\n").encode())


def load_model_folder(
    directory: str | os.PathLike, classes: dict[str, type[nn.Module]], device: str | torch.device = "cpu"
) -> nn.Module:
    """Load whichever of ``classes`` (type name -> class) a folder's ``config.json`` names."""
    spec = read_config(directory)
    kind = spec.get("type")
    cls = classes.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(
            f"{Path(directory) / CONFIG_NAME}: unknown autoencoder type {spec.get('type')!r}; known: {sorted(classes)}"
        )
    return cls.from_pretrained(directory, device=device)
