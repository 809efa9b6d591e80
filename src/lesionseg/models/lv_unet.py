"""LV-UNet.

Jiang, Wang, Tian, Cheng and Liu, "LV-UNet: A Lightweight and Vanilla Model for Medical Image Segmentation", IEEE
BIBM 2024 (ML4BMI workshop), arXiv 2408.16886; public code github.com/juntaoJianggavin/LV-UNet (``LV_UNet.py``).

The paper and its code: the encoder is the start of an ImageNet-pretrained MobileNetV3-Large (its stem and inverted
residual blocks 1-9: 1/2 at 16 channels, 1/4 at 24, 1/8 at 40, 1/16 at 80; squeeze-excitation in blocks 4-6,
hard-swish from block 7), followed by three VanillaNet-style fusible blocks that keep halving the resolution
(1/32, 1/64, 1/128 at 160, 240, 480 channels). A fusible block is ``1x1 conv + BN -> leaky_relu(slope a) -> 1x1 conv +
BN -> 2x2 max-pool -> series activation``, where the series activation is ``ReLU -> depthwise (2n+1)x(2n+1)
convolution -> BN`` (n = ``act_num`` = 1 in the code: a 3x3). The decoder mirrors it with fusible up-blocks (the
max-pool replaced by bilinear x2 upsampling): 480 -> 240 -> 160 -> 80, each added to the encoder feature of the same
size, then 80 -> 40 (+ the 1/8 feature) -> 24 (+ the 1/4 feature) -> 16, a last up-block 16 -> 16 at full size and a
1x1 convolution to the logits. "Deep training" raises the slope ``a`` from 0 (ReLU) to 1 (identity) during training
so that each block's two 1x1 convolutions (and their BNs) fuse into one for deployment; the paper reports the fused
("deploy") model's parameters and FLOPs. Training: Adam 1e-3, 300 epochs, 256x256, batch 8 (code README).

Ours: the MobileNetV3-Large blocks are written out here (no torchvision) and trained from scratch: no ImageNet
weights (the original relies on them; none can be downloaded here). We build and train the unfused training form with
a fixed slope ``a`` (``act_learn``, 0 = ReLU by default; the trainer has no deep-training schedule), so our parameter
count and MACs are those of the training-form network, not of the fused deploy model. Input H and W must be
multiples of 128 (seven halvings).

Size: ``lv_unet`` is the code's network (fusible stages 80-160-240-480, decoder 80-40-24-16): 0.94M parameters and
0.18 GMACs at 256x256 in the training form, light enough to train on 2 CPU cores as it is (like MALUNet and UNeXt,
it is registered as both the paper size and the CPU size; halving the fusible stages saved only 8% of the MACs,
which sit in the MobileNetV3 stem at high resolution).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel

__all__ = [
    "FusibleBlock",
    "InvertedResidual",
    "LVUNet",
    "MobileNetV3Stem",
    "SeriesActivation",
    "SqueezeExcitation",
    "lv_unet",
]

# MobileNetV3-Large blocks 1-9: (kernel, expanded, out, squeeze-excite, hard-swish, stride)
MOBILENETV3_LARGE_1_9 = (
    (3, 16, 16, False, False, 1),
    (3, 64, 24, False, False, 2),
    (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2),
    (5, 120, 40, True, False, 1),
    (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2),
    (3, 200, 80, False, True, 1),
    (3, 184, 80, False, True, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: the nearest multiple of ``divisor``, never more than 10% below ``value``."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


class SqueezeExcitation(nn.Module):
    """MobileNetV3's SE: global average pool, 1x1 conv, ReLU, 1x1 conv, hard-sigmoid, scale.

    Args:
        channels: input channels.
        squeeze: hidden channels.
    """

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        w = F.relu(self.fc1(x.mean((2, 3), keepdim=True)))
        return x * F.hardsigmoid(self.fc2(w))


def _conv_bn_act(cin: int, cout: int, kernel: int, stride: int, groups: int, act: type[nn.Module] | None) -> nn.Module:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expansion (skipped when it would not widen), depthwise kxk, optional SE, 1x1 projection.

    Residual when the stride is 1 and the width is kept.

    Args:
        in_channels: input channels.
        kernel: depthwise kernel size.
        expanded: expanded width.
        out_channels: output channels.
        use_se: squeeze-excitation after the depthwise convolution.
        hardswish: hard-swish activations instead of ReLU.
        stride: depthwise stride (1 or 2).
    """

    def __init__(
        self,
        in_channels: int,
        kernel: int,
        expanded: int,
        out_channels: int,
        use_se: bool,
        hardswish: bool,
        stride: int,
    ) -> None:
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(_conv_bn_act(in_channels, expanded, 1, 1, 1, act))
        layers.append(_conv_bn_act(expanded, expanded, kernel, stride, expanded, act))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4)))
        layers.append(_conv_bn_act(expanded, out_channels, 1, 1, 1, None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3Stem(nn.Module):
    """MobileNetV3-Large's stem and blocks 1-9, returning the 1/2, 1/4, 1/8 and 1/16 features (16, 24, 40, 80 ch).

    Args:
        in_channels: input channels.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.stem = _conv_bn_act(in_channels, 16, 3, 2, 1, nn.Hardswish)
        blocks = []
        cin = 16
        for kernel, expanded, cout, use_se, hardswish, stride in MOBILENETV3_LARGE_1_9:
            blocks.append(InvertedResidual(cin, kernel, expanded, cout, use_se, hardswish, stride))
            cin = cout
        # grouped as the LV-UNet code: blocks 1-2 (to 1/4), 3-5 (to 1/8), 6-9 (to 1/16)
        self.stages = nn.ModuleList(
            [nn.Sequential(*blocks[0:2]), nn.Sequential(*blocks[2:5]), nn.Sequential(*blocks[5:9])]
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class SeriesActivation(nn.Module):
    """VanillaNet's series-informed activation: ReLU, then a depthwise (2n+1)x(2n+1) convolution and BN.

    Args:
        channels: channels.
        act_num: n.
    """

    def __init__(self, channels: int, act_num: int = 1) -> None:
        super().__init__()
        if act_num < 0:
            raise ValueError(f"act_num must be >= 0, got {act_num}")
        k = 2 * act_num + 1
        self.conv = nn.Conv2d(channels, channels, k, padding=act_num, groups=channels, bias=False)
        self.norm = nn.BatchNorm2d(channels, eps=1e-6)
        nn.init.trunc_normal_(self.conv.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(F.relu(x)))


class FusibleBlock(nn.Module):
    """LV-UNet's fusible block: ``1x1+BN -> leaky_relu(act_learn) -> 1x1+BN -> resample -> series activation``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        scale: 0.5 for a 2x2 max-pool (encoder), 2 for bilinear x2 upsampling (decoder), 1 for neither.
        act_num: series-activation size n.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: float = 0.5, act_num: int = 1) -> None:
        super().__init__()
        if scale not in (0.5, 1, 2):
            raise ValueError(f"scale must be 0.5, 1 or 2, got {scale}")
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, in_channels, 1), nn.BatchNorm2d(in_channels, eps=1e-6))
        self.conv2 = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels, eps=1e-6))
        self.scale = scale
        self.act = SeriesActivation(out_channels, act_num)
        # Deep training's slope: 0 is ReLU; raising it to 1 during training makes conv1 and conv2 fusible.
        self.act_learn = 0.0

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(F.leaky_relu(self.conv1(x), self.act_learn))
        if self.scale == 0.5:
            x = F.max_pool2d(x, 2)
        elif self.scale == 2:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.act(x)


