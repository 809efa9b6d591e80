"""EGE-UNet.

Ruan, Xie, Gao, Liu and Fu, "EGE-UNet: an Efficient Group Enhanced UNet for skin lesion segmentation", MICCAI 2023;
public code: github.com/JCruan519/EGE-UNet (``models/egeunet.py``).

The paper: MALUNet's six-level U-shape (widths 8-16-24-32-48-64; 3x3 convolutions in the three shallow levels,
GroupNorm(4), 2x2 max-pooling and GELU per encoder level, bilinear x2 upsampling and additive skips in the decoder)
whose deep levels are group multi-axis Hadamard product attention (GHPA): after a LayerNorm the channels are split
into four groups; three are multiplied (Hadamard product) by learnable weights over the (H, W), (C, H) and (C, W)
axes, each a small parameter (8x8, Cx8, Cx8) resized to the feature size and passed through a depthwise conv + GELU
+ 1x1; the fourth goes through a 1x1 + GELU + depthwise 3x3; then LayerNorm, depthwise 3x3, GELU, 1x1 to the output
width. The skips pass through group aggregation bridges (GAB): the deeper bridge output projected (1x1) and resized,
the skip, and the mask predicted at this decoder level, split into four groups, each (deeper quarter, skip quarter,
mask) through LayerNorm and a depthwise 3x3 convolution of dilation 1, 2, 5, 7, concatenated, LayerNorm, 1x1.
Mask-guided (GT-guided) deep supervision: a 1x1 side head on each of the five decoder levels. Published: 0.053M
parameters, 0.072 GFLOPs at 256x256.

From the public code (the paper is silent): the deepest bridge takes the bottleneck output as its deeper input and
each shallower bridge the previous bridge's output; the mask fed to a bridge is the side head's raw logits (no
sigmoid); LayerNorms over channels with eps 1e-6; bilinear resizing with ``align_corners=True``; the head is a 1x1
convolution at 1/2 resolution upsampled x2; the timm-style initialisation; the loss (``GT_BceDiceLoss``) is
BCE + Dice on the main output plus 0.1, 0.2, 0.3, 0.4, 0.5 times BCE + Dice on the side outputs from the deepest
(1/32) to the shallowest (1/2), each upsampled to the input size.

Ours: ``forward(x, return_aux=True)`` returns the five side outputs in ``ModelOutput.aux_logits`` at their own
resolutions, deepest first (1/32, 1/16, 1/8, 1/4, 1/2), so the configs' ``loss.deep_supervision`` is
``[1.0, 0.1, 0.2, 0.3, 0.4, 0.5]``; our deep-supervision loss upsamples them (``align_corners=False``). The side heads
have ``num_classes`` channels (1 in the paper), and so has the mask input of each bridge. Switches for the paper's
ablation study: ``use_ghpa`` (off: a 3x3 convolution), ``use_gab`` (off: plain additive skips),
``use_mask_guidance`` (off: no side heads, no aux outputs, bridges without the mask channel; the public code cannot
run that way). Input H and W must be multiples of 32 (2**(levels - 1)). Under CPU bf16 autocast the bridges' dilated
depthwise convolutions, the GroupNorms and the LayerNorms compute in float32 (as in MALUNet; the first had non-finite
bf16 weight gradients from the first step, and crashed oneDNN on channels-last inputs); on CPU every level computes
channels-last.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import DepthwiseConv2d, LayerNorm2d, UStage, check_widths, init_token_weights

__all__ = ["EGEUNet", "GroupAggregationBridge", "GroupedHadamardAttention", "egeunet"]


def _depthwise(channels: int, dim: int = 2, dilation: int = 1) -> nn.Module:
    if dim == 2:
        return DepthwiseConv2d(channels, 3, dilation=dilation)
    return nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels)


class GroupedHadamardAttention(nn.Module):
    """Group multi-axis Hadamard product attention (GHPA), ``(N, C_in, H, W) -> (N, C_out, H, W)``.

    Args:
        in_channels: input channels, a multiple of 4.
        out_channels: output channels.
        param_size: side of the learnable axis weights before they are resized to the feature size (8 in the paper).
    """

    def __init__(self, in_channels: int, out_channels: int, param_size: int = 8) -> None:
        super().__init__()
        if in_channels < 4 or in_channels % 4:
            raise ValueError(f"in_channels must be a positive multiple of 4, got {in_channels}")
        if out_channels < 1 or param_size < 2:
            raise ValueError(f"out_channels must be >= 1 and param_size >= 2, got {out_channels}, {param_size}")
        c = in_channels // 4
        self.norm_in = LayerNorm2d(in_channels)
        self.weight_hw = nn.Parameter(torch.ones(1, c, param_size, param_size))
        self.weight_ch = nn.Parameter(torch.ones(1, c, param_size))
        self.weight_cw = nn.Parameter(torch.ones(1, c, param_size))
        self.conv_hw = nn.Sequential(_depthwise(c), nn.GELU(), nn.Conv2d(c, c, 1))
        self.conv_ch = nn.Sequential(_depthwise(c, dim=1), nn.GELU(), nn.Conv1d(c, c, 1))
        self.conv_cw = nn.Sequential(_depthwise(c, dim=1), nn.GELU(), nn.Conv1d(c, c, 1))
        self.local = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), _depthwise(c))
        self.norm_out = LayerNorm2d(in_channels)
        self.proj = nn.Sequential(_depthwise(in_channels), nn.GELU(), nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H, W)."""
        h, w = x.shape[-2:]
        x_hw, x_ch, x_cw, x_local = self.norm_in(x).chunk(4, dim=1)
        att_hw = self.conv_hw(F.interpolate(self.weight_hw, size=(h, w), mode="bilinear", align_corners=True))
        att_ch = self.conv_ch(F.interpolate(self.weight_ch, size=h, mode="linear", align_corners=True))
        att_cw = self.conv_cw(F.interpolate(self.weight_cw, size=w, mode="linear", align_corners=True))
        x = torch.cat(
            [x_hw * att_hw, x_ch * att_ch.unsqueeze(-1), x_cw * att_cw.unsqueeze(-2), self.local(x_local)], dim=1
        )
        return self.proj(self.norm_out(x))


