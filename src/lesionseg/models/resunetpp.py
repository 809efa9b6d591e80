"""ResUNet++: a residual U-Net with squeeze-and-excitation, ASPP and decoder attention.

Jha, Smedsrud, Riegler, Johansen, de Lange, Halvorsen and Johansen, "ResUNet++: An Advanced Architecture for
Medical Image Segmentation", IEEE ISM 2019 (arXiv 1911.07067); code at github.com/DebeshJha/ResUNetPlusPlus
(``m_resunet.py`` in Keras, ``resunet++_pytorch.py``).

What the paper states: a stem block and three encoder residual units (BN-ReLU-conv pre-activation units with an
identity mapping, stride 2 halving the resolution), each followed by squeeze-and-excitation; an ASPP bridge; three
decoder levels, each an attention block (encoder features of that level and the previous decoder features),
nearest-neighbour upsampling, concatenation with the encoder features and a residual unit; ASPP on the last decoder
output, then a 1x1 convolution and a sigmoid. Trained on Kvasir-SEG and CVC-ClinicDB at 256x256.

What the authors' code fixes where the paper is silent (and we follow):
    - stem = conv3x3-BN-ReLU-conv3x3 plus a 1x1 conv + BN shortcut; residual unit = BN-ReLU-conv3x3(stride)-BN-ReLU-
      conv3x3 plus a 1x1 conv + BN shortcut (also when the width does not change); SE (reduction 8) on the sum,
      decoder units included;
    - ASPP = four 3x3 convolutions with dilation 1, 6, 12, 18, each + BN, summed, then a 1x1 convolution
      (:class:`~lesionseg.models.blocks.ASPP`);
    - attention block: ``g`` = encoder features at the skip's resolution, ``x`` = the coarser decoder features;
      ``BN-ReLU-conv3x3(g)`` max-pooled 2x2 plus ``BN-ReLU-conv3x3(x)``, then BN-ReLU-conv3x3, multiplied with ``x``
      (a full-width map, used unbounded: no sigmoid);
    - widths: ``channels = (c0, c1, c2, c3, bridge)``: stem c0, encoder c1..c3 at 1/2..1/8, ASPP bridge, decoder
      level ``i`` (skip ``ci``) outputs ``c(i+1)``, output ASPP to c0, 1x1 head. The code uses (16, 32, 64, 128, 256):
      4,062,993 trainable parameters in PyTorch, 4,070,385 as Keras counts them (the BN moving statistics included),
      the "4.07M" the paper reports. Widths (32, 64, 128, 256, 512) give 16.2M in this structure; the 14.48M of a
      popular PyTorch re-implementation (rishikksh20/ResUnet) at those widths comes from a different structure
      (SE before each unit instead of after, 3x3 shortcuts, a three-branch concatenating ASPP, a one-channel
      attention map).

Our differences: convolutions followed by batch norm have no bias, and SE has biases and a hidden width of at least
8 (:class:`~lesionseg.models.blocks.SqueezeExcite`), so our counts are a few thousand parameters off the code's.

Switches: ``use_se``, ``use_aspp`` (off: a residual unit as the bridge and no output ASPP, the head reads the last
decoder level), ``use_attention`` (off: the decoder features go straight to the upsampling). With all three off the
model is close to the ResUNet the paper compares against (pre-activation residual units, concatenating skips), at
ResUNet++'s widths and with the bridge kept at 1/8 where ResUNet's downsamples once more.

Input H and W must be multiples of ``2 ** (len(channels) - 2)`` (8 at the default five widths).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import ASPP, ConvNormAct, SqueezeExcite

__all__ = ["DecoderAttention", "ResUNetPlusPlus", "ResidualUnit", "resunetpp", "resunetpp_s"]


def _bn_relu_conv(in_channels: int, out_channels: int, stride: int = 1, bias: bool = True) -> nn.Sequential:
    """Pre-activation 3x3 convolution: BN -> ReLU -> conv; ``bias=False`` where a batch norm comes next."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=bias),
    )


class ResidualUnit(nn.Module):
    """ResUNet++ residual unit: two 3x3 convolutions plus a 1x1 conv + BN shortcut, then squeeze-and-excitation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution and of the shortcut (2 halves the resolution).
        preactivate: BN-ReLU before the first convolution (the residual units); False for the stem, whose first
            convolution reads the image (conv-BN-ReLU-conv).
        use_se: squeeze-and-excitation on the output; False leaves it out.
        se_reduction: SE reduction (8 in the authors' code).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        preactivate: bool = True,
        use_se: bool = True,
        se_reduction: int = 8,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if preactivate:
            first: nn.Module = _bn_relu_conv(in_channels, out_channels, stride, bias=False)
        else:
            first = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.body = nn.Sequential(first, _bn_relu_conv(out_channels, out_channels))
        self.stride = stride
        self.shortcut = ConvNormAct(in_channels, out_channels, 1, act_layer=None)
        self.se: nn.Module = SqueezeExcite(out_channels, reduction=se_reduction) if use_se else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride)."""
        # A 1x1 convolution with stride s reads every s-th pixel, so slicing first is the same shortcut; it also avoids
        # a crash (torch 2.13 CPU, oneDNN) in the weight gradient of strided 1x1 convolutions on channels-last inputs
        # with few channels (8 in resunetpp_s; 4 crashes too, 16 does not).
        shortcut = self.shortcut(x if self.stride == 1 else x[:, :, :: self.stride, :: self.stride])
        return self.se(self.body(x) + shortcut)