class LVUNet(SegmentationModel):
    """LV-UNet: MobileNetV3-Large encoder start, fusible down- and up-blocks, additive skips.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: widths of the fusible stages, the first being the 1/16 level (80 as MobileNetV3's block 9 gives it,
            or any width, reached by a 1x1 projection) then 1/32, 1/64, 1/128.
        act_num: series-activation size n (kernel 2n + 1).
        act_learn: the fixed leaky-ReLU slope of the fusible blocks (0 = ReLU; 1 = linear, fusible).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (80, 160, 240, 480),
        act_num: int = 1,
        act_learn: float = 0.0,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels needs >= 2 positive widths, got {channels!r}")
        self.stride = 16 * 2 ** (len(channels) - 1)
        self.encoder = MobileNetV3Stem(in_channels)
        self.project = nn.Identity() if channels[0] == 80 else nn.Conv2d(80, channels[0], 1)
        self.down = nn.ModuleList(FusibleBlock(a, b, 0.5, act_num) for a, b in zip(channels[:-1], channels[1:]))
        self.up = nn.ModuleList(
            FusibleBlock(b, a, 2, act_num) for a, b in reversed(list(zip(channels[:-1], channels[1:])))
        )
        # 1/16 -> 1/8 (+40) -> 1/4 (+24) -> 1/2 (16) -> 1/1 (16)
        self.up_mobile = nn.ModuleList(
            [
                FusibleBlock(channels[0], 40, 2, act_num),
                FusibleBlock(40, 24, 2, act_num),
                FusibleBlock(24, 16, 2, act_num),
            ]
        )
        self.final = FusibleBlock(16, 16, 2, act_num)
        self.head = nn.Conv2d(16, num_classes, 1)
        self.set_act_learn(act_learn)

    def set_act_learn(self, slope: float) -> None:
        """Set the leaky-ReLU slope of every fusible block (deep training raises it from 0 to 1)."""
        if not 0.0 <= slope <= 1.0:
            raise ValueError(f"act_learn must be in [0, 1], got {slope}")
        for m in self.modules():
            if isinstance(m, FusibleBlock):
                m.act_learn = float(slope)

    def forward_output(self, x: Tensor) -> ModelOutput:
        _, e1, e2, e3 = self.encoder(x)
        x = self.project(e3)
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = block(x) + skip
        x = self.up_mobile[0](x) + e2
        x = self.up_mobile[1](x) + e1
        x = self.final(self.up_mobile[2](x))
        return ModelOutput(logits=self.head(x))


@register_model(paper_size=True, cpu_size=True)
def lv_unet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> LVUNet:
    """LV-UNet as the public code (fusible stages 80-160-240-480; 0.94M parameters, 0.18 GMACs at 256x256 in the
    training form), no ImageNet weights; light enough for 2 CPU cores as it is."""
    return LVUNet(in_channels, num_classes, **kwargs)
