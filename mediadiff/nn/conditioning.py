"""Timestep and text conditioning shared by every backbone, whatever its layout.

A backbone sees the text twice: its tokens ``[b l d]`` through cross-attention, and one pooled
vector added to the timestep embedding, which then modulates every block (AdaGN in a U-Net,
Dhariwal & Nichol 2021, Sec. 3; adaLN in a DiT, Peebles & Xie 2023, Sec. 3.2; both FiLM, Perez et
al. 2018). The pooled vector is the masked mean of the tokens (or :class:`AttentionPool`, Saharia
et al. 2022, Sec. 2.2), optionally standardised by fitted buffers (:class:`FixedStandardize`); an
optional :class:`TokenAdapter` rewrites the tokens first, and both paths read its output.

:class:`TextConditioned` holds these layers as attributes of the backbone itself (``time_embed``,
``pooled_norm``, ``context_adapter``, ``context_pool``, ``context_embed``), so a saved backbone's
state-dict keys do not depend on which class built them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .attention import AttentionPool, TokenAdapter, pool_context
from .embeddings import TimestepEmbedding
from .standardize import FixedStandardize
from .utils import check_backbone_inputs

__all__ = ["CONTEXT_POOLS", "TextConditioned", "TextConditioningConfig"]

CONTEXT_POOLS = ("mean", "attention")  # text tokens -> one vector: masked mean, or nn.AttentionPool


@dataclass(frozen=True)
class TextConditioningConfig:
    """The text fields every backbone config shares (a base class, so they come first in its fields)."""

    context_dim: int = 384  # text-encoder token width (384: all-MiniLM-L6-v2)
    pooled_context_norm: bool = False  # standardise the pooled text by fitted buffers (nn.FixedStandardize)
    context_pool: str = "mean"  # text -> one vector: "mean" over tokens, or "attention" (nn.AttentionPool)
    context_pool_heads: int = 4  # learned queries of the attention pooling
    context_adapter_hidden: int = 0  # >0: a TokenAdapter (hidden width) on the text tokens first

    def __post_init__(self) -> None:
        if self.context_pool not in CONTEXT_POOLS:
            raise ValueError(
                f"{type(self).__name__}.context_pool must be 'mean' or 'attention', got {self.context_pool!r}"
            )


class TextConditioned(nn.Module):
    """Mixin of a backbone conditioned on ``t`` and text: ``init_conditioning`` builds the layers,
    ``check_inputs`` validates ``(x, t, context, context_mask)`` and ``condition(t, context,
    context_mask) -> (emb, context)`` runs them.

    ``emb = time_embed(t) + context_embed(pool_context(context))`` (the pooled text in the
    timestep path, as SD3 and Imagen do); without a context ``emb`` is the time embedding alone and
    the backbone runs unconditionally.
    """

    multiples_of: ClassVar[str] = "the downsampling factors"  # what size_multiples() are, for errors
    time_embed: TimestepEmbedding
    pooled_norm: FixedStandardize | None
    context_adapter: TokenAdapter | None
    context_pool: AttentionPool | None
    context_embed: nn.Sequential

    def init_conditioning(self, emb_dim: int, config: TextConditioningConfig) -> None:
        """Build the conditioning layers on ``self``: ``emb_dim`` is the width of the embedding the
        blocks read; ``config`` gives the text width, pooling, pooled norm and token adapter."""
        dim = config.context_dim
        self.time_embed = TimestepEmbedding(emb_dim)
        self.pooled_norm = FixedStandardize(dim) if config.pooled_context_norm else None
        self.context_adapter = (
            TokenAdapter(dim, config.context_adapter_hidden) if config.context_adapter_hidden else None
        )
        self.context_pool = (
            AttentionPool(dim, dim, config.context_pool_heads) if config.context_pool == "attention" else None
        )
        self.context_embed = nn.Sequential(nn.Linear(dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def size_multiples(self) -> tuple[int, ...]:
        """What each axis of x after the channel axis must be a multiple of (one entry per axis)."""
        raise NotImplementedError

    def check_inputs(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate the backbone's arguments against ``self.config`` (``in_channels``, ``context_dim``)
        and :meth:`size_multiples`; returns ``(t [b], context_mask)``."""
        multiples = self.size_multiples()
        return check_backbone_inputs(
            type(self).__name__,
            x,
            t,
            context,
            context_mask,
            ndim=2 + len(multiples),
            channels=self.config.in_channels,
            context_dim=self.config.context_dim,
            multiples=multiples,
            multiples_of=self.multiples_of,
        )

    def condition(
        self, t: torch.Tensor, context: torch.Tensor | None, context_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """t: [b], context: [b l d] or None, context_mask: [b l] bool or None -> (emb [b e], context [b l d]).

        The returned context is the (adapted) tokens the cross-attention layers read.
        """
        emb = self.time_embed(t)  # [b e]
        if context is not None:
            if self.context_adapter is not None:
                context = self.context_adapter(context, context_mask)  # [b l d]
            pooled = pool_context(context, context_mask, self.context_pool, self.pooled_norm)  # [b d]
            emb = emb + self.context_embed(pooled)  # [b e]
        return emb, context
