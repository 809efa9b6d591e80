"""Convolution building blocks."""

from __future__ import annotations

from torch import nn

__all__ = ["ConvNormAct", "DoubleConv"]


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
