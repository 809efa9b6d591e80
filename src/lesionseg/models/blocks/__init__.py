"""Reusable blocks: convolutions, attention, multi-scale, selective scan."""

from __future__ import annotations

from .attention import ChannelAttention, ExternalAttention, SpatialAttention, StripConvAttention
from .conv import ConvNormAct, DoubleConv
from .multiscale import ResidualBlock, pool_to_scale

__all__ = [
    "ChannelAttention",
    "ConvNormAct",
    "DoubleConv",
    "ExternalAttention",
    "ResidualBlock",
    "SpatialAttention",
    "StripConvAttention",
    "pool_to_scale",
]
