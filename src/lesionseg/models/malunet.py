"""MALUNet.

Ruan, Xiang, Xie, Liu and Gao, "MALUNet: A Multi-Attention and Light-weight UNet for Skin Lesion Segmentation",
IEEE BIBM 2022; public code: github.com/JCruan519/MALUNet (``models/malunet.py``).

The paper: a six-level U-shape with widths 8-16-24-32-48-64. The three shallow levels are a 3x3 convolution each;
the three deep levels are inverted external attention (IEA: external attention with memory size 4C, GroupNorm, GELU)
followed by dilated gated attention (DGA: the channels split into four groups, depthwise 3x3 convolutions with
dilations 7, 5, 2, 1, GroupNorm, 1x1 and GELU, then a gated attention unit). Every encoder level is followed by
GroupNorm, 2x2 max-pooling and GELU (the bottleneck by GELU only); the decoder mirrors it (DGA then IEA on the deep
levels), with bilinear x2 upsampling and *additive* skips. The five skips pass through the spatial attention bridge
(SAB: a 7x7 convolution with dilation 3, shared by all levels, over channel-mean and channel-max maps) and the
channel attention bridge (CAB: global average pools of all five levels concatenated, a 1D convolution of size 3
across them, one linear layer + sigmoid per level). Published: 0.175M parameters, 0.083 GFLOPs at 256x256.

From the public code (the paper is silent): the bridge order ``s = SAB(t) * t``, ``u = s + t``,
``out = CAB(u) * u + s``; the gated attention unit ``out = DW3(sigmoid(DW3(x)) * GELU(DW5(x))) -> GELU + 1x1(x)``
with depthwise-separable convolutions ``depthwise kxk -> GroupNorm(4) -> 1x1``; GroupNorm with 4 groups everywhere
(so every width must be a multiple of 4); bilinear upsampling with ``align_corners=True``; the head is a 1x1
convolution at 1/2 resolution, upsampled x2; the code's timm-style initialisation (truncated normal for linear
layers, fan-out normal for convolutions).

Ours: the IEA is :class:`~lesionseg.models.blocks.attention.ExternalAttention` (memory ``4C``, GroupNorm(4), GELU),
whose two memories are initialised independently (the code starts the second as the transpose of the first); the SAB
is :class:`~lesionseg.models.blocks.attention.SpatialAttention` (7x7, dilation 3; without the code's one bias).
Switches for the paper's ablation study: ``use_dga`` (off: a 3x3 convolution), ``use_iea`` (off: identity),
``use_sab``, ``use_cab`` (off: the skip passes unchanged). Input H and W must be multiples of 32 (2**(levels - 1)).
Under CPU bf16 autocast the dilated depthwise convolutions and the GroupNorms compute in float32
(:class:`~lesionseg.models.blocks.conv.DepthwiseConv2d`, :class:`~lesionseg.models.blocks.norm.GroupNorm32`): the
first had non-finite bf16 weight gradients from the first step; on CPU every level computes channels-last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import (
    DepthwiseConv2d,
    ExternalAttention,
    SpatialAttention,
    UStage,
    check_widths,
    group_norm4,
    init_token_weights,
)

__all__ = [
    "ChannelAttentionBridge",
    "DepthwiseSeparableConv",
    "DilatedGatedAttention",
    "GatedAttentionUnit",
    "MALUNet",
    "SpatialChannelBridge",
    "malunet",
]


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise kxk convolution (optionally dilated), GroupNorm(4), pointwise 1x1 (MALUNet's ``DepthWiseConv2d``).

    Args:
        in_channels: input channels, a multiple of 4.
        out_channels: output channels.
        kernel_size: odd depthwise kernel size.
        dilation: depthwise dilation.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                padding=dilation * (kernel_size // 2),
                dilation=dilation,
                groups=in_channels,
            ),
            group_norm4(in_channels),
            nn.Conv2d(in_channels, out_channels, 1),
        )


class GatedAttentionUnit(nn.Module):
    """MALUNet's gated attention unit: ``GELU(DWS3(sigmoid(DWS3(x)) * GELU(DWS5(x)))) + conv1x1(x)``.

    Args:
        in_channels: input channels, a multiple of 4.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(DepthwiseSeparableConv(in_channels, in_channels, 3), nn.Sigmoid())
        self.value = nn.Sequential(DepthwiseSeparableConv(in_channels, in_channels, 5), nn.GELU())
        self.out_conv = nn.Sequential(DepthwiseSeparableConv(in_channels, out_channels, 3), nn.GELU())
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H, W)."""
        return self.out_conv(self.gate(x) * self.value(x)) + self.shortcut(x)


class DilatedGatedAttention(nn.Module):
    """Dilated gated attention (DGA): grouped dilated depthwise convolutions, then a gated attention unit.

    The channels are split into ``len(dilations)`` equal groups, each through a depthwise 3x3 convolution of its own
    dilation; the concatenation goes through GroupNorm(4), a 1x1 convolution and GELU, then
    :class:`GatedAttentionUnit` maps it to ``out_channels``.

    Args:
        in_channels: input channels, a multiple of 4 and of ``len(dilations)``.
        out_channels: output channels.
        dilations: one dilation per channel group ((7, 5, 2, 1) in MALUNet).
    """

    def __init__(self, in_channels: int, out_channels: int, dilations: tuple[int, ...] = (7, 5, 2, 1)) -> None:
        super().__init__()
        if not dilations or in_channels % len(dilations) or in_channels % 4:
            raise ValueError(
                f"in_channels must be a multiple of 4 and of len(dilations) = {len(dilations)}, got {in_channels}"
            )
        if any(d < 1 for d in dilations):
            raise ValueError(f"dilations must be >= 1, got {dilations!r}")
        group = in_channels // len(dilations)
        self.group_convs = nn.ModuleList(DepthwiseConv2d(group, 3, dilation=d) for d in dilations)
        self.norm = group_norm4(in_channels)
        self.mix = nn.Conv2d(in_channels, in_channels, 1)
        self.gau = GatedAttentionUnit(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H, W)."""
        groups = x.chunk(len(self.group_convs), dim=1)
        x = torch.cat([conv(g) for conv, g in zip(self.group_convs, groups)], dim=1)
        return self.gau(F.gelu(self.mix(self.norm(x))))


