"""Small, real components that satisfy the trainer's interfaces, for its tests, examples and benchmarks.

In the spirit of ``accelerate.test_utils``: each one is a working model of its kind, tiny enough to
train on a CPU in seconds, and exactly the shape of contract the full-size parts of mediadiff fill.

- :class:`MovingSquares` - clips ``[3 f h w]`` in [-1, 1] of a coloured square moving in a
  direction, captioned ("a red square moving left"); deterministic per index; ``data_key = "video"``.
- :class:`Bumps` - 1-D signals ``[c l]`` of one bump, captioned by its sign and width ("a high
  narrow bump"); deterministic per index; ``data_key = "signal"``.
- :class:`TinyAutoencoder` - a strided 3D-conv autoencoder, ``encode``/``decode``/``latent_shape``
  and a ``config`` with the latent scale and shift.
- :class:`HashTextEncoder` - a tokenizer-free text encoder: words hashed (crc32) into an embedding
  table, plus positions and a start token, ``encode(prompts) -> (tokens, mask)`` and ``fingerprint()``.
- :class:`TinyBackbone` - a conv net ``model(x, t, context, context_mask)`` conditioned on the
  time (sinusoidal embedding) and on the masked mean of the text tokens; 1D, 2D or 3D data.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = ["Bumps", "HashTextEncoder", "MovingSquares", "TinyAutoencoder", "TinyBackbone"]

COLOURS = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
    "white": (1.0, 1.0, 1.0),
}
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


class MovingSquares(Dataset):
    """``num_items`` clips of a square of one colour moving one way over a dark background.

    Item ``i``: ``{"video": [3 f h w] float in [-1, 1], "text": "a <colour> square moving <direction>"}``.
    """

    data_key = "video"  # the tensor of the items (what the trainer and the cache read)

    def __init__(
        self, num_items: int = 64, num_frames: int = 8, size: int = 16, square: int = 4, seed: int = 0
    ):
        if size < square + 2 or num_frames < 1:
            raise ValueError(
                f"MovingSquares needs size >= square + 2 and num_frames >= 1, got {size}, {num_frames}"
            )
        self.config = {
            "num_items": num_items,
            "num_frames": num_frames,
            "size": size,
            "square": square,
            "seed": seed,
        }
        self.num_items, self.num_frames, self.size, self.square, self.seed = self.config.values()

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_items:
            raise IndexError(f"MovingSquares index {index} out of range [0, {self.num_items})")
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        colour = list(COLOURS)[index % len(COLOURS)]
        direction = list(DIRECTIONS)[(index // len(COLOURS)) % len(DIRECTIONS)]
        span = self.size - self.square
        y, x = (int(v) for v in torch.randint(0, span + 1, (2,), generator=g))
        dy, dx = DIRECTIONS[direction]
        video = torch.full((3, self.num_frames, self.size, self.size), -0.8)  # [c f h w]
        rgb = torch.tensor(COLOURS[colour])[:, None, None]  # [3 1 1]
        for f in range(self.num_frames):
            yf, xf = (y + dy * f) % (span + 1), (x + dx * f) % (span + 1)
            video[:, f, yf : yf + self.square, xf : xf + self.square] = rgb
        return {"video": video, "text": f"a {colour} square moving {direction}"}


class Bumps(Dataset):
    """``num_items`` 1-D signals of one bump, high or low, narrow, medium or wide, at a random place.

    Item ``i``: ``{"signal": [c l] float, "text": "a high narrow bump"}``: a Gaussian bump of sign +1
    or -1 and width ``length / 32``, ``/ 16`` or ``/ 8``, centred anywhere in the middle half, scaled
    by ``(k + 1) / c`` in channel ``k``, plus noise of std 0.05. The six captions cycle with the
    index; the place and the noise are drawn from ``(seed, index)``.
    """

    data_key = "signal"
    SIGNS: ClassVar[dict[str, float]] = {"high": 1.0, "low": -1.0}
    WIDTHS: ClassVar[dict[str, float]] = {"narrow": 1 / 32, "medium": 1 / 16, "wide": 1 / 8}

    def __init__(self, num_items: int = 64, channels: int = 2, length: int = 32, seed: int = 0):
        if length < 16 or channels < 1:
            raise ValueError(f"Bumps needs length >= 16 and channels >= 1, got {length}, {channels}")
        self.config = {"num_items": num_items, "channels": channels, "length": length, "seed": seed}
        self.num_items, self.channels, self.length, self.seed = self.config.values()

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_items:
            raise IndexError(f"Bumps index {index} out of range [0, {self.num_items})")
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        sign = list(self.SIGNS)[index % len(self.SIGNS)]
        width = list(self.WIDTHS)[(index // len(self.SIGNS)) % len(self.WIDTHS)]
        centre = (0.25 + 0.5 * torch.rand((), generator=g)) * self.length
        x = torch.arange(self.length, dtype=torch.float32)  # [l]
        bump = self.SIGNS[sign] * torch.exp(-0.5 * ((x - centre) / (self.WIDTHS[width] * self.length)) ** 2)
        gains = torch.arange(1, self.channels + 1, dtype=torch.float32)[:, None] / self.channels  # [c 1]
        signal = gains * bump + 0.05 * torch.randn(self.channels, self.length, generator=g)  # [c l]
        return {"signal": signal, "text": f"a {sign} {width} bump"}


class TinyAutoencoder(nn.Module):
    """3D-conv autoencoder: space downsampled by ``2**levels``, time kept; latents normalised.

    ``encode(x) = (E(x) - shift) * scale``, ``decode(z) = D(z / scale + shift)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 4,
        width: int = 16,
        levels: int = 1,
        scale: float = 1.0,
        shift: float = 0.0,
    ):
        super().__init__()
        self.config = {
            "in_channels": in_channels, "latent_channels": latent_channels, "width": width, "levels": levels,
            "scale": scale, "shift": shift,
        }  # fmt: skip
        enc: list[nn.Module] = [nn.Conv3d(in_channels, width, 3, padding=1)]
        dec: list[nn.Module] = [nn.Conv3d(latent_channels, width, 3, padding=1)]
        for _ in range(levels):
            enc += [nn.SiLU(), nn.Conv3d(width, width, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1))]
            dec += [
                nn.SiLU(),
                nn.ConvTranspose3d(width, width, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)),
            ]
        enc += [nn.SiLU(), nn.Conv3d(width, latent_channels, 3, padding=1)]
        dec += [nn.SiLU(), nn.Conv3d(width, in_channels, 3, padding=1)]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def latent_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """``[c f h w] -> [latent_channels f h/2^levels w/2^levels]`` (a leading batch dim is kept)."""
        *lead, _c, f, h, w = input_shape
        k = 2 ** self.config["levels"]
        if h % k or w % k:
            raise ValueError(f"height and width must be divisible by {k}, got {h}x{w}")
        return (*lead, self.config["latent_channels"], f, h // k, w // k)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[b c f h w] -> [b c' f h' w']`` normalised latents."""
        return (self.encoder(x) - self.config["shift"]) * self.config["scale"]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``[b c' f h' w'] -> [b c f h w]``."""
        return self.decoder(z / self.config["scale"] + self.config["shift"])


class HashTextEncoder(nn.Module):
    """Words -> crc32 buckets -> embeddings + positions, after a start token; deterministic from ``seed``.

    ``encode(prompts) -> (tokens [b l d], mask [b l])`` with ``l`` = 1 + the most words in the batch;
    the empty prompt is the start token alone.
    """

    def __init__(self, dim: int = 16, vocab: int = 512, max_words: int = 16, seed: int = 0):
        super().__init__()
        self.config = {"dim": dim, "vocab": vocab, "max_words": max_words, "seed": seed}
        g = torch.Generator().manual_seed(seed)
        self.words = nn.Parameter(torch.randn(vocab + 1, dim, generator=g) / math.sqrt(dim))  # [v+1 d]
        self.positions = nn.Parameter(torch.randn(max_words + 1, dim, generator=g) * 0.1)  # [n+1 d]
        self.requires_grad_(False)

    def tokenize(self, prompt: str) -> list[int]:
        """Start token (index ``vocab``), then one bucket per lower-cased word (at most ``max_words``)."""
        words = prompt.lower().split()[: self.config["max_words"]]
        return [self.config["vocab"], *(zlib.crc32(w.encode()) % self.config["vocab"] for w in words)]

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[b]`` prompts -> tokens ``[b l d]``, mask ``[b l]`` (True = real token)."""
        ids = [self.tokenize(p) for p in prompts]
        length = max(len(i) for i in ids)
        index = torch.zeros(len(ids), length, dtype=torch.long, device=self.words.device)  # [b l]
        mask = torch.zeros(len(ids), length, dtype=torch.bool, device=self.words.device)  # [b l]
        for row, i in enumerate(ids):
            index[row, : len(i)] = torch.tensor(i)
            mask[row, : len(i)] = True
        tokens = self.words[index] + self.positions[:length]  # [b l d]
        return tokens * mask[..., None], mask

    def fingerprint(self) -> str:
        """sha256 of the class, config and weights."""
        h = hashlib.sha256(f"{type(self).__qualname__}{sorted(self.config.items())}".encode())
        for t in (self.words, self.positions):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of ``t: [b]`` in [0, 1] (Vaswani et al. 2017, Sec. 3.5; t scaled by 1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)  # [d/2]
    args = 1000.0 * t.float()[:, None] * freqs[None]  # [b d/2]
    return torch.cat([args.cos(), args.sin()], dim=1)  # [b d]


class TinyBackbone(nn.Module):
    """Residual conv net over ``[b c ...]`` (``dims`` = 1, 2 or 3 spatial axes) with time and text conditioning.

    The condition ``emb = MLP(time) + W (masked mean of context)`` is added to the features of each
    block; the output layer starts at zero.
    """

    def __init__(
        self,
        channels: int = 4,
        width: int = 32,
        depth: int = 2,
        context_dim: int | None = 16,
        dims: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.config = {
            "channels": channels,
            "width": width,
            "depth": depth,
            "context_dim": context_dim,
            "dims": dims,
            "dropout": dropout,
        }
        self.width = width
        self.conv_in = conv(channels, width, 3, padding=1)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.text = nn.Linear(context_dim, width) if context_dim else None
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [
                    nn.GroupNorm(8, width),
                    conv(width, width, 3, padding=1),
                    nn.Dropout(dropout),
                    nn.GroupNorm(8, width),
                    conv(width, width, 3, padding=1),
                ]
            )
            for _ in range(depth)
        )
        self.norm_out = nn.GroupNorm(8, width)
        self.conv_out = conv(width, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: ``[b c ...]``; t: ``[b]``; context: ``[b l d]``; context_mask: ``[b l]``. Returns ``[b c ...]``."""
        emb = self.time(_timestep_embedding(t, self.width).to(x.dtype))  # [b w]
        if self.text is not None and context is not None:
            if context_mask is None:
                context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=x.device)  # [b l]
            weights = context_mask.to(context.dtype)[..., None]  # [b l 1]
            pooled = (context * weights).sum(1) / weights.sum(1).clamp(min=1)  # [b d]
            emb = emb + self.text(pooled)  # [b w]
        emb = emb.reshape(*emb.shape, *([1] * (x.ndim - 2)))  # [b w 1 ...]
        h = self.conv_in(x)  # [b w ...]
        for norm1, conv1, drop, norm2, conv2 in self.blocks:
            r = conv1(nn.functional.silu(norm1(h)) + emb)  # [b w ...]
            h = h + conv2(drop(nn.functional.silu(norm2(r))))  # [b w ...]
        return self.conv_out(nn.functional.silu(self.norm_out(h)))  # [b c ...]
