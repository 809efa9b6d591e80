"""TransFuse.

Zhang, Liu and Hu, "TransFuse: Fusing Transformers and CNNs for Medical Image Segmentation", MICCAI 2021 (LNCS
12901, pp. 14-24), arXiv 2102.08005; public code github.com/Rayicer/TransFuse (``lib/TransFuse.py``, ``lib/DeiT.py``).

The paper: two parallel branches. The transformer branch is a ViT (DeiT) on 16x16 patches whose output tokens (no
class token) are reshaped to a 1/16 map and upsampled by two stages to 1/8 and 1/4; the CNN branch is a ResNet
without its last stage (1/4, 1/8, 1/16). At each of the three scales a BiFusion module fuses the two: channel
attention (squeeze-excitation, reduction 4, 2, 1 from deep to shallow) on the transformer feature, spatial attention
(CBAM's: channel max and mean, 7x7 convolution + BN, sigmoid) on the CNN feature, a Hadamard "bilinear" term
``conv3x3(W_g g * W_x t)`` (1x1 projections + BN), and a residual block over the concatenation of the three. The
fused maps are decoded by attention-gated up-sampling (Attention U-Net's gate on the finer fused map, then a residual
double convolution). Three heads: on the 1/16 fused map, on the transformer branch's 1/4 map and on the final 1/4
map (the prediction), each upsampled bilinearly; loss 0.2 / 0.3 / 0.5 on them (structure loss in the code).
TransFuse-S: ResNet-34 (layers 1-3: 3, 4, 6 basic blocks at 64, 128, 256) and DeiT-S cut to 8 blocks (width 384,
6 heads, MLP ratio 4, qkv biases), dropout 0.2 on the branch features (0.1 inside BiFusion); 26.3M parameters and
11.5 GFLOPs at 192x256 in the paper. Both branches start from ImageNet weights (ResNet-34 from torchvision, DeiT-S from
its authors) in the paper.

Ours: no pretrained weights (nothing can be downloaded here; both branches train from scratch, a large departure for
the transformer branch); the learned position embedding is kept at a base grid (16x16, i.e. 256x256 inputs; the
paper's is 12x16 for 192x256) and resized bilinearly to the input's grid; attention by
``F.scaled_dot_product_attention``; the side heads exist only with ``deep_supervision=True`` (their outputs come out
as ``aux_logits`` = (transformer head, 1/16 head), to be weighted 0.5 / 0.3 / 0.2 with the main output by the
config's ``loss.deep_supervision``). Bilinear upsampling with ``align_corners=True`` as the code. Input H and W must be
multiples of 16.

Sizes: ``transfuse`` is TransFuse-S; ``transfuse_s`` (2 CPU cores) has a ResNet at 16-32-64 with one block per stage
and a 4-block transformer of width 96 (2 heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import ResNetBasicBlock, TransformerBlock, init_token_weights

__all__ = [
    "BiFusion",
    "TransFuse",
    "ViTBranch",
    "transfuse",
    "transfuse_s",
]


def _conv(cin: int, cout: int, kernel: int, bn: bool = False, relu: bool = True, bias: bool = True) -> nn.Sequential:
    """The code's ``Conv``: convolution (padding k // 2), optional BN, optional ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ViTBranch(nn.Module):
    """DeiT without class token: 16x16 patch embedding, learned position embedding, blocks, LayerNorm.

    Args:
        in_channels: input channels.
        dim: token width.
        depth: number of blocks.
        heads: attention heads.
        pos_grid: grid of the learned position embedding, resized bilinearly to the input's grid.
    """

    patch = 16

    def __init__(
        self, in_channels: int, dim: int, depth: int, heads: int, pos_grid: tuple[int, int] = (16, 16)
    ) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, self.patch, stride=self.patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *pos_grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, dim, H / 16, W / 16)."""
        x = self.embed(x)
        pos = self.pos_embed
        if pos.shape[-2:] != x.shape[-2:]:
            pos = F.interpolate(pos, size=x.shape[-2:], mode="bilinear", align_corners=True)
        x = (x + pos).permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).permute(0, 3, 1, 2)


class _ResidualDoubleConv(nn.Module):
    """The code's ``DoubleConv``: ``ReLU(conv3x3-BN-ReLU-conv3x3-BN (x) + conv1x1-BN (x))``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
        )
        self.identity = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.double_conv(x) + self.identity(x), inplace=True)


