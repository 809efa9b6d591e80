"""EAMNet: attention-guided multi-scale network with MRCF, CMAM and an External Attention Bridge.

Wang, Wang, Li and Zhang, "Effective Attention-Guided Multi-Scale Medical Network for Skin Lesion Segmentation",
arXiv 2512.07275 (2025). Only the abstract is available to us.

What the abstract states: an encoder-decoder built on multi-scale residual structures that extract features from
different receptive fields; a Multi-Resolution Multi-Channel Fusion (MRCF) module capturing cross-scale features;
a Cross-Mix Attention Module (CMAM) that "redefines the attention scope and dynamically calculates weights across
multiple contexts"; an External Attention Bridge (EAB) on the skip connections compensating the information lost
by U-Net skips and upsampling. No widths, depths, kernel sizes, parameter counts or training recipe are given.

Our reading (every choice below is ours):
    - U-Net layout with five levels (stride 16): a full-resolution stem (3x3 ConvNormAct) then, per level, 2x2 max
      pooling and one multi-scale residual block; widths 32-64-128-256-512 at the paper-like size (about the size of
      the attention U-Nets these papers compare with). The CPU size uses widths 16-32-48-64-96 and a stride-2 stem
      (levels at 1/2 .. 1/32, logits upsampled bilinearly as in MALUNet): full-resolution external attention alone
      cost more than a whole small U-Net step.
    - MRCF residual block: a 3x3 ConvNormAct entry, then parallel branches at several resolutions and receptive
      fields (full resolution with dilation 1 and 2, and 1/2 and 1/4 resolution by average pooling, each a 3x3
      ConvNormAct to ``width / 4`` channels, upsampled back), concatenated and fused across channels by a 1x1
      convolution + norm, added to the shortcut, ReLU. Switched off it is the plain ResNet basic block of the same
      widths (two 3x3 convolutions + shortcut).
    - CMAM after every decoder block: a channel context (shared MLP over global average and max pooling) and
      spatial contexts at three scales (mean and max over channels of the map pooled by 1, 2 and 4, a 7x7
      convolution each, upsampled); the spatial contexts are mixed with per-sample softmax weights that a linear
      layer computes from the pooled features ("dynamic weights across contexts"), then channel and spatial logits
      are summed into one (N, C, H, W) attention ``sigmoid(c + s)`` (the "cross-mix": every weight depends on both
      contexts) multiplying the features.
    - EAB: external attention (Guo et al. 2021; two linear memories of 64 slots, double normalisation, 1x1 input
      and output projections and a residual as in the authors' and MALUNet's blocks) on each of the four skip
      connections.
    - Decoder: bilinear 2x upsampling + 1x1 convolution, concatenation with the (bridged) skip, a residual block,
      CMAM; a 1x1 head on the full-resolution map.

Switches: ``use_mrcf`` (off: plain residual blocks), ``use_cmam`` (off: identity), ``use_eab`` (off: identity skips).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import ConvNormAct, ExternalAttention, ResidualBlock, pool_to_scale

__all__ = ["EAMNet", "MRCFBlock", "CrossMixAttention", "eamnet", "eamnet_s"]


class MRCFBlock(nn.Module):
    """Multi-Resolution Multi-Channel Fusion residual block (our reading, see the module docstring).

    Args:
        in_channels: input channels.
        out_channels: output channels; must be divisible by the number of branches.
        dilations: dilations of the full-resolution branches.
        pool_factors: downsampling factors of the low-resolution branches.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilations: tuple[int, ...] = (1, 2),
        pool_factors: tuple[int, ...] = (2, 4),
    ) -> None:
        super().__init__()
        n_branches = len(dilations) + len(pool_factors)
        if n_branches == 0 or out_channels % n_branches:
            raise ValueError(f"out_channels {out_channels} must be divisible by the {n_branches} branches")
        width = out_channels // n_branches
        self.entry = ConvNormAct(in_channels, out_channels, 3)
        self.dilated = nn.ModuleList(ConvNormAct(out_channels, width, 3, dilation=d) for d in dilations)
        self.pool_factors = tuple(pool_factors)
        self.pooled = nn.ModuleList(ConvNormAct(out_channels, width, 3) for _ in pool_factors)
        self.fuse = ConvNormAct(out_channels, out_channels, 1, act_layer=None)
        if in_channels != out_channels:
            self.shortcut: nn.Module = ConvNormAct(in_channels, out_channels, 1, act_layer=None)
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H, W)."""
        y = self.entry(x)
        size = y.shape[-2:]
        branches = [conv(y) for conv in self.dilated]
        for factor, conv in zip(self.pool_factors, self.pooled):
            low = conv(pool_to_scale(y, factor))
            branches.append(F.interpolate(low, size=size, mode="bilinear", align_corners=False))
        return self.act(self.fuse(torch.cat(branches, dim=1)) + self.shortcut(x))


class CrossMixAttention(nn.Module):
    """Cross-Mix Attention Module (our reading, see the module docstring): ``x * sigmoid(c(x) + sum_k g_k s_k(x))``.

    Args:
        channels: input channels.
        reduction: hidden width of the channel MLP is ``max(channels // reduction, 4)``.
        scales: pooling factors of the spatial contexts.
        kernel_size: kernel of the spatial-context convolutions.
    """

    def __init__(
        self, channels: int, reduction: int = 8, scales: tuple[int, ...] = (1, 2, 4), kernel_size: int = 7
    ) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
        if not scales or any(s < 1 for s in scales):
            raise ValueError(f"scales must be positive pooling factors, got {scales!r}")
        hidden = max(channels // reduction, 4)
        self.channel_mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.scales = tuple(scales)
        self.spatial = nn.ModuleList(nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2) for _ in scales)
        self.context_gate = nn.Conv2d(2 * channels, len(scales), 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        size = x.shape[-2:]
        avg, mx = F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)
        channel_logits = self.channel_mlp(avg) + self.channel_mlp(mx)  # (N, C, 1, 1)
        gates = self.context_gate(torch.cat([avg, mx], dim=1)).softmax(dim=1)  # (N, K, 1, 1)
        spatial_logits = 0
        for k, (factor, conv) in enumerate(zip(self.scales, self.spatial)):
            pooled = pool_to_scale(x, factor)
            s = conv(torch.cat([pooled.mean(dim=1, keepdim=True), pooled.amax(dim=1, keepdim=True)], dim=1))
            if factor != 1:
                s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
            spatial_logits = spatial_logits + gates[:, k : k + 1] * s
        return x * torch.sigmoid(channel_logits + spatial_logits)


class EAMNet(SegmentationModel):
    """Multi-scale residual U-Net with MRCF blocks, CMAM in the decoder and external attention on the skips.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: widths of the levels, shallowest first (the first at full resolution, the last the bottleneck);
            each divisible by 4 (the MRCF branches).
        memory_size: slots of each external-attention memory.
        stem_stride: 1 keeps the first level at full resolution; 2 puts it at 1/2 (the head's logits are then
            upsampled bilinearly, as MALUNet does), which quarters the cost of the widest maps.
        use_mrcf: multi-scale MRCF residual blocks in the encoder (off: plain residual blocks).
        use_cmam: CMAM after every decoder block (off: identity).
        use_eab: external attention on every skip connection (off: identity).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (32, 64, 128, 256, 512),
        memory_size: int = 64,
        stem_stride: int = 1,
        use_mrcf: bool = True,
        use_cmam: bool = True,
        use_eab: bool = True,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 levels, got {channels!r}")
        if use_mrcf and any(c % 4 for c in channels):
            raise ValueError(f"channels must be multiples of 4 for the MRCF branches, got {channels!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.stride = 2 ** (len(channels) - 1) * stem_stride
        self.use_mrcf, self.use_cmam, self.use_eab = use_mrcf, use_cmam, use_eab

        def block(cin: int, cout: int) -> nn.Module:
            return MRCFBlock(cin, cout) if use_mrcf else ResidualBlock(cin, cout)

        self.stem = ConvNormAct(in_channels, channels[0], 3, stride=stem_stride)
        self.encoder = nn.ModuleList(block(channels[i - 1] if i else channels[0], c) for i, c in enumerate(channels))
        self.pool = nn.MaxPool2d(2)
        self.skip_attention = nn.ModuleList(
            ExternalAttention(c, memory_size) if use_eab else nn.Identity() for c in channels[:-1]
        )
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.decoder_attention = nn.ModuleList()
        for deep, skip in zip(channels[:0:-1], channels[-2::-1]):
            self.upsamplers.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(deep, skip, 1)
                )
            )
            self.decoder.append(ResidualBlock(2 * skip, skip))
            self.decoder_attention.append(CrossMixAttention(skip) if use_cmam else nn.Identity())
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward_output(self, x: Tensor) -> ModelOutput:
        """Logits (N, K, H, W); no auxiliary outputs."""
        size = x.shape[-2:]
        x = self.stem(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        skips = [bridge(s) for bridge, s in zip(self.skip_attention, skips)]
        for up, stage, attention in zip(self.upsamplers, self.decoder, self.decoder_attention):
            x = attention(stage(torch.cat([skips.pop(), up(x)], dim=1)))
        logits = self.head(x)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return ModelOutput(logits=logits)


@register_model(paper_size=True)
def eamnet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> EAMNet:
    """EAMNet at our paper-like widths 32-512 (the abstract gives no size)."""
    return EAMNet(in_channels, num_classes, **{"channels": (32, 64, 128, 256, 512), **kwargs})


@register_model(cpu_size=True)
def eamnet_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> EAMNet:
    """EAMNet at widths 16-96 with a stride-2 stem (levels 1/2 .. 1/32), trains on 2 CPU cores."""
    return EAMNet(in_channels, num_classes, **{"channels": (16, 32, 48, 64, 96), "stem_stride": 2, **kwargs})
