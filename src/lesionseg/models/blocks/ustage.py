"""The level of the MALUNet / EGE-UNet U-shape and the width checks both models share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norm import GroupNorm32

__all__ = ["UStage", "check_widths", "group_norm4"]


def group_norm4(channels: int) -> nn.GroupNorm:
    """GroupNorm with 4 groups, the normalisation of MALUNet and EGE-UNet (in float32 under autocast)."""
    return GroupNorm32(4, channels)


class UStage(nn.Module):
    """One level of the MALUNet / EGE-UNet U-shape: ``GELU(resample(norm(body(x))))``.

    On CPU the level computes in the channels-last memory format whatever the input's: it is faster there for every
    layer of these networks (GroupNorm, max-pooling and the narrow convolutions most of all), and the attention
    levels produce channels-last tensors anyway, so a contiguous input used to switch formats between levels and pay
    for copies in the backward pass. Only the memory layout changes, not the values' shape.

    Args:
        body: the level's block, ``(N, C_in, H, W) -> (N, out_channels, H, W)``.
        out_channels: its output width.
        resample: ``"down"`` (2x2 max-pool), ``"up"`` (bilinear x2, ``align_corners=True`` as the code) or None.
        norm: GroupNorm(4) after the body (the bottleneck has none).
    """

    def __init__(self, body: nn.Module, out_channels: int, resample: str | None = None, norm: bool = True) -> None:
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be 'down', 'up' or None, got {resample!r}")
        self.body = body
        self.norm = group_norm4(out_channels) if norm else nn.Identity()
        self.resample = resample

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, out_channels, H', W'), H' = H / 2, H or 2H."""
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.norm(self.body(x))
        if self.resample == "down":
            x = F.max_pool2d(x, 2)
        elif self.resample == "up":
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return F.gelu(x)


def check_widths(channels: tuple[int, ...], num_conv_stages: int, in_channels: int, num_classes: int) -> None:
    """Argument checks shared by MALUNet and EGE-UNet."""
    if len(channels) < 3:
        raise ValueError(f"channels needs at least 3 levels, got {channels!r}")
    if any(c < 4 or c % 4 for c in channels):
        raise ValueError(f"channels must be positive multiples of 4 (GroupNorm with 4 groups), got {channels!r}")
    if not 0 <= num_conv_stages <= len(channels) - 1:
        raise ValueError(f"num_conv_stages must be in [0, {len(channels) - 1}], got {num_conv_stages}")
    if in_channels < 1 or num_classes < 1:
        raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
