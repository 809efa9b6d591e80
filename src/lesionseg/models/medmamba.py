"""MedMamba, adapted to segmentation.

Yue and Li, "MedMamba: Vision Mamba for Medical Image Classification", arXiv 2403.03849 (2024); public code
github.com/YubiaoYue/MedMamba (``MedMamba.py``).

The paper is a *classification* network: a 4x4 patch embedding (convolution + LayerNorm) to C = 96 channels, four
stages of SS-Conv-SSM blocks at widths [C, 2C, 4C, 8C] with patch merging between them (MedMamba-T: depths
[2, 2, 4, 2]), global average pooling and a linear classifier. The SS-Conv-SSM block, as in the public code, on
(N, H, W, C): the channels are split in two halves; the first goes through a convolution branch
``BN -> conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv1x1 -> ReLU`` (full 3x3 convolutions, with biases), the
second through ``drop_path(SS2D(LayerNorm(x)))`` (VMamba's v0 SS2D: d_state 16, expansion 2, 4-direction scan); the
two halves are concatenated (convolution half first), channel-shuffled with 2 groups, and added to the block input.
Stochastic depth 0.1 rising linearly over the blocks.

How we adapt it to segmentation (the CM-SSM paper's MedMamba rows give no recipe): MedMamba's encoder (its patch
embedding, SS-Conv-SSM stages at depths [2, 2, 4, 2] and patch merging) inside VM-UNet's U-shaped frame
(:class:`~lesionseg.models.vmunet.VMUNet`): a mirrored decoder of SS-Conv-SSM blocks at depths [2, 2, 2, 1] (VM-UNet's
decoder depths), patch expanding, additive skips, a final 4x patch expanding and a 1x1 convolution to the logits. No
ImageNet or medical pretraining (the classification paper trained from scratch too). The selective scan is our
pure-PyTorch scan (:mod:`lesionseg.models.blocks.scan`). Input H and W must be multiples of 32.

Sizes: ``medmamba`` is MedMamba-T's encoder (C = 96, depths [2, 2, 4, 2], d_state 16) in the U-shape above; the paper
gives no segmentation size to compare with. ``medmamba_s`` (2 CPU cores): C = 16, one block per stage, d_state 1, no
drop-path (as ``vmunet_s``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ._registry import register_model
from .blocks.ss2d import SS2D, DropPath
from .blocks.tokens import channel_shuffle
from .vmunet import CPU_SIZE, VMUNet

__all__ = ["MedMambaUNet", "SSConvSSM", "medmamba", "medmamba_s"]


class SSConvSSM(nn.Module):
    """MedMamba's SS-Conv-SSM block on (N, H, W, C): half the channels through convolutions, half through SS2D.

    Args:
        dim: channels C, even.
        d_state: SSM state size of SS2D.
        expand: SS2D inner width factor.
        drop_path: stochastic-depth probability of the SS2D branch.
    """

    def __init__(self, dim: int, d_state: int = 16, expand: float = 2.0, drop_path: float = 0.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"SS-Conv-SSM splits the channels in halves; dim must be even, got {dim}")
        half = dim // 2
        self.ssm_norm = nn.LayerNorm(half)
        self.ssm = SS2D(half, d_state=d_state, expand=expand)
        self.drop_path = DropPath(drop_path)
        self.conv_branch = nn.Sequential(
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 3, padding=1),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, padding=1),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        left, right = x.chunk(2, dim=-1)
        right = self.drop_path(self.ssm(self.ssm_norm(right)))
        left = self.conv_branch(left.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return channel_shuffle(torch.cat([left, right], dim=-1), 2) + x


class MedMambaUNet(VMUNet):
    """VM-UNet's U-shape with MedMamba's SS-Conv-SSM blocks in every stage.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: encoder widths (even; the first a multiple of 4).
        depths: SS-Conv-SSM blocks per encoder stage (MedMamba-T: [2, 2, 4, 2]).
        decoder_depths: blocks per decoder stage, deepest first.
        d_state: SSM state size.
        expand: SS2D inner width factor.
        drop_path_rate: largest stochastic-depth probability (0.1 in MedMamba).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (96, 192, 384, 768),
        depths: tuple[int, ...] = (2, 2, 4, 2),
        decoder_depths: tuple[int, ...] = (2, 2, 2, 1),
        d_state: int = 16,
        expand: float = 2.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        if any(c % 2 for c in channels):
            raise ValueError(f"SS-Conv-SSM needs even widths, got {tuple(channels)}")
        super().__init__(
            in_channels,
            num_classes,
            channels,
            depths,
            decoder_depths,
            d_state,
            expand,
            drop_path_rate,
            block_layer=partial(_block, d_state=d_state, expand=expand),
        )


def _block(dim: int, drop_path: float, *, d_state: int, expand: float) -> nn.Module:
    return SSConvSSM(dim, d_state=d_state, expand=expand, drop_path=drop_path)


@register_model(paper_size=True)
def medmamba(in_channels: int = 3, num_classes: int = 1, **kwargs) -> MedMambaUNet:
    """MedMamba-T's encoder (C = 96, depths [2, 2, 4, 2], d_state 16) in VM-UNet's U-shape; from scratch."""
    return MedMambaUNet(in_channels, num_classes, **kwargs)


@register_model(cpu_size=True)
def medmamba_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> MedMambaUNet:
    """MedMamba U-shape for 2 CPU cores: C = 16, one block per stage, d_state 1, no drop-path."""
    return MedMambaUNet(in_channels, num_classes, **{**CPU_SIZE, **kwargs})
