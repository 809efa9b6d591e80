"""Convolution building blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvNormAct", "DepthwiseConv2d", "DoubleConv", "ResNetBasicBlock"]


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation, padding keeping the size for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm_layer: type[nn.Module] | None = nn.BatchNorm2d,
        act_layer: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=norm_layer is None
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            layers.append(act_layer(inplace=True) if act_layer in (nn.ReLU, nn.ReLU6, nn.SiLU) else act_layer())
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvNormAct, the U-Net stage."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        norm_layer: type[nn.Module] | None = nn.BatchNorm2d,
        act_layer: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        mid = mid_channels or out_channels
        super().__init__(
            ConvNormAct(in_channels, mid, norm_layer=norm_layer, act_layer=act_layer),
            ConvNormAct(mid, out_channels, norm_layer=norm_layer, act_layer=act_layer),
        )


class ResNetBasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv + BN (ReLU between), a 1x1 conv + BN shortcut when the shape changes.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise ``kernel_size x kernel_size`` convolution (one filter per channel), padding keeping the size.

    Under CPU autocast a dilated one runs in float32 (its output cast to the autocast dtype, as an autocast convolution
    would return it): oneDNN's bfloat16 weight gradient of dilated depthwise convolutions on channels-last inputs
    (which channel slices of channels-last tensors also are) is wrong from 32x32 on, non-finite or a segfault from
    dilation 5 (torch 2.13 on AVX512-BF16 and AMX CPUs; ``perf/bf16_depthwise.py``). Without autocast, on
    other devices and without dilation it is a plain ``nn.Conv2d``, with the same parameters and state-dict keys.

    Args:
        channels: input and output channels.
        kernel_size: odd kernel size.
        dilation: dilation.
        bias: learnable bias.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1, bias: bool = True) -> None:
        if channels < 1 or dilation < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"channels and dilation must be >= 1 and kernel_size odd, got {channels}, {dilation}, {kernel_size}"
            )
        padding = dilation * (kernel_size // 2)
        super().__init__(
            channels, channels, kernel_size, padding=padding, dilation=dilation, groups=channels, bias=bias
        )

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        if self.dilation == (1, 1) or x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            out = self._conv_forward(x.float(), self.weight, self.bias)
        return out.to(torch.get_autocast_dtype("cpu"))
