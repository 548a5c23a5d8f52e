"""Text contexts for the backbones: the one home of packing, padding and substituting context tokens.

A text context is ``tokens [b l d]`` with ``mask [b l]`` (True = real token); backbones take it as
``backbone(x, t, context=tokens, context_mask=mask)`` and honour the mask, so padding positions change
no output. The *canonical* form (:func:`pack_context`) zeroes padding and trims trailing padding
columns, so a context encoded on the fly, read from a cache, or batched by a pipeline is the same
tensor for the same caption. Every routine that stacks, pads or swaps contexts is here: the trainer
(condition dropout), the latent cache, the pipelines and the recipes all call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "Context",
    "encode_context",
    "match_context",
    "pack_context",
    "pad_context",
    "pad_to_length",
    "substitute_context",
]

Context = dict[str, torch.Tensor]
"""Backbone keyword arguments of a text context: ``{"context": [b l d], "context_mask": [b l]}``."""


def pack_context(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The canonical form of a text context: padding zeroed, trailing padding columns trimmed.

    tokens: ``[b l d]``; mask: ``[b l]`` (True = real token). Returns ``[b l' d], [b l']`` with ``l'`` the
    last real position over the batch plus one (at least 1). Backbones honour ``context_mask``, so this
    changes no output; it makes on-the-fly and cached contexts the same tensors.
    """
    if tokens.ndim != 3 or mask.shape != tokens.shape[:2]:
        raise ValueError(
            f"text encoder must return tokens [b l d] and mask [b l]; got {list(tokens.shape)} and {list(mask.shape)}"
        )
    mask = mask.bool()
    used = mask.any(0).nonzero()  # [k 1] positions real in some caption
    length = max(1, int(used.max()) + 1 if used.numel() else 1)
    mask = mask[:, :length]  # [b l']
    tokens = torch.where(mask[..., None], tokens[:, :length], 0.0)  # [b l' d]
    return tokens, mask


@torch.no_grad()
def encode_context(
    text_encoder: Any, prompts: Sequence[str], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``text_encoder.encode(prompts)`` in canonical form (:func:`pack_context`), on ``device``."""
    tokens, mask = text_encoder.encode(list(prompts))  # [b l d], [b l]
    if device is not None:
        tokens, mask = tokens.to(device), mask.to(device)
    return pack_context(tokens, mask)


def pad_context(
    tokens: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-caption ``tokens [l_i d]`` and ``mask [l_i]`` into ``[b l d]``, ``[b l]``, zero/False padded."""
    if not tokens or len(tokens) != len(masks):
        raise ValueError(f"pad_context: need one mask per token tensor, got {len(tokens)} and {len(masks)}")
    length = max(1, *(t.shape[0] for t in tokens))
    out = tokens[0].new_zeros(len(tokens), length, tokens[0].shape[-1])  # [b l d]
    mask = torch.zeros(len(tokens), length, dtype=torch.bool, device=out.device)  # [b l]
    for i, (t, m) in enumerate(zip(tokens, masks)):
        out[i, : t.shape[0]] = t
        mask[i, : m.shape[0]] = m
    return out, mask


def pad_to_length(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``tokens [... l d]`` and ``mask [... l]`` with zero tokens (mask False) to ``length`` positions."""
    extra = length - tokens.shape[-2]
    if extra < 0:
        raise ValueError(f"pad_to_length: context has {tokens.shape[-2]} tokens, more than {length}")
    if extra == 0:
        return tokens, mask
    tokens = F.pad(tokens, (0, 0, 0, extra))  # [... length d]
    mask = F.pad(mask, (0, extra), value=False)  # [... length]
    return tokens, mask


def match_context(cond: Context, uncond: Context) -> tuple[Context, Context]:
    """Pad the shorter of two contexts with zero tokens (mask False) so both have the same length.

    Backbones honour ``context_mask``, so padding changes no prediction; guidance needs equal shapes
    to run both in one batch. The batch sizes may differ (an unconditional batch of 1 is broadcast).
    """
    length = max(cond["context"].shape[1], uncond["context"].shape[1])

    def pad(ctx: Context) -> Context:
        tokens, mask = pad_to_length(ctx["context"], ctx["context_mask"], length)  # [b length d], [b length]
        return {**ctx, "context": tokens, "context_mask": mask}

    return pad(cond), pad(uncond)


def substitute_context(
    tokens: torch.Tensor, mask: torch.Tensor, replace: torch.Tensor, other: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the contexts of the batch rows where ``replace [b]`` is True by one context ``other``.

    tokens ``[b l d]``, mask ``[b l]``; ``other`` = ``(tokens [l' d], mask [l'])``, e.g. the empty
    prompt's for condition dropout (Ho & Salimans 2022, Alg. 1). Both are padded to the longer length.
    """
    other_tokens, other_mask = other  # [l' d], [l']
    length = max(tokens.shape[1], other_tokens.shape[0])
    tokens, mask = pad_to_length(tokens, mask, length)  # [b L d], [b L]
    other_tokens, other_mask = pad_to_length(other_tokens, other_mask, length)  # [L d], [L]
    tokens = torch.where(replace[:, None, None], other_tokens.to(tokens.dtype), tokens)  # [b L d]
    mask = torch.where(replace[:, None], other_mask, mask)  # [b L]
    return tokens, mask
