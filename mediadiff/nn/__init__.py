"""Shared, modality-agnostic layers: attention (torch SDPA), rotary embeddings over 1-3 axes, timestep
embeddings, adaLN-Zero and AdaGN modulation, ``conv_nd`` residual blocks and resampling for 1-D, 2-D
and 3-D signals, transformer blocks, the timestep + text conditioning of every backbone
(:class:`TextConditioned`), a U-Net skeleton (:class:`UNet`) and a patch transformer
(:class:`DiffusionTransformer`) over any number of axes, and the save/load base of the backbones.

Nothing here knows a modality: video and audio backbones build from these pieces.
"""

from .attention import Attention, AttentionPool, TokenAdapter, attention, masked_mean, pool_context
from .autoencoder import DiagonalGaussian, IdentityAutoencoder, LatentAutoencoder
from .conditioning import CONTEXT_POOLS, TextConditioned, TextConditioningConfig
from .conv import Downsample, FactorizedConv3d, ResBlock, Upsample, conv_nd
from .dit import DiffusionTransformer, DiffusionTransformerConfig, patchify, unpatchify
from .embeddings import TimestepEmbedding, sinusoidal_embedding
from .modulation import AdaGroupNorm, AdaLNModulation, group_norm, modulate
from .pretrained import ConfigModel
from .rope import Rope, RotaryEmbedding, apply_rope, grid_positions, split_head_dim
from .standardize import FixedStandardize
from .transformer import AdaLNZeroBlock, AdaLNZeroOut, FeedForward, TransformerBlock
from .unet import AxisAttention, UNet, UNetConfig, UNetStage
from .utils import check_backbone_inputs, checkpoint, zero_module

__all__ = [
    "CONTEXT_POOLS",
    "AdaGroupNorm",
    "AdaLNModulation",
    "AdaLNZeroBlock",
    "AdaLNZeroOut",
    "Attention",
    "AttentionPool",
    "AxisAttention",
    "ConfigModel",
    "DiagonalGaussian",
    "DiffusionTransformer",
    "DiffusionTransformerConfig",
    "Downsample",
    "FactorizedConv3d",
    "FeedForward",
    "FixedStandardize",
    "IdentityAutoencoder",
    "LatentAutoencoder",
    "ResBlock",
    "Rope",
    "RotaryEmbedding",
    "TextConditioned",
    "TextConditioningConfig",
    "TimestepEmbedding",
    "TokenAdapter",
    "TransformerBlock",
    "UNet",
    "UNetConfig",
    "UNetStage",
    "Upsample",
    "apply_rope",
    "attention",
    "check_backbone_inputs",
    "checkpoint",
    "conv_nd",
    "grid_positions",
    "group_norm",
    "masked_mean",
    "modulate",
    "patchify",
    "pool_context",
    "sinusoidal_embedding",
    "split_head_dim",
    "unpatchify",
    "zero_module",
]