class GroupAggregationBridge(nn.Module):
    """Group aggregation bridge (GAB): fuses a skip with the deeper features and the predicted mask.

    Args:
        high_channels: width of the deeper input.
        low_channels: width of the skip (and of the output), a multiple of ``len(dilations)``.
        mask_channels: channels of the mask input (0: no mask).
        dilations: dilation of each group's depthwise 3x3 convolution ((1, 2, 5, 7) in the paper).
    """

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        mask_channels: int = 1,
        dilations: tuple[int, ...] = (1, 2, 5, 7),
    ) -> None:
        super().__init__()
        if not dilations or low_channels < 1 or low_channels % len(dilations):
            raise ValueError(
                f"low_channels must be a multiple of len(dilations) = {len(dilations)}, got {low_channels}"
            )
        if high_channels < 1 or mask_channels < 0:
            raise ValueError(f"high_channels must be >= 1 and mask_channels >= 0, got {high_channels}, {mask_channels}")
        self.mask_channels = mask_channels
        group = 2 * (low_channels // len(dilations)) + mask_channels
        self.pre_project = nn.Conv2d(high_channels, low_channels, 1)
        self.groups = nn.ModuleList(nn.Sequential(LayerNorm2d(group), _depthwise(group, dilation=d)) for d in dilations)
        fused = group * len(dilations)
        self.fuse = nn.Sequential(LayerNorm2d(fused), nn.Conv2d(fused, low_channels, 1))

    def forward(self, high: Tensor, low: Tensor, mask: Tensor | None = None) -> Tensor:
        """Fuses the skip with the deeper features and the mask.

        Args:
            high: deeper features (N, high_channels, h, w), resized to the skip's size.
            low: skip (N, low_channels, H, W).
            mask: mask logits (N, mask_channels, H, W), required when ``mask_channels > 0``.

        Returns:
            (N, low_channels, H, W).
        """
        if (mask is None) != (self.mask_channels == 0):
            raise ValueError(f"this bridge takes a mask of {self.mask_channels} channels; got mask={mask is not None}")
        high = F.interpolate(self.pre_project(high), size=low.shape[-2:], mode="bilinear", align_corners=True)
        n = len(self.groups)
        extra = [mask] if mask is not None else []
        parts = [
            block(torch.cat([h, lo, *extra], dim=1))
            for block, h, lo in zip(self.groups, high.chunk(n, dim=1), low.chunk(n, dim=1))
        ]
        return self.fuse(torch.cat(parts, dim=1))


class EGEUNet(SegmentationModel):
    """EGE-UNet: MALUNet's U-shape with GHPA deep levels, group aggregation bridges and mask-guided side outputs.

    ``encoder[i]`` gives the skip of level ``i`` at 1/2**(i+1) of the input size; ``bottleneck`` keeps the deepest
    resolution; ``decoder[j]`` goes from width ``channels[-1-j]`` to ``channels[-2-j]`` (upsampling from the second
    step on); ``side_heads[j]`` predicts a mask from it, ``bridges[j]`` fuses the matching skip with the deeper bridge
    output (the bottleneck for ``j = 0``) and that mask, and the result is added; ``head`` is a 1x1 convolution at
    1/2 resolution, upsampled x2.

    Args:
        in_channels: input channels.
        num_classes: output logit channels (also of the side heads).
        channels: widths of the levels, shallowest first; the last is the bottleneck; multiples of 4.
        num_conv_stages: shallow levels built from a plain 3x3 convolution (3 in EGE-UNet); the others are GHPA.
        use_ghpa: GHPA in the deep levels; off, a 3x3 convolution.
        use_gab: group aggregation bridges on the skips; off, plain additive skips.
        use_mask_guidance: side heads (deep supervision, ``aux_logits``) whose masks also feed the bridges.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (8, 16, 24, 32, 48, 64),
        num_conv_stages: int = 3,
        use_ghpa: bool = True,
        use_gab: bool = True,
        use_mask_guidance: bool = True,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        check_widths(channels, num_conv_stages, in_channels, num_classes)
        self.channels = channels
        self.stride = 2 ** (len(channels) - 1)

        def body(cin: int, cout: int, level: int) -> nn.Module:
            if level < num_conv_stages or not use_ghpa:
                return nn.Conv2d(cin, cout, 3, padding=1)
            return GroupedHadamardAttention(cin, cout)

        last = len(channels) - 1
        ins = (in_channels,) + channels[:-1]
        self.encoder = nn.ModuleList(UStage(body(ins[i], channels[i], i), channels[i], "down") for i in range(last))
        self.bottleneck = UStage(body(ins[last], channels[last], last), channels[last], norm=False)
        levels = range(last, 0, -1)  # decoder step j maps channels[lvl] -> channels[lvl - 1]
        self.decoder = nn.ModuleList(
            UStage(body(channels[lvl], channels[lvl - 1], lvl), channels[lvl - 1], "up" if j else None)
            for j, lvl in enumerate(levels)
        )
        mask_channels = num_classes if use_mask_guidance else 0
        self.side_heads = (
            nn.ModuleList(nn.Conv2d(channels[lvl - 1], num_classes, 1) for lvl in levels) if use_mask_guidance else None
        )
        self.bridges = (
            nn.ModuleList(GroupAggregationBridge(channels[lvl], channels[lvl - 1], mask_channels) for lvl in levels)
            if use_gab
            else None
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        init_token_weights(self)

    def forward_output(self, x: Tensor) -> ModelOutput:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        deeper = x = self.bottleneck(x)
        aux: list[Tensor] = []
        for j, (stage, skip) in enumerate(zip(self.decoder, reversed(skips))):
            x = stage(x)
            mask = self.side_heads[j](x) if self.side_heads is not None else None
            if mask is not None:
                aux.append(mask)
            if self.bridges is not None:
                skip = deeper = self.bridges[j](deeper, skip, mask)
            x = x + skip
        logits = F.interpolate(self.head(x), scale_factor=2.0, mode="bilinear", align_corners=True)
        return ModelOutput(logits=logits, aux_logits=tuple(aux))


@register_model(paper_size=True, cpu_size=True)
def egeunet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> EGEUNet:
    """EGE-UNet at the paper's widths 8-16-24-32-48-64 (0.05M parameters, 0.07 GMACs at 256x256)."""
    return EGEUNet(in_channels, num_classes, **{"channels": (8, 16, 24, 32, 48, 64), **kwargs})
