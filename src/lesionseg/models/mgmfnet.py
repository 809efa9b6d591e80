"""MGMFNet: mask-guided multi-scale fusion network (MGMSCF decoder + DPAM).

"Mask-Guided Multi-Scale Fusion Network for Skin Lesion Segmentation" (MGMFNet); code at
github.com/dreamhonme/MGMFNet, whose network file is not published.

What the paper (abstract) states: a Mask-Guided Multi-Scale Convolution Fusion decoder (MGMSCF) uses predicted
masks to build multi-scale focus regions that localise lesion features level by level and fuse features in a
context-aware way; a Dual-Path Parallel Adaptive Attention Mechanism (DPAM) sets up bidirectional adaptive
interactions between shallow spatial and deep semantic features. Evaluated on ISIC 2016/2017/2018.

What the public repository shows: a DconnNet-derived model on a ResNet-34 encoder (ImageNet weights); the training
loss ``main + 0.5 aux1 + 0.4 aux2 + 0.3 aux3 + 0.2 aux4 + 0.1 aux5`` over five side outputs with BCE + Dice
(weights 1 and 1; that code adds an image-gradient L1 term and DconnNet's connectivity loss on the main output,
which we leave out); Adam at 1e-4, 300 epochs, batch 10, input 224x320; a CPCA-like attention block (channel
attention, then a depthwise 5x5 and 1x7/7x1, 1x11/11x1, 1x21/21x1 strip convolutions) that we use as DPAM's
attention (:class:`~lesionseg.models.blocks.StripConvAttention`).

Our reading where both are silent:
    - Encoder: a plain convolutional ResNet encoder trained from scratch (we ship no ImageNet weights): a 7x7
      stride-2 stem, 3x3 max pooling, four stages of ResNet basic blocks; ResNet-34 layout (depths 3-4-6-3, widths
      64-64-128-256-512) at the paper size, depths 1-1-1-1 and widths 8-16-32-64-128 for the CPU size. Features at
      1/2, 1/4, 1/8, 1/16 (skips) and 1/32 (bottleneck); input H, W multiples of 32.
    - Decoder: four levels (1/16 .. 1/2). A side mask is predicted from the bottleneck and after every decoder level,
      five in all. Level ``l`` upsamples the deeper features (1x1 projection to the skip width) and the deeper side
      mask, applies DPAM to the (skip, deep) pair, fuses them with MGMSCF guided by the deeper mask, and predicts its
      own side mask. The main logits are the finest (1/2) side mask upsampled to the input size plus a residual
      correction: the 1/2 map upsampled, a 3x3 ConvNormAct and a 1x1 head.
    - MGMSCF: ``p = sigmoid(side logits)`` (max over classes), focus regions ``p``, ``maxpool5(p)``, ``maxpool9(p)``
      (dilated masks) and the boundary band ``maxpool3(p) - erode3(p)``; four 3x3 ConvNormAct branches (half width)
      with dilation 1, 2, 3 and 1 see the concatenated-and-projected features gated by their region as
      ``x * (1 + r)`` (the focus region emphasises, the background context is kept), then a 1x1 fusion across
      channels and a residual.
      ``use_mask_guidance=False`` keeps the branches with ``r = 0``; ``use_mgmscf=False`` replaces the whole fusion by
      two 3x3 ConvNormAct on the concatenation (a plain U-Net decoder level; the side heads stay, so the deep
      supervision weights do not change).
    - DPAM: each path runs its own strip-conv attention (shallow path on the skip, deep path on the upsampled
      decoder features); the shallow path sends a spatial weight map (CBAM-style spatial attention of its output)
      to the deep path, the deep path sends channel weights (channel attention of its output) to the shallow path;
      each path returns ``input + attended * received weights``.

Outputs: ``forward_output`` returns the main logits and ``aux_logits`` = the five side masks **finest first**
(1/2, 1/4, 1/8, 1/16, 1/32 of the input), so the repository weights read in order: deep supervision
``(1.0, 0.5, 0.4, 0.3, 0.2, 0.1)``.

Switches: ``use_mgmscf``, ``use_mask_guidance``, ``use_dpam``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import ChannelAttention, ConvNormAct, DoubleConv, ResidualBlock, SpatialAttention, StripConvAttention

__all__ = [
    "NUM_SIDE_OUTPUTS",
    "DualPathAttention",
    "MGMFNet",
    "MaskGuidedFusion",
    "PlainFusion",
    "focus_regions",
    "mgmfnet",
    "mgmfnet_s",
]

NUM_SIDE_OUTPUTS = 5


def focus_regions(mask_logits: Tensor, dilations: tuple[int, ...] = (5, 9), band: int = 3) -> list[Tensor]:
    """Multi-scale focus regions of a predicted mask.

    Args:
        mask_logits: side-mask logits (N, K, H, W); the foreground probability is the max over the K classes.
        dilations: odd max-pool sizes of the dilated masks.
        band: odd size of the dilation and erosion whose difference is the boundary band.

    Returns:
        ``[p, dilate_d1(p), ..., boundary band]``, each (N, 1, H, W) in [0, 1].
    """
    p = torch.sigmoid(mask_logits).amax(dim=1, keepdim=True)
    regions = [p]
    regions += [F.max_pool2d(p, k, stride=1, padding=k // 2) for k in dilations]
    dilated = F.max_pool2d(p, band, stride=1, padding=band // 2)
    eroded = -F.max_pool2d(-p, band, stride=1, padding=band // 2)
    regions.append(dilated - eroded)
    return regions


class MaskGuidedFusion(nn.Module):
    """MGMSCF fusion of one decoder level: multi-scale convolutions gated by mask focus regions.

    Args:
        skip_channels: width of the skip features.
        deep_channels: width of the (projected) deeper features.
        out_channels: output width.
        use_mask_guidance: gate the branches with the focus regions (off: ungated multi-scale fusion).
    """

    dilations: tuple[int, ...] = (1, 2, 3, 1)  # mask, dilated 5, dilated 9, boundary band

    def __init__(
        self, skip_channels: int, deep_channels: int, out_channels: int, use_mask_guidance: bool = True
    ) -> None:
        super().__init__()
        self.use_mask_guidance = use_mask_guidance
        branch = max(out_channels // 2, 8)
        self.reduce = ConvNormAct(skip_channels + deep_channels, out_channels, 1)
        self.branches = nn.ModuleList(ConvNormAct(out_channels, branch, 3, dilation=d) for d in self.dilations)
        self.fuse = ConvNormAct(branch * len(self.dilations), out_channels, 1, act_layer=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, skip: Tensor, deep: Tensor, mask_logits: Tensor) -> Tensor:
        """skip (N, Cs, H, W), deep (N, Cd, H, W), mask_logits (N, K, H, W) -> (N, out_channels, H, W)."""
        x = self.reduce(torch.cat([skip, deep], dim=1))
        if self.use_mask_guidance:
            regions = focus_regions(mask_logits)
            outs = [conv(x * (1 + r)) for conv, r in zip(self.branches, regions)]
        else:
            outs = [conv(x) for conv in self.branches]
        return self.act(self.fuse(torch.cat(outs, dim=1)) + x)


class PlainFusion(nn.Module):
    """Plain decoder fusion (MGMSCF off): two 3x3 ConvNormAct on the concatenation; the mask is ignored."""

    def __init__(self, skip_channels: int, deep_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(skip_channels + deep_channels, out_channels)

    def forward(self, skip: Tensor, deep: Tensor, mask_logits: Tensor) -> Tensor:
        """skip (N, Cs, H, W), deep (N, Cd, H, W) -> (N, out_channels, H, W)."""
        return self.conv(torch.cat([skip, deep], dim=1))


class DualPathAttention(nn.Module):
    """DPAM: shallow-spatial and deep-semantic paths exchanging adaptive weights both ways.

    Args:
        channels: width of both inputs.
        reduction: channel-attention reduction inside the strip-conv attention.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.shallow_path = StripConvAttention(channels, reduction=reduction)
        self.deep_path = StripConvAttention(channels, reduction=reduction)
        self.to_deep = SpatialAttention(7)
        self.to_shallow = ChannelAttention(channels, reduction=reduction)

    def forward(self, shallow: Tensor, deep: Tensor) -> tuple[Tensor, Tensor]:
        """shallow, deep (N, C, H, W) -> (shallow', deep'), same shapes."""
        a_shallow = self.shallow_path(shallow)
        a_deep = self.deep_path(deep)
        spatial_weights = self.to_deep.weights(a_shallow)  # (N, 1, H, W) from the shallow path
        channel_weights = self.to_shallow.weights(a_deep)  # (N, C, 1, 1) from the deep path
        return shallow + a_shallow * channel_weights, deep + a_deep * spatial_weights


