"""UNeXt.

Valanarasu and Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network", MICCAI 2022;
public code: github.com/jeya-maria-jose/UNeXt-pytorch (``archs.py``).

The paper: a five-level encoder-decoder. Three convolutional stages (3x3 conv, BN, 2x2 max-pool, ReLU) are followed
by two tokenised MLP stages: an overlapping patch embedding (3x3 conv, stride 2, LayerNorm) and a shifted-MLP block
(shift the channel groups along H, token MLP, depthwise 3x3 conv, GELU, shift along W, token MLP, residual). The
decoder mirrors it: 3x3 conv, BN, bilinear x2 upsampling, ReLU, then an *additive* skip from the encoder; the two
deepest decoder levels carry a shifted-MLP block each. A 1x1 convolution gives the logits.

Widths: the paper text says 32-64-128-160-256; the public code, whose numbers (1.47M parameters, 0.57 GMACs at
256x256) the paper reports, uses 16-32-128-160-256. We follow the code: ``unext``. The code's ``UNext_S`` uses
8-16-32-64-128 (253,561 parameters = 247.62 x 1024, 0.099 GMACs at 256x256); that is the "UNeXt" row (247.62K
parameters, 0.10 GFLOPs) of the SC-UNeXt paper, registered here as ``unext_s``. Both match the public code's
parameter count exactly and its outputs to float rounding, with the weights mapped across.

Also as in the code: shift size 5 (channels split into 5 groups by ``torch.chunk``, shifted by -2..2 pixels with zero
fill), MLP ratio 1, one shifted-MLP block per tokenised level, a LayerNorm after each tokenised level, biases on the
convolutions that precede BN (they only matter for the parameter count), no BN in the last decoder convolution,
truncated-normal (std 0.02) init of the token MLPs. Drop-path and dropout are 0 in the code and left out.
Input H and W must be multiples of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import init_token_weights

__all__ = [
    "ConvDownStage",
    "ConvUpStage",
    "ShiftedMLPBlock",
    "TokenisedStage",
    "UNeXt",
    "shift_channel_groups",
    "unext",
    "unext_s",
]


def shift_channel_groups(x: Tensor, dim: int, groups: int = 5) -> Tensor:
    """Shift of UNeXt's shifted MLP: channel group ``g`` moves by ``g - groups // 2`` pixels along ``dim``, zero fill.

    The channels are split as ``torch.chunk(x, groups, dim=1)`` does (so with fewer channels than ``groups``, or
    uneven chunks, the last shifts are unused, exactly as in the public code).

    Args:
        x: features (N, C, H, W).
        dim: 2 to shift along H, 3 to shift along W.
        groups: number of channel groups (the code's ``shift_size``), odd.

    Returns:
        Shifted features, same shape.
    """
    pad = groups // 2
    size = x.shape[dim]
    padding = (0, 0, pad, pad) if dim == 2 else (pad, pad)
    shifted = []
    for chunk, shift in zip(torch.chunk(x, groups, dim=1), range(-pad, pad + 1)):
        # The code rolls the zero-padded map and crops the middle; cropping at an offset is the same, without the copy.
        shifted.append(F.pad(chunk, padding).narrow(dim, pad - shift, size))
    return torch.cat(shifted, dim=1)


def _channel_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm over the channels of (N, C, H, W), i.e. over each token."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ShiftedMLPBlock(nn.Module):
    """``x + fc2(shift_W(GELU(DWConv(fc1(shift_H(LN(x)))))))``, UNeXt's shifted-MLP block.

    Args:
        channels: token width C.
        mlp_ratio: hidden width of the MLP is ``int(channels * mlp_ratio)`` (1 in UNeXt).
        shift_groups: channel groups of the shift (the code's ``shift_size``, 5), odd.
    """

    def __init__(self, channels: int, mlp_ratio: float = 1.0, shift_groups: int = 5) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        if channels < 1 or hidden < 1:
            raise ValueError(f"channels and channels * mlp_ratio must be >= 1, got {channels}, {mlp_ratio}")
        if shift_groups < 1 or shift_groups % 2 == 0:
            raise ValueError(f"shift_groups must be odd and positive, got {shift_groups}")
        self.shift_groups = shift_groups
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        y = shift_channel_groups(_channel_norm(self.norm, x), 2, self.shift_groups)
        y = self.fc1(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = self.act(self.dwconv(y))
        y = shift_channel_groups(y, 3, self.shift_groups)
        y = self.fc2(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + y


class TokenisedStage(nn.Module):
    """Encoder tokenised-MLP stage: overlapping patch embedding (3x3 conv, stride 2, LN), shifted MLP, LN.

    Args:
        in_channels: input channels.
        out_channels: token width.
        mlp_ratio: see :class:`ShiftedMLPBlock`.
        shift_groups: see :class:`ShiftedMLPBlock`.
    """

    def __init__(self, in_channels: int, out_channels: int, mlp_ratio: float = 1.0, shift_groups: int = 5) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.embed_norm = nn.LayerNorm(out_channels)
        self.block = ShiftedMLPBlock(out_channels, mlp_ratio, shift_groups)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H / 2, W / 2)."""
        x = _channel_norm(self.embed_norm, self.embed(x))
        return _channel_norm(self.norm, self.block(x))


class DecoderTokenBlock(nn.Module):
    """Decoder tokenised level after the skip fusion: shifted MLP, then LN."""

    def __init__(self, channels: int, mlp_ratio: float = 1.0, shift_groups: int = 5) -> None:
        super().__init__()
        self.block = ShiftedMLPBlock(channels, mlp_ratio, shift_groups)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        return _channel_norm(self.norm, self.block(x))


class ConvDownStage(nn.Sequential):
    """UNeXt convolutional encoder stage: 3x3 conv, BN, 2x2 max-pool, ReLU (halves H and W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
        )


class ConvUpStage(nn.Sequential):
    """UNeXt decoder step: 3x3 conv, BN (optional), bilinear x2 upsampling, ReLU (doubles H and W)."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1)]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class UNeXt(SegmentationModel):
    """UNeXt: convolutional stages, then two tokenised shifted-MLP stages; additive skips.

    ``encoder[i]`` produces the level-``i`` features at 1/2**(i+1) of the input size; the last one is the
    bottleneck. ``decoder_up[i]`` brings the features up one level, ``fuse_skip`` merges the encoder features of that
    level (UNeXt adds them), ``decoder_blocks[i]`` follows (a shifted-MLP block on the two deepest decoder levels,
    identity elsewhere); the last decoder step reaches the input size and has no skip. ``head`` is a 1x1 conv.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: widths of the encoder levels, shallowest first; all but the last two are convolutional stages, the
            last two tokenised (the last is the bottleneck).
        mlp_ratio: hidden-width ratio of the shifted MLPs.
        shift_groups: channel groups of the shift.
    """

    num_token_stages = 2

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (16, 32, 128, 160, 256),
        mlp_ratio: float = 1.0,
        shift_groups: int = 5,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if len(channels) < self.num_token_stages + 1:
            raise ValueError(f"channels needs at least 1 conv and 2 tokenised levels, got {channels!r}")
        if any(c < 1 for c in channels):
            raise ValueError(f"channels must be positive, got {channels!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        self.channels = channels
        self.stride = 2 ** len(channels)
        num_conv = len(channels) - self.num_token_stages

        self.encoder = nn.ModuleList()
        prev = in_channels
        for i, c in enumerate(channels):
            stage: nn.Module = (
                ConvDownStage(prev, c) if i < num_conv else TokenisedStage(prev, c, mlp_ratio, shift_groups)
            )
            self.encoder.append(stage)
            prev = c

        # Decoder step i goes from level len-1-i to level len-2-i; the last step, to the input size, keeps the width.
        outs = channels[-2::-1] + (channels[0],)
        ins = channels[:0:-1] + (channels[0],)
        self.decoder_up = nn.ModuleList(
            ConvUpStage(cin, cout, norm=i < len(outs) - 1) for i, (cin, cout) in enumerate(zip(ins, outs))
        )
        self.decoder_blocks = nn.ModuleList(
            DecoderTokenBlock(c, mlp_ratio, shift_groups) if i < self.num_token_stages else nn.Identity()
            for i, c in enumerate(outs)
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, (TokenisedStage, DecoderTokenBlock)):
                init_token_weights(m)

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """Widths of the decoder outputs, deepest first; the last is at the input size."""
        return self.channels[-2::-1] + (self.channels[0],)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder features, shallowest first; ``feats[i]`` is at 1/2**(i+1) of the input size."""
        feats = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        return feats

    def fuse_skip(self, level: int, x: Tensor, feats: list[Tensor]) -> Tensor:
        """Merges the upsampled decoder features ``x`` with the encoder features ``feats[level]``: UNeXt adds."""
        return x + feats[level]

    def decode(self, feats: list[Tensor]) -> list[Tensor]:
        """Decoder outputs, deepest first; the last is at the input size (before the head)."""
        x = feats[-1]
        levels = []
        for i, (up, block) in enumerate(zip(self.decoder_up, self.decoder_blocks)):
            x = up(x)
            skip_level = len(feats) - 2 - i
            if skip_level >= 0:
                x = self.fuse_skip(skip_level, x, feats)
            x = block(x)
            levels.append(x)
        return levels

    def forward_output(self, x: Tensor) -> ModelOutput:
        levels = self.decode(self.encode(x))
        return ModelOutput(logits=self.head(levels[-1]))


@register_model(paper_size=True, cpu_size=True)
def unext(in_channels: int = 3, num_classes: int = 1, **kwargs) -> UNeXt:
    """UNeXt at the public code's widths 16-32-128-160-256 (1.47M parameters, 0.57 GMACs at 256x256)."""
    return UNeXt(in_channels, num_classes, **{"channels": (16, 32, 128, 160, 256), **kwargs})


@register_model(paper_size=True, cpu_size=True)
def unext_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> UNeXt:
    """UNeXt-S, the public code's 8-16-32-64-128 (0.25M parameters); the SC-UNeXt paper's UNeXt baseline."""
    return UNeXt(in_channels, num_classes, **{"channels": (8, 16, 32, 64, 128), **kwargs})
