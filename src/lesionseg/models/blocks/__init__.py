"""Every block more than one model uses: convolutions, attention, multi-scale, transformer parts, selective scan.

Model files import shared parts from here, never from a sibling model file.
"""

from __future__ import annotations

from .attention import (
    CBAM,
    AttentionGate,
    ChannelAttention,
    CrossRegionAttention,
    ExternalAttention,
    SpatialAttention,
    SqueezeExcite,
    StripConvAttention,
)
from .conv import ConvNormAct, DepthwiseConv2d, DoubleConv, ResNetBasicBlock
from .multiscale import ASPP, ResidualBlock, pool_to_scale
from .norm import GroupNorm32, LayerNorm2d
from .scan import default_chunk_size, selective_scan, selective_scan_ref
from .ss2d import SS2D, DropPath, VSSBlock, cross_merge, cross_scan
from .tokens import channel_shuffle, init_token_weights
from .transformer import ChannelMixing, EfficientSelfAttention, TransformerBlock
from .ustage import UStage, check_widths, group_norm4

__all__ = [
    "ASPP",
    "AttentionGate",
    "CBAM",
    "ChannelAttention",
    "ChannelMixing",
    "ConvNormAct",
    "CrossRegionAttention",
    "DepthwiseConv2d",
    "DoubleConv",
    "DropPath",
    "EfficientSelfAttention",
    "ExternalAttention",
    "GroupNorm32",
    "LayerNorm2d",
    "ResNetBasicBlock",
    "ResidualBlock",
    "SS2D",
    "SpatialAttention",
    "SqueezeExcite",
    "StripConvAttention",
    "TransformerBlock",
    "UStage",
    "VSSBlock",
    "channel_shuffle",
    "check_widths",
    "cross_merge",
    "cross_scan",
    "default_chunk_size",
    "group_norm4",
    "init_token_weights",
    "pool_to_scale",
    "selective_scan",
    "selective_scan_ref",
]