class MGMFNet(SegmentationModel):
    """ResNet encoder, mask-guided multi-scale fusion decoder with DPAM, five deeply supervised side masks.

    Args:
        in_channels: input channels.
        num_classes: output logit channels (also of every side mask).
        channels: widths of the stem and the four encoder stages (five values, shallowest first).
        depths: residual blocks per encoder stage (four values).
        use_mgmscf: mask-guided multi-scale fusion in the decoder (off: plain two-conv fusion).
        use_mask_guidance: gate the MGMSCF branches with the focus regions (off: ungated; no effect without MGMSCF).
        use_dpam: dual-path attention on every (skip, deep) pair (off: identity).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (64, 64, 128, 256, 512),
        depths: tuple[int, ...] = (3, 4, 6, 3),
        use_mgmscf: bool = True,
        use_mask_guidance: bool = True,
        use_dpam: bool = True,
    ) -> None:
        super().__init__()
        channels, depths = tuple(channels), tuple(depths)
        if len(channels) != NUM_SIDE_OUTPUTS or any(c < 1 for c in channels):
            raise ValueError(f"channels must be 5 positive widths (stem + 4 stages), got {channels!r}")
        if len(depths) != NUM_SIDE_OUTPUTS - 1 or any(d < 1 for d in depths):
            raise ValueError(f"depths must be 4 positive block counts, got {depths!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        self.stride = 32
        self.use_mgmscf, self.use_mask_guidance, self.use_dpam = use_mgmscf, use_mask_guidance, use_dpam

        self.stem = ConvNormAct(in_channels, channels[0], 7, stride=2)
        self.stages = nn.ModuleList()
        prev = channels[0]
        for i, (c, d) in enumerate(zip(channels[1:], depths)):
            blocks: list[nn.Module] = [nn.MaxPool2d(3, stride=2, padding=1)] if i == 0 else []
            blocks.append(ResidualBlock(prev, c, stride=1 if i == 0 else 2))
            blocks += [ResidualBlock(c, c) for _ in range(d - 1)]
            self.stages.append(nn.Sequential(*blocks))
            prev = c

        self.bottleneck_head = nn.Conv2d(channels[-1], num_classes, 1)
        self.projections = nn.ModuleList()
        self.dpam = nn.ModuleList() if use_dpam else None
        self.fusions = nn.ModuleList()
        self.side_heads = nn.ModuleList()
        for deep, skip in zip(channels[:0:-1], channels[-2::-1]):
            self.projections.append(ConvNormAct(deep, skip, 1))
            if self.dpam is not None:
                self.dpam.append(DualPathAttention(skip))
            if use_mgmscf:
                self.fusions.append(MaskGuidedFusion(skip, skip, skip, use_mask_guidance))
            else:
                self.fusions.append(PlainFusion(skip, skip, skip))
            self.side_heads.append(nn.Conv2d(skip, num_classes, 1))
        self.refine = ConvNormAct(channels[0], channels[0], 3)
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward_output(self, x: Tensor) -> ModelOutput:
        """Main logits (N, K, H, W) and the five side masks, finest first (1/2 .. 1/32 of H, W)."""
        size = x.shape[-2:]
        skips = [self.stem(x)]
        for stage in self.stages:
            skips.append(stage(skips[-1]))
        deep = skips.pop()
        mask = self.bottleneck_head(deep)
        side = [mask]
        for i, (project, fusion, side_head) in enumerate(zip(self.projections, self.fusions, self.side_heads)):
            skip = skips.pop()
            deep = project(F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False))
            mask = F.interpolate(mask, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            if self.dpam is not None:
                skip, deep = self.dpam[i](skip, deep)
            deep = fusion(skip, deep, mask)
            mask = side_head(deep)
            side.append(mask)
        # the finest side mask, upsampled, plus a full-resolution residual correction
        logits = self.head(self.refine(F.interpolate(deep, size=size, mode="bilinear", align_corners=False)))
        logits = logits + F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
        return ModelOutput(logits=logits, aux_logits=tuple(reversed(side)))


@register_model(paper_size=True)
def mgmfnet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> MGMFNet:
    """MGMFNet on a ResNet-34-layout encoder (widths 64-512, depths 3-4-6-3), trained from scratch."""
    return MGMFNet(in_channels, num_classes, **{"channels": (64, 64, 128, 256, 512), "depths": (3, 4, 6, 3), **kwargs})


@register_model(cpu_size=True)
def mgmfnet_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> MGMFNet:
    """MGMFNet at widths 8-128, one block per stage, trains on 2 CPU cores."""
    return MGMFNet(in_channels, num_classes, **{"channels": (8, 16, 32, 64, 128), "depths": (1, 1, 1, 1), **kwargs})
