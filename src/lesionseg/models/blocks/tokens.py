"""Helpers of token-based models: their weight init, and ShuffleNet's channel shuffle on (N, H, W, C) tokens."""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["channel_shuffle", "init_token_weights"]


def init_token_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear layers, fan-out normal convolutions, zero biases, in place.

    The init of the tokenised modules in the public code of UNeXt, SegFormer, MALUNet and EGE-UNet (and of the
    transformer branch of TransFuse here).
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle on the last axis of (N, H, W, C): channel ``g * (C/groups) + i`` moves to
    ``i * groups + g``, so that the groups interleave."""
    n, h, w, c = x.shape
    if c % groups:
        raise ValueError(f"channels {c} are not divisible by groups {groups}")
    return x.reshape(n, h, w, groups, c // groups).transpose(3, 4).reshape(n, h, w, c)
