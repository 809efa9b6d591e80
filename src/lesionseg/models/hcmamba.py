"""HC-Mamba.

Xu, "HC-Mamba: Vision MAMBA with Hybrid Convolutional Techniques for Medical Image Segmentation", arXiv 2405.05007
(2024). We found no public code; this is our reading of the paper.

The paper: a VM-UNet-style U-shape (4x4 patch embedding to C = 96, four encoder stages at [C, 2C, 4C, 8C] with patch
merging, a mirrored decoder with patch expanding, additive skips, a final 4x patch expanding and a 1x1 projection)
whose blocks are HC-SSM blocks. An HC-SSM block combines a visual state-space branch (SS2D, VMamba's 4-direction
selective scan) with "hybrid convolutions": dilated convolutions, to widen the receptive field at no extra cost, and
depthwise separable convolutions, to cut parameters and computation; the two paths work on the two halves of the
channels, which are then concatenated and channel-shuffled, with a residual connection (the split-and-shuffle layout
of MedMamba's SS-Conv-SSM, arXiv 2403.03849).

What we chose where the paper is silent: the convolution half runs three depthwise-separable 3x3 convolutions
(depthwise, pointwise, BatchNorm, ReLU) with dilations 1, 2 and 3 in sequence (the hybrid-dilated-convolution
schedule, whose rates have no common factor so the sampling grid has no holes); the SSM half is
``drop_path(SS2D(LayerNorm(x)))`` with d_state 16 and expansion 2; encoder depths [2, 2, 2, 2] and decoder depths
[2, 2, 2, 1] as VM-UNet; stochastic depth 0.2 as VM-UNet. No pretrained weights (VM-UNet, on which it builds, starts
from ImageNet VMamba weights; we train from scratch). The selective scan is our pure-PyTorch scan
(:mod:`lesionseg.models.blocks.scan`). Input H and W must be multiples of 32.

Sizes: ``hcmamba`` is the paper-like size above; ``hcmamba_s`` (2 CPU cores) has C = 16, one block per stage, d_state
1 and no drop-path (as ``vmunet_s``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ._registry import register_model
from .blocks.ss2d import SS2D, DropPath
from .blocks.tokens import channel_shuffle
from .vmunet import CPU_SIZE, VMUNet

__all__ = ["HCMamba", "HCSSM", "HybridDilatedConv", "hcmamba", "hcmamba_s"]


class HybridDilatedConv(nn.Sequential):
    """Depthwise-separable 3x3 convolutions in sequence, one per dilation, each ``dw -> pw -> BN -> ReLU``.

    Args:
        channels: input and output channels.
        dilations: dilation of each depthwise convolution, in order.
    """

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2, 3)) -> None:
        if not dilations or min(dilations) < 1:
            raise ValueError(f"dilations must be a non-empty tuple of positive ints, got {dilations!r}")
        layers: list[nn.Module] = []
        for d in dilations:
            layers += [
                nn.Conv2d(channels, channels, 3, padding=d, dilation=d, groups=channels, bias=False),
                nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class HCSSM(nn.Module):
    """HC-SSM block on (N, H, W, C): half the channels through hybrid dilated convolutions, half through SS2D.

    Args:
        dim: channels C, even.
        d_state: SSM state size.
        expand: SS2D inner width factor.
        drop_path: stochastic-depth probability of the SS2D branch.
        dilations: dilations of the convolution half.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        expand: float = 2.0,
        drop_path: float = 0.0,
        dilations: tuple[int, ...] = (1, 2, 3),
    ) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"HC-SSM splits the channels in halves; dim must be even, got {dim}")
        half = dim // 2
        self.conv_branch = HybridDilatedConv(half, dilations)
        self.ssm_norm = nn.LayerNorm(half)
        self.ssm = SS2D(half, d_state=d_state, expand=expand)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        left, right = x.chunk(2, dim=-1)
        left = self.conv_branch(left.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        right = self.drop_path(self.ssm(self.ssm_norm(right)))
        return channel_shuffle(torch.cat([left, right], dim=-1), 2) + x


class HCMamba(VMUNet):
    """HC-Mamba: VM-UNet's U-shape with HC-SSM blocks.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: encoder widths (even; the first a multiple of 4).
        depths: blocks per encoder stage.
        decoder_depths: blocks per decoder stage, deepest first.
        d_state: SSM state size.
        expand: SS2D inner width factor.
        drop_path_rate: largest stochastic-depth probability.
        dilations: dilations of the HC-SSM convolution half.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (96, 192, 384, 768),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        decoder_depths: tuple[int, ...] = (2, 2, 2, 1),
        d_state: int = 16,
        expand: float = 2.0,
        drop_path_rate: float = 0.2,
        dilations: tuple[int, ...] = (1, 2, 3),
    ) -> None:
        if any(c % 2 for c in channels):
            raise ValueError(f"HC-SSM needs even widths, got {tuple(channels)}")
        super().__init__(
            in_channels,
            num_classes,
            channels,
            depths,
            decoder_depths,
            d_state,
            expand,
            drop_path_rate,
            block_layer=partial(_block, d_state=d_state, expand=expand, dilations=tuple(dilations)),
        )


def _block(dim: int, drop_path: float, *, d_state: int, expand: float, dilations: tuple[int, ...]) -> nn.Module:
    return HCSSM(dim, d_state=d_state, expand=expand, drop_path=drop_path, dilations=dilations)


@register_model(paper_size=True)
def hcmamba(in_channels: int = 3, num_classes: int = 1, **kwargs) -> HCMamba:
    """HC-Mamba at VM-UNet's size: C = 96, depths [2, 2, 2, 2] / [2, 2, 2, 1], d_state 16; from scratch."""
    return HCMamba(in_channels, num_classes, **kwargs)


@register_model(cpu_size=True)
def hcmamba_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> HCMamba:
    """HC-Mamba for 2 CPU cores: C = 16, one block per stage, d_state 1, no drop-path."""
    return HCMamba(in_channels, num_classes, **{**CPU_SIZE, **kwargs})
