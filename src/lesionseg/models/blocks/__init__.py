"""Reusable blocks: convolutions, attention, multi-scale, selective scan."""

from __future__ import annotations

from .conv import ConvNormAct, DoubleConv

__all__ = ["ConvNormAct", "DoubleConv"]
