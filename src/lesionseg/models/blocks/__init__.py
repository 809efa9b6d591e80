"""Reusable blocks: convolutions, attention, multi-scale, selective scan."""

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
from .conv import ConvNormAct, DepthwiseConv2d, DoubleConv
from .multiscale import ASPP, ResidualBlock, pool_to_scale
from .norm import GroupNorm32, LayerNorm2d
from .scan import default_chunk_size, selective_scan, selective_scan_ref
from .ss2d import SS2D, DropPath, VSSBlock, cross_merge, cross_scan

__all__ = [
    "ASPP",
    "AttentionGate",
    "CBAM",
    "ChannelAttention",
    "ConvNormAct",
    "CrossRegionAttention",
    "DepthwiseConv2d",
    "DoubleConv",
    "DropPath",
    "ExternalAttention",
    "GroupNorm32",
    "LayerNorm2d",
    "ResidualBlock",
    "SS2D",
    "SpatialAttention",
    "SqueezeExcite",
    "StripConvAttention",
    "VSSBlock",
    "cross_merge",
    "cross_scan",
    "default_chunk_size",
    "pool_to_scale",
    "selective_scan",
    "selective_scan_ref",
]
