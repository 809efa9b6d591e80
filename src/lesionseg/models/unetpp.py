"""UNet++: a U-Net whose skip connections are nested, dense convolution pathways.

Zhou, Rahman Siddiquee, Tajbakhsh and Liang, "UNet++: A Nested U-Net Architecture for Medical Image Segmentation",
DLMIA 2018 (arXiv 1807.10165), and "UNet++: Redesigning Skip Connections to Exploit Multiscale Features in Image
Segmentation", IEEE TMI 2019; code at github.com/MrGiovanni/UNetPlusPlus.

What the papers state: nodes ``X^{i,j}`` (``i`` the down-sampling level, ``j`` the position along the skip
pathway), ``X^{i,0} = H(pool(X^{i-1,0}))`` the encoder and, for ``j >= 1``,
``X^{i,j} = H([X^{i,0}, ..., X^{i,j-1}, U(X^{i+1,j-1})])``: every node sees all the earlier nodes of its level and
the upsampled node below-left. ``H`` is a convolution block, ``U`` an up-sampling layer. Widths 32-64-128-256-512
(9.04M parameters in the DLMIA paper's table, with or without deep supervision); with deep supervision a 1x1
convolution + sigmoid on each of ``X^{0,1}, ..., X^{0,4}``, each trained with ``0.5 BCE + Dice``, and at inference
either their average ("accurate mode") or one of them ("fast mode", which allows pruning). Adam, learning rate 3e-4.

Our reading:
    - ``H`` = two 3x3 convolutions with batch norm and ReLU (:class:`~lesionseg.models.blocks.DoubleConv`); the
      authors' Keras code has no batch norm but dropout 0.5 after each convolution, which we leave out (as our U-Net
      has none). ``U`` = a 2x2 stride-2 transposed convolution to the node's width, as in that code.
    - The main logits are always those of the last node ``X^{0,L}`` (the fast mode at full depth). With
      ``deep_supervision=True`` the heads on ``X^{0,1}, ..., X^{0,L-1}`` are returned as ``aux_logits`` in that
      (document) order, all at the input size: a deep-supervision loss with weights ``(1, 1, 1, 1)`` (main first)
      sums the four terms as the code's multi-output model does. Without it those heads do not exist.
    - Pruned inference (reading an earlier ``X^{0,j}`` alone) is not implemented.

Input H and W must be multiples of ``2 ** (len(channels) - 1)`` (16 at the default five widths).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import DoubleConv

__all__ = ["UNetPlusPlus", "unetpp", "unetpp_s"]


class UNetPlusPlus(SegmentationModel):
    """UNet++ with nested dense skip pathways and optional deep supervision.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: width of each level ``i`` (every node ``X^{i,j}`` has it), shallowest first; ``L = len - 1``.
        deep_supervision: add 1x1 heads on ``X^{0,1}, ..., X^{0,L-1}``, returned as ``aux_logits`` in that order.

    Attributes:
        encoder: ``encoder[i]`` computes ``X^{i,0}``.
        nested: ``nested[i][j - 1]`` computes ``X^{i,j}`` for ``j >= 1`` (level ``i`` has ``L - i`` of them).
        upsamplers: ``upsamplers[i][j - 1]`` upsamples ``X^{i+1,j-1}`` for ``X^{i,j}``.
        head: 1x1 convolution on ``X^{0,L}``, the main logits.
        aux_heads: 1x1 convolutions on ``X^{0,1..L-1}``, or None without deep supervision.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (32, 64, 128, 256, 512),
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 levels, got {channels!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        channels = tuple(channels)
        self.channels = channels
        self.deep_supervision = deep_supervision
        depth = len(channels) - 1
        self.stride = 2**depth
        self.pool = nn.MaxPool2d(2)
        self.encoder = nn.ModuleList()
        prev = in_channels
        for c in channels:
            self.encoder.append(DoubleConv(prev, c))
            prev = c
        self.upsamplers = nn.ModuleList()
        self.nested = nn.ModuleList()
        for i in range(depth):
            c, deeper = channels[i], channels[i + 1]
            self.upsamplers.append(
                nn.ModuleList(nn.ConvTranspose2d(deeper, c, kernel_size=2, stride=2) for _ in range(depth - i))
            )
            # X^{i,j} concatenates X^{i,0..j-1} and the upsampled X^{i+1,j-1}: (j + 1) * c channels.
            self.nested.append(nn.ModuleList(DoubleConv((j + 1) * c, c) for j in range(1, depth - i + 1)))
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        self.aux_heads: nn.ModuleList | None = None
        if deep_supervision:
            self.aux_heads = nn.ModuleList(nn.Conv2d(channels[0], num_classes, 1) for _ in range(depth - 1))

    def forward_output(self, x: Tensor) -> ModelOutput:
        depth = len(self.channels) - 1
        nodes: list[list[Tensor]] = [[] for _ in range(depth + 1)]  # nodes[i][j] = X^{i,j}
        for i in range(depth + 1):
            nodes[i].append(self.encoder[i](x if i == 0 else self.pool(nodes[i - 1][0])))
            # X^{i,0} completes the anti-diagonal i: X^{i-1,1}, X^{i-2,2}, ..., X^{0,i}.
            for j in range(1, i + 1):
                level = i - j
                up = self.upsamplers[level][j - 1](nodes[level + 1][j - 1])
                nodes[level].append(self.nested[level][j - 1](torch.cat([*nodes[level], up], dim=1)))
        top = nodes[0]
        aux: tuple[Tensor, ...] = ()
        if self.aux_heads is not None:
            aux = tuple(head(node) for head, node in zip(self.aux_heads, top[1:-1]))
        return ModelOutput(logits=self.head(top[-1]), aux_logits=aux)


@register_model(paper_size=True)
def unetpp(in_channels: int = 3, num_classes: int = 1, **kwargs) -> UNetPlusPlus:
    """UNet++ at the paper widths 32-64-128-256-512 (9.05M parameters, 29.8 GMACs at 256x256)."""
    return UNetPlusPlus(in_channels, num_classes, **{"channels": (32, 64, 128, 256, 512), **kwargs})


@register_model(cpu_size=True)
def unetpp_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> UNetPlusPlus:
    """UNet++ at widths 8-16-32-64-128 (0.57M parameters, 1.9 GMACs at 256x256), trains on 2 CPU cores."""
    return UNetPlusPlus(in_channels, num_classes, **{"channels": (8, 16, 32, 64, 128), **kwargs})