class ChannelAttentionBridge(nn.Module):
    """MALUNet's channel attention bridge (CAB): channel weights for every skip from the pools of all of them.

    The global average pools of all levels are concatenated into one vector of ``sum(channels)`` values, mixed by a
    1D convolution of size 3 along it (no bias), and each level gets ``sigmoid(Linear(sum(channels) -> C_i))``.

    Args:
        channels: widths of the skip levels, shallowest first.
    """

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be positive widths, got {channels!r}")
        total = sum(channels)
        self.mix = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.heads = nn.ModuleList(nn.Linear(total, c) for c in channels)

    def weights(self, feats: list[Tensor]) -> list[Tensor]:
        """Per-level channel weights in (0, 1), each (N, C_i, 1, 1)."""
        pooled = torch.cat([f.mean(dim=(2, 3)) for f in feats], dim=1)  # (N, sum C)
        mixed = self.mix(pooled.unsqueeze(1)).squeeze(1)
        return [torch.sigmoid(head(mixed))[:, :, None, None] for head in self.heads]


class SpatialChannelBridge(nn.Module):
    """MALUNet's skip bridge: SAB then CAB on all skips, ``s = SAB(t) * t``, ``u = s + t``, ``CAB(u) * u + s``.

    With ``use_sab=False``, ``s = u = t``; with ``use_cab=False`` the output is ``u``.

    Args:
        channels: widths of the skip levels, shallowest first.
        use_sab: the spatial attention bridge (one 7x7 dilation-3 convolution shared by all levels).
        use_cab: the channel attention bridge.
    """

    def __init__(self, channels: tuple[int, ...], use_sab: bool = True, use_cab: bool = True) -> None:
        super().__init__()
        self.spatial_attention = SpatialAttention(7, dilation=3) if use_sab else None
        self.channel_attention = ChannelAttentionBridge(channels) if use_cab else None

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """Skips (N, C_i, H_i, W_i), shallowest first -> the same shapes."""
        if self.spatial_attention is not None:
            spatial = [self.spatial_attention(t) for t in feats]
            mixed = [s + t for s, t in zip(spatial, feats)]
        else:
            spatial = mixed = feats
        if self.channel_attention is None:
            return mixed
        weights = self.channel_attention.weights(mixed)
        return [w * u + s for w, u, s in zip(weights, mixed, spatial)]