class _AttentionGate(nn.Module):
    """Attention U-Net's gate: ``x * sigmoid(BN(psi(ReLU(BN(W_g g) + BN(W_x x)))))``."""

    def __init__(self, gate_channels: int, skip_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.w_g = nn.Sequential(nn.Conv2d(gate_channels, inter_channels, 1), nn.BatchNorm2d(inter_channels))
        self.w_x = nn.Sequential(nn.Conv2d(skip_channels, inter_channels, 1), nn.BatchNorm2d(inter_channels))
        self.psi = nn.Sequential(nn.Conv2d(inter_channels, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, g: Tensor, x: Tensor) -> Tensor:
        return x * self.psi(F.relu(self.w_g(g) + self.w_x(x)))


class _Up(nn.Module):
    """Bilinear x2 of the deeper map, an optional attention-gated skip concatenated before it, residual double conv."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int = 0) -> None:
        super().__init__()
        self.gate = _AttentionGate(in_channels, skip_channels, out_channels) if skip_channels else None
        self.conv = _ResidualDoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        if skip is not None and self.gate is not None:
            x = torch.cat([self.gate(x, skip), x], dim=1)
        return self.conv(x)


class _Residual(nn.Module):
    """The code's pre-activation ``Residual``: BN-ReLU-1x1 (C/2), BN-ReLU-3x3, BN-ReLU-1x1 (C), plus a shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, mid, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class BiFusion(nn.Module):
    """TransFuse's BiFusion module of a CNN feature ``g`` and a transformer feature ``t`` of the same size.

    ``out = Residual([SpatialAttn(g) * g, SE(t) * t, conv3x3(W_g g * W_x t)])``, dropout after.

    Args:
        cnn_channels: channels of ``g``.
        trans_channels: channels of ``t``.
        reduction: squeeze-excitation reduction on ``t``.
        inter_channels: width of the Hadamard term.
        out_channels: output channels.
        dropout: Dropout2d probability of the output.
    """

    def __init__(
        self,
        cnn_channels: int,
        trans_channels: int,
        reduction: int,
        inter_channels: int,
        out_channels: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if reduction < 1 or trans_channels % reduction:
            raise ValueError(f"reduction {reduction} must divide the transformer channels {trans_channels}")
        self.se = nn.Sequential(
            nn.Conv2d(trans_channels, trans_channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(trans_channels // reduction, trans_channels, 1),
            nn.Sigmoid(),
        )
        self.spatial = _conv(2, 1, 7, bn=True, relu=False, bias=False)
        self.w_g = _conv(cnn_channels, inter_channels, 1, bn=True, relu=False)
        self.w_x = _conv(trans_channels, inter_channels, 1, bn=True, relu=False)
        self.w = _conv(inter_channels, inter_channels, 3, bn=True, relu=True)
        self.residual = _Residual(cnn_channels + trans_channels + inter_channels, out_channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, g: Tensor, t: Tensor) -> Tensor:
        """(N, C_g, H, W), (N, C_t, H, W) -> (N, C_out, H, W)."""
        bilinear = self.w(self.w_g(g) * self.w_x(t))
        pooled = torch.cat([g.amax(1, keepdim=True), g.mean(1, keepdim=True)], dim=1)
        g = torch.sigmoid(self.spatial(pooled)) * g
        t = self.se(t.mean((2, 3), keepdim=True)) * t
        return self.dropout(self.residual(torch.cat([g, t, bilinear], dim=1)))


def _head(in_channels: int, mid: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(_conv(in_channels, mid, 3, bn=True), _conv(mid, num_classes, 3, relu=False))


class TransFuse(SegmentationModel):
    """TransFuse: parallel ResNet and ViT branches fused by BiFusion at 1/16, 1/8, 1/4; gated decoding.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        cnn_channels: ResNet widths at 1/4, 1/8, 1/16 (ResNet-34: 64, 128, 256).
        cnn_depths: basic blocks per ResNet stage (ResNet-34: 3, 4, 6).
        embed_dim: transformer width (DeiT-S: 384).
        depth: transformer blocks (TransFuse-S: 8).
        heads: attention heads (6).
        pos_grid: grid of the learned position embedding.
        dropout: Dropout2d on the branch features (0.2; half of it inside BiFusion).
        deep_supervision: build the two side heads (transformer branch at 1/4, fused map at 1/16) returned as
            ``aux_logits``.
    """

    stride = 16

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        cnn_channels: tuple[int, int, int] = (64, 128, 256),
        cnn_depths: tuple[int, int, int] = (3, 4, 6),
        embed_dim: int = 384,
        depth: int = 8,
        heads: int = 6,
        pos_grid: tuple[int, int] = (16, 16),
        dropout: float = 0.2,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        c1, c2, c3 = cnn_channels = tuple(cnn_channels)
        if len(cnn_channels) != 3 or len(tuple(cnn_depths)) != 3 or min(cnn_channels) < 2 or min(cnn_depths) < 1:
            raise ValueError(f"need three CNN widths >= 2 and depths >= 1, got {cnn_channels!r}, {cnn_depths!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if embed_dim % heads or embed_dim % 4 or depth < 1:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by heads {heads} and 4; depth {depth} >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.transformer = ViTBranch(in_channels, embed_dim, depth, heads, tuple(pos_grid))
        self.trans_up1 = _Up(embed_dim, c2)
        self.trans_up2 = _Up(c2, c1)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c1, 7, 2, 3, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        self.cnn = nn.ModuleList()
        prev = c1
        for i, (width, n) in enumerate(zip(cnn_channels, cnn_depths)):
            stride = 1 if i == 0 else 2
            blocks = [ResNetBasicBlock(prev, width, stride)] + [ResNetBasicBlock(width, width) for _ in range(n - 1)]
            self.cnn.append(nn.Sequential(*blocks))
            prev = width
        self.fuse = nn.ModuleList(
            [
                BiFusion(c3, embed_dim, 4, c3, c3, dropout / 2),
                BiFusion(c2, c2, 2, c2, c2, dropout / 2),
                BiFusion(c1, c1, 1, c1, c1, dropout / 2),
            ]
        )
        self.up1 = _Up(c3, c2, skip_channels=c2)
        self.up2 = _Up(c2, c1, skip_channels=c1)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = _head(c1, c1, num_classes)
        self.side_heads: nn.ModuleList | None = None
        if deep_supervision:
            self.side_heads = nn.ModuleList(
                [
                    _head(c1, c1, num_classes),
                    nn.Sequential(_conv(c3, c1, 1, bn=True), _head(c1, c1, num_classes)),
                ]
            )
        self._init_weights()

    def _init_weights(self) -> None:
        init_token_weights(self.transformer)
        nn.init.trunc_normal_(self.transformer.pos_embed, std=0.02)
        for name, module in self.named_children():
            if name in ("transformer", "stem", "cnn"):
                continue
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward_output(self, x: Tensor) -> ModelOutput:
        """Main logits from the fused 1/4 map; ``aux_logits`` = (transformer 1/4 head, fused 1/16 head) if built."""
        size = x.shape[-2:]
        t16 = self.drop(self.transformer(x))
        t8 = self.drop(self.trans_up1(t16))
        t4 = self.drop(self.trans_up2(t8))
        g = self.stem(x)
        g4 = self.drop(self.cnn[0](g))
        g8 = self.drop(self.cnn[1](g4))
        g16 = self.drop(self.cnn[2](g8))
        f16 = self.fuse[0](g16, t16)
        f8 = self.up1(f16, self.fuse[1](g8, t8))
        f4 = self.up2(f8, self.fuse[2](g4, t4))
        logits = _resize(self.head(f4), size)
        aux: tuple[Tensor, ...] = ()
        if self.side_heads is not None:
            aux = (_resize(self.side_heads[0](t4), size), _resize(self.side_heads[1](f16), size))
        return ModelOutput(logits=logits, aux_logits=aux)


def _resize(x: Tensor, size: torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


@register_model(paper_size=True)
def transfuse(in_channels: int = 3, num_classes: int = 1, **kwargs) -> TransFuse:
    """TransFuse-S: ResNet-34 layers 1-3 and DeiT-S cut to 8 blocks, with the side heads; no pretrained weights."""
    return TransFuse(in_channels, num_classes, **kwargs)


@register_model(cpu_size=True)
def transfuse_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> TransFuse:
    """TransFuse for 2 CPU cores: ResNet 16-32-64 (one block each), ViT width 96, 4 blocks, 2 heads; no side heads
    unless ``deep_supervision=True`` (the PH2 config turns them on)."""
    defaults = {
        "cnn_channels": (16, 32, 64),
        "cnn_depths": (1, 1, 1),
        "embed_dim": 96,
        "depth": 4,
        "heads": 2,
        "deep_supervision": False,
    }
    return TransFuse(in_channels, num_classes, **{**defaults, **kwargs})
