"""Normalisation layers for (N, C, H, W) feature maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GroupNorm32", "LayerNorm2d"]


def _autocast_to_float32(x: Tensor) -> bool:
    """Whether a normalisation should leave autocast and compute in float32 (see :class:`GroupNorm32`)."""
    return x.dtype != torch.float32 and torch.is_autocast_enabled(x.device.type)


class GroupNorm32(nn.GroupNorm):
    """``nn.GroupNorm`` that computes in float32 under autocast, as CUDA's autocast does for every normalisation.

    CPU autocast runs GroupNorm in bfloat16, where its statistics lose precision and, on channels-last inputs, its
    backward is several times slower than in float32 (torch 2.13: 3.8x on MALUNet's GroupNorms, which made the
    whole bf16 step slower than fp32). The output stays float32; the next convolution casts it back. Outside
    autocast it is ``nn.GroupNorm`` unchanged, with the same state-dict keys.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, ...) -> (N, C, ...)."""
        if _autocast_to_float32(x):
            with torch.autocast(x.device.type, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each position of (N, C, H, W), ConvNeXt's "channels_first" LayerNorm.

    Computed by ``F.layer_norm`` on the (N, H, W, C) view, which is contiguous in the channels-last memory format;
    in float32 under autocast, for the reasons of :class:`GroupNorm32`.

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
        if _autocast_to_float32(x):
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x.float())
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
