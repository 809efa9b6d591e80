"""SegFormer (B0-like).

Xie, Wang, Yu, Anandkumar, Alvarez and Luo, "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers", NeurIPS 2021; public code: github.com/NVlabs/SegFormer (``mix_transformer.py``, ``segformer_head.py``).

The paper: a hierarchical Mix Transformer (MiT) encoder of four stages at 1/4, 1/8, 1/16 and 1/32 resolution, each
an overlapping patch embedding (7x7 stride 4 for the first stage, 3x3 stride 2 after, then LayerNorm) followed by
transformer blocks ``x + Attn(LN(x))``, ``x + MixFFN(LN(x))`` and a final LayerNorm. The efficient self-attention
shortens keys and values by the reduction ratio R (8, 4, 2, 1): a RxR convolution of stride R + LayerNorm on the
tokens before the key/value projection. Mix-FFN: linear C -> 4C, 3x3 depthwise convolution, GELU, linear 4C -> C.
B0: widths 32-64-160-256, depths 2-2-2-2, heads 1-2-5-8, MLP ratio 4. The all-MLP decoder projects each stage to
E = 256 channels (a linear layer per stage), upsamples them to 1/4, concatenates them (deepest first), fuses them by a
1x1 convolution + BN + ReLU, and predicts with a 1x1 convolution; the logits are upsampled to the input size. B0 has
about 3.7M parameters.

From the public code (the paper is silent): qkv biases, stochastic depth 0.1 rising linearly over the blocks,
dropout 0.1 before the prediction layer, padding k // 2 in the patch embeddings, bilinear upsampling with
``align_corners=False``, truncated-normal (std 0.02) init of the linear layers and fan-out normal of the convolutions.
Ours: no ImageNet-pretrained MiT weights (they cannot be downloaded here; everything trains from scratch, which the
paper never does); attention by ``F.scaled_dot_product_attention``; the Mix-FFN is
:class:`~lesionseg.models.blocks.ChannelMixing`. Input H and W must be multiples of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import ChannelMixing, ConvNormAct, DropPath, EfficientSelfAttention, init_token_weights

__all__ = ["MiTBlock", "MiTStage", "OverlapPatchEmbed", "SegFormer", "segformer_b0"]


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: kxk convolution of stride s (padding k // 2), then LayerNorm over the channels.

    Args:
        in_channels: input channels.
        out_channels: token width.
        kernel_size: odd patch size (7 for the first stage, 3 after).
        stride: patch stride (4 for the first stage, 2 after).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> tokens (N, H / stride, W / stride, C_out)."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class MiTBlock(nn.Module):
    """Mix Transformer block on tokens (N, H, W, C): ``x + Attn(LN(x))``, then ``x + MixFFN(LN(x))``.

    Args:
        dim: token width.
        heads: attention heads.
        reduction: spatial-reduction ratio of the attention.
        mlp_ratio: hidden width of the Mix-FFN over ``dim``.
        drop_path: stochastic-depth probability of each branch.
    """

    def __init__(self, dim: int, heads: int, reduction: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, heads, reduction)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = ChannelMixing(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        x = x + self.drop_path(self.attn(self.attn_norm(x)))
        return x + self.drop_path(self.ffn(self.ffn_norm(x)))


class MiTStage(nn.Module):
    """One MiT stage: overlapping patch embedding, transformer blocks, LayerNorm.

    Args:
        in_channels: input channels.
        dim: token width.
        depth: number of blocks.
        heads: attention heads.
        reduction: spatial-reduction ratio.
        patch: (kernel size, stride) of the patch embedding.
        mlp_ratio: Mix-FFN ratio.
        drop_paths: stochastic-depth probability of each block (``depth`` values).
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        depth: int,
        heads: int,
        reduction: int,
        patch: tuple[int, int],
        mlp_ratio: float,
        drop_paths: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.embed = OverlapPatchEmbed(in_channels, dim, *patch)
        self.blocks = nn.ModuleList(MiTBlock(dim, heads, reduction, mlp_ratio, p) for p in drop_paths[:depth])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, dim, H / stride, W / stride)."""
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).permute(0, 3, 1, 2)


class SegFormer(SegmentationModel):
    """SegFormer: MiT encoder and all-MLP decoder; logits upsampled from 1/4 to the input size.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: widths of the four stages (B0: 32-64-160-256).
        depths: blocks per stage (B0: 2-2-2-2).
        heads: attention heads per stage (B0: 1-2-5-8).
        reductions: spatial-reduction ratios per stage (8-4-2-1).
        mlp_ratio: Mix-FFN hidden-width ratio (4).
        decoder_channels: the decoder's embedding width E (256 for B0).
        drop_path_rate: stochastic depth of the last block, rising linearly from 0 (0.1).
        dropout: dropout before the prediction layer (0.1).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (32, 64, 160, 256),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        heads: tuple[int, ...] = (1, 2, 5, 8),
        reductions: tuple[int, ...] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        decoder_channels: int = 256,
        drop_path_rate: float = 0.1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        channels, depths, heads, reductions = tuple(channels), tuple(depths), tuple(heads), tuple(reductions)
        if not channels or not len(channels) == len(depths) == len(heads) == len(reductions):
            raise ValueError(
                f"channels, depths, heads and reductions need one value per stage, got {channels!r}, {depths!r}, "
                f"{heads!r}, {reductions!r}"
            )
        if any(d < 1 for d in depths):
            raise ValueError(f"depths must be >= 1, got {depths!r}")
        if in_channels < 1 or num_classes < 1 or decoder_channels < 1:
            raise ValueError(
                f"in_channels, num_classes and decoder_channels must be >= 1, got {in_channels}, {num_classes}, "
                f"{decoder_channels}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.stride = 4 * 2 ** (len(channels) - 1)
        total = sum(depths)
        rates = [drop_path_rate * i / max(1, total - 1) for i in range(total)]
        self.encoder = nn.ModuleList()
        prev, start = in_channels, 0
        for i, (c, d, h, r) in enumerate(zip(channels, depths, heads, reductions)):
            patch = (7, 4) if i == 0 else (3, 2)
            self.encoder.append(MiTStage(prev, c, d, h, r, patch, mlp_ratio, tuple(rates[start : start + d])))
            prev, start = c, start + d
        # A per-token linear layer is a 1x1 convolution; as one it keeps the (N, C, H, W) layout of the decoder.
        self.decoder_proj = nn.ModuleList(nn.Conv2d(c, decoder_channels, 1) for c in channels)
        self.fuse = ConvNormAct(len(channels) * decoder_channels, decoder_channels, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout)
        self.head = nn.Conv2d(decoder_channels, num_classes, 1)
        init_token_weights(self)

    def forward_output(self, x: Tensor) -> ModelOutput:
        size = x.shape[-2:]
        feats = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        quarter = feats[0].shape[-2:]
        projected = [
            F.interpolate(proj(f), size=quarter, mode="bilinear", align_corners=False) if i else proj(f)
            for i, (proj, f) in enumerate(zip(self.decoder_proj, feats))
        ]
        x = self.fuse(torch.cat(projected[::-1], dim=1))
        logits = self.head(self.dropout(x))
        return ModelOutput(logits=F.interpolate(logits, size=size, mode="bilinear", align_corners=False))


@register_model(paper_size=True)
def segformer_b0(in_channels: int = 3, num_classes: int = 1, **kwargs) -> SegFormer:
    """SegFormer-B0-like, widths 32-64-160-256, decoder 256 (3.7M parameters), no pretrained weights."""
    return SegFormer(in_channels, num_classes, **kwargs)


@register_model(cpu_size=True)
def segformer_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> SegFormer:
    """SegFormer at widths 16-32-80-128, heads 1-1-2-4, decoder 128 (0.94M parameters), trains on 2 CPU cores."""
    return SegFormer(
        in_channels,
        num_classes,
        **{"channels": (16, 32, 80, 128), "heads": (1, 1, 2, 4), "decoder_channels": 128, **kwargs},
    )
