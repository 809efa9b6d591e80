"""Normalisation layers for (N, C, H, W) feature maps."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerNorm2d"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each position of (N, C, H, W), ConvNeXt's "channels_first" LayerNorm.

    Computed by ``F.layer_norm`` on the (N, H, W, C) view, which is contiguous in the channels-last memory format.

    Args:
        channels: C.
        eps: added to the variance (1e-6 in ConvNeXt and EGE-UNet).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        super().__init__(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
