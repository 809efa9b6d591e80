"""U-Net.

Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015.

The paper: four 2x2 max-pool downsamplings, two 3x3 convolutions per stage, widths 64-128-256-512-1024,
2x2 up-convolutions halving the width, skip concatenation, a 1x1 head. Our reading: padded convolutions (so the
output has the input size) and batch normalisation after each convolution, as every modern re-implementation does.
Input H and W must be multiples of 16.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import DoubleConv

__all__ = ["UNet", "unet", "unet_small"]


class UNet(SegmentationModel):
    """U-Net with a configurable number of stages.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: widths of the encoder stages, shallowest first; the last is the bottleneck.
        bilinear: upsample by bilinear interpolation + 1x1 conv instead of a transposed convolution.

    Attributes:
        skip_attention: a hook for subclasses, None here: one module per decoder level (deepest first), called as
            ``skip_attention[i](skip, deeper)`` on the skip features and the coarser decoder features (before
            upsampling), whose output replaces the skip before the concatenation (Attention U-Net's gates).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (64, 128, 256, 512, 1024),
        bilinear: bool = False,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 stages, got {channels!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        channels = tuple(channels)
        self.stride = 2 ** (len(channels) - 1)
        self.encoder = nn.ModuleList()
        prev = in_channels
        for c in channels:
            self.encoder.append(DoubleConv(prev, c))
            prev = c
        self.pool = nn.MaxPool2d(2)
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for deep, skip in zip(channels[:0:-1], channels[-2::-1]):
            if bilinear:
                up: nn.Module = nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(deep, skip, 1)
                )
            else:
                up = nn.ConvTranspose2d(deep, skip, kernel_size=2, stride=2)
            self.upsamplers.append(up)
            self.decoder.append(DoubleConv(2 * skip, skip))
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        self.skip_attention: nn.ModuleList | None = None

    def forward_output(self, x: Tensor) -> ModelOutput:
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for i, (up, stage) in enumerate(zip(self.upsamplers, self.decoder)):
            skip = skips.pop()
            if self.skip_attention is not None:
                skip = self.skip_attention[i](skip, x)
            x = stage(torch.cat([skip, up(x)], dim=1))
        return ModelOutput(logits=self.head(x))


@register_model(paper_size=True)
def unet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> UNet:
    """U-Net at the paper's widths 64-1024 (31.0M parameters)."""
    return UNet(in_channels, num_classes, **{"channels": (64, 128, 256, 512, 1024), **kwargs})


@register_model(cpu_size=True)
def unet_small(in_channels: int = 3, num_classes: int = 1, **kwargs) -> UNet:
    """U-Net at widths 16-256 (1.9M parameters), trains on 2 CPU cores."""
    return UNet(in_channels, num_classes, **{"channels": (16, 32, 64, 128, 256), **kwargs})
