"""Diffusion transformer over space-time patches (DiT, Peebles & Xie 2023) for video latents.

The 3-D configuration of :class:`mediadiff.nn.dit.DiffusionTransformer`: ``[b c f h w]`` is cut
into ``(pf, ph, pw)`` patches, one token each, positioned by a 3-D rotary embedding over the
(frame, row, column) patch grid (RoPE, Su et al. 2021, split across three axes), so any grid size
works without interpolating position tables. Each block is adaLN-Zero self-attention and MLP with
cross-attention to the text tokens in between (PixArt-alpha layout).
"""

from __future__ import annotations

from dataclasses import dataclass

from mediadiff.nn.dit import DiffusionTransformer, DiffusionTransformerConfig

__all__ = ["PRESETS", "DiT", "DiTConfig"]


@dataclass(frozen=True)
class DiTConfig(DiffusionTransformerConfig):
    """:class:`~mediadiff.nn.dit.DiffusionTransformerConfig` over (frames, height, width); the
    other fields (width, depth, heads, text conditioning, ...) are documented there."""

    in_channels: int = 8  # latent channels of the video autoencoder
    patch: tuple[int, int, int] = (1, 2, 2)  # (pf, ph, pw): patch size over frames, height, width
    rope_axes_dims: tuple[int, int, int] | None = None  # head channels per (f, h, w) axis; None: even split

    def __post_init__(self) -> None:
        if len(self.patch) != 3 or any(p < 1 for p in self.patch):
            raise ValueError(f"DiTConfig.patch must be three positive ints (pf, ph, pw), got {self.patch}")
        super().__post_init__()


PRESETS: dict[str, DiTConfig] = {
    "tiny": DiTConfig(width=64, depth=2, heads=4),  # for tests: head dim 16
    "S": DiTConfig(width=384, depth=12, heads=6),  # DiT-S sizes
    "B": DiTConfig(width=768, depth=12, heads=12),  # DiT-B sizes
}


class DiT(DiffusionTransformer):
    """Space-time DiT: ``forward(x [b c f h w], t [b], context [b l d], context_mask [b l]) -> [b c' f h w]``.

    The conditioning vector is ``time_embed(t) + context_embed(pool_context(context))`` (pooled text
    in the adaLN path, as SD3 does); text tokens also enter every block by cross-attention. Each of
    f, h, w must be a multiple of the patch size along it (``size_multiples()``, ``config.patch``).
    Build with ``DiT(DiTConfig(...))``, ``DiT(**fields)`` or ``DiT.from_preset("tiny" | "S" | "B", **overrides)``.
    """

    config_class = DiTConfig
    presets = PRESETS
