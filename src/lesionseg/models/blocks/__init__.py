"""Reusable blocks: convolutions, attention, multi-scale, selective scan."""

from __future__ import annotations

from .attention import (
    CBAM,
    ChannelAttention,
    CrossRegionAttention,
    ExternalAttention,
    SpatialAttention,
    SqueezeExcite,
    StripConvAttention,
)
from .conv import ConvNormAct, DoubleConv
from .multiscale import ResidualBlock, pool_to_scale
from .scan import default_chunk_size, selective_scan, selective_scan_ref
from .ss2d import SS2D, DropPath, VSSBlock, cross_merge, cross_scan

__all__ = [
    "CBAM",
    "ChannelAttention",
    "ConvNormAct",
    "CrossRegionAttention",
    "DoubleConv",
    "DropPath",
    "ExternalAttention",
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