class MALUNet(SegmentationModel):
    """MALUNet: convolutional shallow levels, IEA + DGA deep levels, SAB + CAB on the additive skips.

    ``encoder[i]`` gives the skip of level ``i`` at 1/2**(i+1) of the input size; ``bottleneck`` keeps the deepest
    resolution; ``decoder[j]`` goes from width ``channels[-1-j]`` to ``channels[-2-j]`` (upsampling from the second
    step on) and is added to the matching skip; ``head`` is a 1x1 convolution at 1/2 resolution, upsampled x2.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: widths of the levels, shallowest first; the last is the bottleneck; multiples of 4.
        num_conv_stages: shallow levels built from a plain 3x3 convolution (3 in MALUNet); the others are attention.
        use_dga: dilated gated attention in the deep levels; off, a 3x3 convolution.
        use_iea: inverted external attention in the deep levels; off, identity.
        use_sab: spatial attention bridge on the skips.
        use_cab: channel attention bridge on the skips.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (8, 16, 24, 32, 48, 64),
        num_conv_stages: int = 3,
        use_dga: bool = True,
        use_iea: bool = True,
        use_sab: bool = True,
        use_cab: bool = True,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        check_widths(channels, num_conv_stages, in_channels, num_classes)
        self.channels = channels
        self.stride = 2 ** (len(channels) - 1)

        def body(cin: int, cout: int, level: int, decoder: bool) -> nn.Module:
            if level < num_conv_stages:
                return nn.Conv2d(cin, cout, 3, padding=1)
            dga = DilatedGatedAttention(cin, cout) if use_dga else nn.Conv2d(cin, cout, 3, padding=1)
            iea_width = cout if decoder else cin
            iea = ExternalAttention(iea_width, 4 * iea_width, group_norm4, nn.GELU) if use_iea else nn.Identity()
            return nn.Sequential(dga, iea) if decoder else nn.Sequential(iea, dga)

        last = len(channels) - 1
        ins = (in_channels,) + channels[:-1]
        self.encoder = nn.ModuleList(
            UStage(body(ins[i], channels[i], i, decoder=False), channels[i], "down") for i in range(last)
        )
        self.bottleneck = UStage(body(ins[last], channels[last], last, decoder=False), channels[last], norm=False)
        self.skip_bridge = SpatialChannelBridge(channels[:-1], use_sab, use_cab) if use_sab or use_cab else None
        self.decoder = nn.ModuleList(
            UStage(body(channels[lvl], channels[lvl - 1], lvl, decoder=True), channels[lvl - 1], "up" if j else None)
            for j, lvl in enumerate(range(last, 0, -1))
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        init_token_weights(self)

    def forward_output(self, x: Tensor) -> ModelOutput:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = self.bottleneck(x)
        if self.skip_bridge is not None:
            skips = self.skip_bridge(skips)
        for stage, skip in zip(self.decoder, reversed(skips)):
            x = stage(x) + skip
        logits = F.interpolate(self.head(x), scale_factor=2.0, mode="bilinear", align_corners=True)
        return ModelOutput(logits=logits)


@register_model(paper_size=True, cpu_size=True)
def malunet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> MALUNet:
    """MALUNet at the paper's widths 8-16-24-32-48-64 (0.18M parameters, 0.08 GMACs at 256x256)."""
    return MALUNet(in_channels, num_classes, **{"channels": (8, 16, 24, 32, 48, 64), **kwargs})