class DecoderAttention(nn.Module):
    """ResUNet++ attention block: encoder features ``g`` steer the coarser decoder features ``x``.

    ``y = conv(BN-ReLU(maxpool2(conv(BN-ReLU(g))) + conv(BN-ReLU(x)))) * x``, all convolutions 3x3 to ``x``'s
    width; the map multiplies ``x`` as it is, without a sigmoid, as in the authors' code.

    Args:
        encoder_channels: channels of ``g`` (at twice ``x``'s resolution).
        decoder_channels: channels of ``x`` (and of the output).
    """

    def __init__(self, encoder_channels: int, decoder_channels: int) -> None:
        super().__init__()
        # Their sum goes through a batch norm, which absorbs any bias.
        self.encoder_conv = _bn_relu_conv(encoder_channels, decoder_channels, bias=False)
        self.decoder_conv = _bn_relu_conv(decoder_channels, decoder_channels, bias=False)
        self.attend = _bn_relu_conv(decoder_channels, decoder_channels)

    def forward(self, g: Tensor, x: Tensor) -> Tensor:
        """g (N, encoder_channels, 2H, 2W), x (N, decoder_channels, H, W) -> (N, decoder_channels, H, W)."""
        return self.attend(F.max_pool2d(self.encoder_conv(g), 2) + self.decoder_conv(x)) * x


class ResUNetPlusPlus(SegmentationModel):
    """ResUNet++ with switchable squeeze-and-excitation, ASPP and decoder attention.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: stem width, encoder widths (each halving the resolution), then the bridge width; at least 3.
        use_se: squeeze-and-excitation after every residual unit.
        use_aspp: ASPP as the bridge and before the head; False uses a residual unit as the bridge and no output ASPP.
        use_attention: the decoder attention blocks; False passes the decoder features on unchanged.
        dilations: ASPP dilations.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (32, 64, 128, 256, 512),
        use_se: bool = True,
        use_aspp: bool = True,
        use_attention: bool = True,
        dilations: tuple[int, ...] = (1, 6, 12, 18),
    ) -> None:
        super().__init__()
        if len(channels) < 3:
            raise ValueError(f"channels needs a stem, at least one encoder level and a bridge, got {channels!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        channels = tuple(channels)
        self.channels = channels
        encoder_widths, bridge = channels[:-1], channels[-1]
        self.stride = 2 ** (len(encoder_widths) - 1)
        self.encoder = nn.ModuleList(
            [ResidualUnit(in_channels, encoder_widths[0], preactivate=False, use_se=use_se)]
            + [ResidualUnit(a, b, stride=2, use_se=use_se) for a, b in zip(encoder_widths, encoder_widths[1:])]
        )
        if use_aspp:
            self.bridge: nn.Module = ASPP(encoder_widths[-1], bridge, dilations)
        else:
            self.bridge = ResidualUnit(encoder_widths[-1], bridge, use_se=use_se)
        # Decoder levels, deepest first: level i reads skip i and the output of level i + 1 (the bridge for the
        # deepest), and outputs width channels[i + 1].
        attention = []
        self.decoder = nn.ModuleList()
        deep = bridge
        for i in range(len(encoder_widths) - 2, -1, -1):
            skip, out = encoder_widths[i], channels[i + 1]
            attention.append(DecoderAttention(skip, deep))
            self.decoder.append(ResidualUnit(deep + skip, out, use_se=use_se))
            deep = out
        self.attention: nn.ModuleList | None = nn.ModuleList(attention) if use_attention else None
        self.output_aspp: nn.Module = ASPP(deep, encoder_widths[0], dilations) if use_aspp else nn.Identity()
        self.head = nn.Conv2d(encoder_widths[0] if use_aspp else deep, num_classes, 1)

    def forward_output(self, x: Tensor) -> ModelOutput:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = self.bridge(skips.pop())
        for i, stage in enumerate(self.decoder):
            skip = skips.pop()
            if self.attention is not None:
                x = self.attention[i](skip, x)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = stage(torch.cat([x, skip], dim=1))
        return ModelOutput(logits=self.head(self.output_aspp(x)))


@register_model(paper_size=True)
def resunetpp(in_channels: int = 3, num_classes: int = 1, **kwargs) -> ResUNetPlusPlus:
    """ResUNet++ at the authors' widths 16-32-64-128, ASPP 256 (4.06M parameters, the paper's 4.07M; 15.7 GMACs).

    ``channels=(32, 64, 128, 256, 512)`` gives the wider 16.2M-parameter variant (62.6 GMACs at 256x256).
    """
    return ResUNetPlusPlus(in_channels, num_classes, **{"channels": (16, 32, 64, 128, 256), **kwargs})


@register_model(cpu_size=True)
def resunetpp_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> ResUNetPlusPlus:
    """ResUNet++ at widths 8-16-32-64, ASPP 128 (1.0M parameters, 3.9 GMACs at 256x256), trains on 2 CPU cores."""
    return ResUNetPlusPlus(in_channels, num_classes, **{"channels": (8, 16, 32, 64, 128), **kwargs})
