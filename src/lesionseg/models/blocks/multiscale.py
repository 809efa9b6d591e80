"""Multi-scale and residual convolution blocks shared by the multi-scale encoders and decoders."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .conv import ConvNormAct

__all__ = ["ASPP", "ResidualBlock", "pool_to_scale"]


def pool_to_scale(x: Tensor, factor: int) -> Tensor:
    """Average-pools ``x`` by ``factor``, never below 1x1, for sizes that ``factor`` need not divide.

    Args:
        x: features (N, C, H, W).
        factor: downsampling factor >= 1.

    Returns:
        (N, C, max(1, H // factor), max(1, W // factor)).
    """
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    if h % factor == 0 and w % factor == 0:
        return F.avg_pool2d(x, factor)
    return F.adaptive_avg_pool2d(x, (max(1, h // factor), max(1, w // factor)))


class ResidualBlock(nn.Module):
    """ResNet basic block: two 3x3 ConvNormAct (the second without activation) plus a shortcut, then activation.

    The shortcut is a 1x1 convolution + norm when the width or the stride changes, the identity otherwise.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (2 halves the resolution).
        norm_layer: normalisation layer.
        act_layer: activation layer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.body = nn.Sequential(
            ConvNormAct(in_channels, out_channels, 3, stride, norm_layer=norm_layer, act_layer=act_layer),
            ConvNormAct(out_channels, out_channels, 3, norm_layer=norm_layer, act_layer=None),
        )
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ConvNormAct(
                in_channels, out_channels, 1, stride, norm_layer=norm_layer, act_layer=None
            )
        else:
            self.shortcut = nn.Identity()
        self.act = act_layer()

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride)."""
        return self.act(self.body(x) + self.shortcut(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling in ResUNet++'s form (Jha et al., ISM 2019): parallel dilated convolutions, summed.

    Every branch is a 3x3 convolution with its dilation (padding keeps the size) followed by batch norm, the branches
    are added and a 1x1 convolution mixes the sum, as in the authors' code (dilations 1, 6, 12, 18). DeepLab's ASPP
    concatenates instead and adds an image-pooling branch; ResUNet++ does neither.

    Args:
        in_channels: input channels.
        out_channels: output channels (of every branch and of the 1x1 convolution).
        dilations: one branch per dilation.
    """

    def __init__(self, in_channels: int, out_channels: int, dilations: tuple[int, ...] = (1, 6, 12, 18)) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if not dilations or any(d < 1 for d in dilations):
            raise ValueError(f"dilations must be a non-empty tuple of positive ints, got {dilations!r}")
        self.branches = nn.ModuleList(
            ConvNormAct(in_channels, out_channels, 3, dilation=d, act_layer=None) for d in dilations
        )
        self.project = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W)."""
        total = self.branches[0](x)
        for branch in self.branches[1:]:
            total = total + branch(x)
        return self.project(total)
