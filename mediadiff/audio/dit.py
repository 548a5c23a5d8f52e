"""A diffusion transformer over 1-D audio latents (DiT, Peebles & Xie 2023): the one-axis configuration
of :class:`mediadiff.nn.dit.DiffusionTransformer`.

``[b c t]`` latents are cut into patches of ``p`` frames, one token each, positioned by a 1-D rotary
embedding over the patch index (RoPE, Su et al. 2021, Eq. 34), so any length that is a multiple of
``p`` works without interpolating position tables. Each block is adaLN-Zero self-attention and MLP
(Peebles & Xie 2023, Sec. 3.2) with cross-attention to the text tokens in between (PixArt-alpha,
Chen et al. 2023, Sec. 2.3); a transformer on 1-D audio latents with cross-attention to text is also
what Stable Audio Open uses (Evans et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass

from mediadiff.nn.dit import DiffusionTransformer, DiffusionTransformerConfig

__all__ = ["PRESETS", "DiT1D", "DiT1DConfig"]


@dataclass(frozen=True)
class DiT1DConfig(DiffusionTransformerConfig):
    """:class:`~mediadiff.nn.dit.DiffusionTransformerConfig` over one axis (latent frames); the other
    fields (width, depth, heads, text conditioning, ...) are documented there."""

    in_channels: int = 16  # latent channels of the waveform autoencoder
    patch: tuple[int] = (1,)  # (p,): latent frames per token (audio latents are already short)
    rope_axes_dims: tuple[int] | None = None  # head channels rotated by RoPE; None: the whole head

    def __post_init__(self) -> None:
        if len(self.patch) != 1 or not isinstance(self.patch[0], int) or self.patch[0] < 1:
            raise ValueError(f"DiT1DConfig.patch must be one positive int (p,), got {self.patch}")
        super().__post_init__()


PRESETS: dict[str, DiT1DConfig] = {
    "tiny": DiT1DConfig(width=64, depth=2, heads=4),  # for tests: head dim 16
    "S": DiT1DConfig(width=384, depth=12, heads=6),  # DiT-S sizes
    "B": DiT1DConfig(width=768, depth=12, heads=12),  # DiT-B sizes
}


class DiT1D(DiffusionTransformer):
    """Latent-audio DiT: ``forward(x [b c t], t [b], context [b l d], context_mask [b l]) -> [b c' t]``.

    The conditioning vector is ``time_embed(t) + context_embed(pool_context(context))`` (pooled text
    in the adaLN path, as SD3 does); text tokens also enter every block by cross-attention. The
    length must be a multiple of the patch size (``size_multiples()``, ``config.patch``). Build with
    ``DiT1D(DiT1DConfig(...))``, ``DiT1D(**fields)`` or ``DiT1D.from_preset("tiny" | "S" | "B", **overrides)``.
    """

    config_class = DiT1DConfig
    presets = PRESETS
