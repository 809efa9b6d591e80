"""EFP: enhanced feature pyramid with cross-scale enhancement and spatial attention.

Wu, Lin, Xu, Kang, Meng and Liu, "Multi-Scale Feature Integration and Spatial Attention for Accurate Lesion
Segmentation", Preprints.org 202506.1010 (2025), not peer-reviewed.

What the paper states:
    - a convolutional encoder gives features ``F_1..F_4``, ``F_i = ConvBlock(F_{i-1})`` with ``F_0`` the image, each
      ConvBlock convolution + batch norm + nonlinearity, the resolution halving at every level;
    - cross-scale enhancement of two features of different scales: ``F*_ij = act(W_ij * F_i) + act(W_ji * F_j)``,
      ``W`` learnable convolutions;
    - spatial attention on every fused map: ``Ms = sigmoid(Conv2D([AvgPool(F*), MaxPool(F*)]))``, ``F_out = Ms * F*``;
    - an FPN (top-down pathway and lateral connections) and a loss ``l1 * Dice + l2 * BCE`` on the final output.
    Reported on ISIC 2018: mIoU 85.4, mDice 89.6, F1 89.2. No widths, kernel sizes, parameter count, optimiser,
    schedule, input size, loss weights or split are given.

What we chose where it is silent:
    - ConvBlock = stride-2 3x3 ConvNormAct then a 3x3 ConvNormAct (conv-BN-ReLU), so ``F_i`` is at ``1 / 2**i``;
      widths 64-128-256-512 at the paper-like size, 16-32-64-128 for the CPU size; input H, W multiples of 16;
    - "between different scales" is read as adjacent levels: each ``F_i`` is paired with ``F_{i+1}`` (``F_4`` with
      ``F_3``), the partner resampled to ``F_i``'s size (bilinear upsampling from the deeper level, 2x2 average
      pooling from the shallower one); ``W`` are 3x3 convolutions to ``F_i``'s width followed by batch norm, ``act``
      is ReLU;
    - the paper calls AvgPool/MaxPool "global" pooling, but a global pooling would leave no spatial map to attend
      with; we pool across channels (mean and max over C), as CBAM's spatial attention does, with a 7x7 convolution;
    - FPN: 1x1 laterals to ``fpn_channels`` (128 / 32), top-down nearest-neighbour upsampling and addition, a 3x3
      ConvNormAct on the finest map (1/2), a 1x1 head and bilinear upsampling of the logits to the input size;
    - loss weights 1 and 1 (configs), since ``l1, l2`` are not given.

Switches: ``use_cross_scale`` (off: ``F*_i = F_i``), ``use_spatial_attention`` (off: identity), so each ablation
row is one config change.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import ConvNormAct, SpatialAttention

__all__ = ["EFP", "CrossScaleEnhancement", "efp", "efp_s"]


class CrossScaleEnhancement(nn.Module):
    """``F*_ij = act(W_ij * F_i) + act(W_ji * resample(F_j))`` at ``F_i``'s size and width.

    Args:
        channels: width of ``F_i`` (and of the output).
        partner_channels: width of ``F_j``.
        partner_is_deeper: ``F_j`` has half the resolution of ``F_i`` (upsampled) or twice it (average-pooled).
    """

    def __init__(self, channels: int, partner_channels: int, partner_is_deeper: bool) -> None:
        super().__init__()
        self.partner_is_deeper = partner_is_deeper
        self.self_conv = ConvNormAct(channels, channels, 3)
        self.partner_conv = ConvNormAct(partner_channels, channels, 3)

    def forward(self, x: Tensor, partner: Tensor) -> Tensor:
        """x (N, C_i, H, W), partner (N, C_j, H/2, W/2) or (N, C_j, 2H, 2W) -> (N, C_i, H, W)."""
        if self.partner_is_deeper:
            partner = F.interpolate(partner, size=x.shape[-2:], mode="bilinear", align_corners=False)
        else:
            partner = F.avg_pool2d(partner, 2)
        return self.self_conv(x) + self.partner_conv(partner)


class EFP(SegmentationModel):
    """Four-level conv encoder, cross-scale enhancement, spatial attention and an FPN decoder.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: widths of ``F_1..F_4`` (four levels, shallowest first).
        fpn_channels: width of the FPN maps.
        attention_kernel: kernel size of the spatial-attention convolution.
        use_cross_scale: enable the cross-scale enhancement module.
        use_spatial_attention: enable spatial attention on the (enhanced) features.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (64, 128, 256, 512),
        fpn_channels: int = 128,
        attention_kernel: int = 7,
        use_cross_scale: bool = True,
        use_spatial_attention: bool = True,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if len(channels) != 4 or any(c < 1 for c in channels):
            raise ValueError(f"channels must be 4 positive widths (F_1..F_4), got {channels!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if fpn_channels < 1:
            raise ValueError(f"fpn_channels must be >= 1, got {fpn_channels}")
        self.stride = 2 ** len(channels)
        self.use_cross_scale = use_cross_scale
        self.use_spatial_attention = use_spatial_attention

        self.encoder = nn.ModuleList()
        prev = in_channels
        for c in channels:
            self.encoder.append(nn.Sequential(ConvNormAct(prev, c, 3, stride=2), ConvNormAct(c, c, 3)))
            prev = c
        last = len(channels) - 1
        if use_cross_scale:
            self.cross_scale = nn.ModuleList(
                CrossScaleEnhancement(c, channels[i + 1 if i < last else i - 1], partner_is_deeper=i < last)
                for i, c in enumerate(channels)
            )
        else:
            self.cross_scale = None
        self.spatial_attention = nn.ModuleList(
            SpatialAttention(attention_kernel) if use_spatial_attention else nn.Identity() for _ in channels
        )
        self.laterals = nn.ModuleList(nn.Conv2d(c, fpn_channels, 1) for c in channels)
        self.smooth = ConvNormAct(fpn_channels, fpn_channels, 3)
        self.head = nn.Conv2d(fpn_channels, num_classes, 1)

    def forward_output(self, x: Tensor) -> ModelOutput:
        """Logits (N, K, H, W) and ``features["pyramid"]``, the finest FPN map (N, fpn_channels, H/2, W/2)."""
        size = x.shape[-2:]
        feats = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        if self.cross_scale is not None:
            last = len(feats) - 1
            feats = [
                block(f, feats[i + 1 if i < last else i - 1])
                for i, (block, f) in enumerate(zip(self.cross_scale, feats))
            ]
        feats = [att(f) for att, f in zip(self.spatial_attention, feats)]
        p = self.laterals[-1](feats[-1])
        for lateral, f in zip(self.laterals[-2::-1], feats[-2::-1]):
            p = lateral(f) + F.interpolate(p, size=f.shape[-2:], mode="nearest")
        logits = self.head(self.smooth(p))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return ModelOutput(logits=logits, features={"pyramid": p})


@register_model(paper_size=True)
def efp(in_channels: int = 3, num_classes: int = 1, **kwargs) -> EFP:
    """EFP at our paper-like widths 64-512, FPN 128 (the paper gives no widths)."""
    return EFP(in_channels, num_classes, **{"channels": (64, 128, 256, 512), "fpn_channels": 128, **kwargs})


@register_model(cpu_size=True)
def efp_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> EFP:
    """EFP at widths 16-128, FPN 32, trains on 2 CPU cores."""
    return EFP(in_channels, num_classes, **{"channels": (16, 32, 64, 128), "fpn_channels": 32, **kwargs})
