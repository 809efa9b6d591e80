"""MaskFormer, reduced to foreground classes with a per-pixel logit output.

Cheng, Schwing and Kirillov, "Per-Pixel Classification is Not All You Need for Semantic Segmentation", NeurIPS 2021,
arXiv 2107.06278; public code github.com/facebookresearch/MaskFormer. The EFP paper's Table 1 cites a refactored
MaskFormer (Zhu et al., Displays 2025); we build the original mask-classification design.

The paper: a backbone (ResNet-50 in the base model, ImageNet-pretrained) gives features at 1/4 .. 1/32; a *pixel
decoder* (an FPN: 3x3 output convolution on the 1/32 map, 1x1 lateral + 3x3 output convolutions top-down with nearest
upsampling, GroupNorm(32) + ReLU, width 256) ends in a 3x3 convolution to the per-pixel embeddings (mask_dim 256) at
1/4; a *transformer decoder* (DETR's: 6 post-norm layers of self-attention, cross-attention to the 1x1-projected 1/32
backbone features with 2D sine position encodings, FFN 2048; width 256, 8 heads, dropout 0.1, final LayerNorm)
updates N = 100 learned queries. Each query predicts a class distribution over K classes + "no object" (a linear
layer) and a mask embedding (a 3-layer MLP, width 256); its binary mask logits are the dot products of that embedding
with the per-pixel embeddings. Training matches queries to ground-truth segments (Hungarian matching; CE for classes,
focal + dice for masks, auxiliary losses after every decoder layer); semantic inference is ``argmax_c sum_q p_q(c)
sigmoid(m_q)``. MaskFormer-R50: 41M parameters, 53 GFLOPs at 512x512 (ADE20K, 150 classes).

Ours, for binary (or K-class) lesion segmentation under this toolkit's contract of per-pixel logits and pixel losses:
K = ``num_classes`` foreground classes plus "no object". With one class, the paper's semantic inference has no
background alternative (every pixel would take the one class), so we read the query masks as independent detections
and output, per class, the probability that at least one query claims the pixel:
``P_c(x) = 1 - prod_q (1 - p_q(c) sigmoid(m_q(x)))``, returned as its logit ``log P_c - log(1 - P_c)``, computed in log
space (``log(1 - p sigmoid(m)) = logaddexp(log(1 - p), log p + logsigmoid(-m))``, so it never saturates). The mask
logits are upsampled bilinearly to the input size first, as the paper's inference does. Trained end to end with the
configured pixel loss (BCE + Dice) on that map: no Hungarian matching and no per-layer auxiliary losses (the queries
are free to split the lesion among themselves). The decoder's initial query features are learned (as Mask2Former's
``query_feat``) instead of DETR's zeros: with zeros, the first layer's self-attention outputs a constant whose
weights never receive a gradient (Q x C more parameters: 25,600 at the paper size). The "no object" logit starts
at ``log(num_queries)`` so that at initialisation each query claims a pixel with probability about 1/N and the map
starts near P = 0.4 instead of 1.
No pretrained backbone (the paper's is ImageNet-pretrained; nothing can be downloaded here). Attention by
``nn.MultiheadAttention``. ``forward(x, return_aux=True)`` also gives ``features["query_class_logits"]`` (N, Q, K+1)
and ``features["query_mask_logits"]`` (N, Q, H/4, W/4). Input H and W must be multiples of 32.

Sizes: ``maskformer`` is MaskFormer-R50 (ResNet-50, 100 queries, 6 layers, width 256); ``maskformer_s`` (2 CPU cores)
has a basic-block ResNet at 16-32-64-128 (one block per stage), an FPN of width 32, 16 queries, 2 decoder layers of
width 64 (4 heads, FFN 256).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import ResNetBasicBlock

__all__ = [
    "Bottleneck",
    "FPNPixelDecoder",
    "MaskFormer",
    "QueryDecoderLayer",
    "ResNetBackbone",
    "foreground_logits",
    "maskformer",
    "maskformer_s",
    "sine_position_encoding",
]


class Bottleneck(nn.Module):
    """ResNet-50's bottleneck: 1x1 (width), 3x3 (stride), 1x1 (4 x width), BN after each, projection shortcut.

    Args:
        in_channels: input channels.
        width: inner width; the output is ``4 * width``.
        stride: stride of the 3x3 convolution.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out, 1, bias=False),
            nn.BatchNorm2d(out),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x), inplace=True)


class ResNetBackbone(nn.Module):
    """A ResNet without its classifier: 7x7 stride-2 stem, max-pool, four stages (1/4, 1/8, 1/16, 1/32).

    Args:
        in_channels: input channels.
        widths: stage widths (inner widths for bottlenecks).
        depths: blocks per stage.
        bottleneck: bottleneck blocks (ResNet-50) instead of basic blocks.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], depths: tuple[int, ...], bottleneck: bool) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64 if bottleneck else widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(64 if bottleneck else widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        prev = 64 if bottleneck else widths[0]
        self.stages = nn.ModuleList()
        self.out_channels: list[int] = []
        for i, (width, depth) in enumerate(zip(widths, depths)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for j in range(depth):
                if bottleneck:
                    blocks.append(Bottleneck(prev, width, stride if j == 0 else 1))
                    prev = width * Bottleneck.expansion
                else:
                    blocks.append(ResNetBasicBlock(prev, width, stride if j == 0 else 1))
                    prev = width
            self.stages.append(nn.Sequential(*blocks))
            self.out_channels.append(prev)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _conv_gn_relu(cin: int, cout: int, kernel: int, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(math.gcd(32, cout), cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FPNPixelDecoder(nn.Module):
    """MaskFormer's base pixel decoder: an FPN top-down path, then a 3x3 convolution to the per-pixel embeddings.

    Args:
        in_channels: backbone widths at 1/4 .. 1/32.
        conv_dim: FPN width.
        mask_dim: per-pixel embedding width.
    """

    def __init__(self, in_channels: list[int], conv_dim: int, mask_dim: int) -> None:
        super().__init__()
        self.top = _conv_gn_relu(in_channels[-1], conv_dim, 3)
        self.lateral = nn.ModuleList(_conv_gn_relu(c, conv_dim, 1, relu=False) for c in in_channels[:-1])
        self.output = nn.ModuleList(_conv_gn_relu(conv_dim, conv_dim, 3) for _ in in_channels[:-1])
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Backbone features, finest first -> per-pixel embeddings (N, mask_dim, H/4, W/4)."""
        y = self.top(feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral[i](feats[i])
            y = self.output[i](lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest"))
        return self.mask_features(y)


def sine_position_encoding(height: int, width: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """DETR's normalised 2D sine encoding: (1, H*W, dim), half for y and half for x, temperature 10000."""
    if dim % 4:
        raise ValueError(f"the position-encoding width must be a multiple of 4, got {dim}")
    feats = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32)[:, None].expand(height, width)
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32)[None, :].expand(height, width)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    dim_t = 10000 ** (2 * (torch.arange(feats, device=device, dtype=torch.float32) // 2) / feats)
    pos_x, pos_y = x[..., None] / dim_t, y[..., None] / dim_t
    pos_x = torch.stack([pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()], dim=-1).flatten(-2)
    pos_y = torch.stack([pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()], dim=-1).flatten(-2)
    return torch.cat([pos_y, pos_x], dim=-1).reshape(1, height * width, dim).to(dtype)


class QueryDecoderLayer(nn.Module):
    """DETR's post-norm decoder layer: self-attention of the queries, cross-attention to the memory, FFN.

    Args:
        dim: width.
        heads: attention heads.
        ffn_dim: hidden width of the FFN.
        dropout: dropout in attention and FFN.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor) -> Tensor:
        """Queries (N, Q, C), their embeddings (N, Q, C), memory (N, L, C) and its encoding (1, L, C) -> (N, Q, C)."""
        q = tgt + query_pos
        tgt = self.norms[0](tgt + self.dropout(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attn = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norms[1](tgt + self.dropout(attn))
        return self.norms[2](tgt + self.dropout(self.ffn(tgt)))


def foreground_logits(class_logits: Tensor, mask_logits: Tensor, clamp: float = 1e-7) -> Tensor:
    """Per-class logits of ``P_c = 1 - prod_q (1 - p_q(c) sigmoid(m_q))`` from query classes and masks.

    Args:
        class_logits: (N, Q, K + 1), the last column "no object".
        mask_logits: (N, Q, H, W).
        clamp: ``log(1 - P_c)`` is kept below ``-clamp`` so that its logit stays finite (about ``log(clamp)``).

    Returns:
        Logits (N, K, H, W).
    """
    log_p = class_logits.float().log_softmax(dim=-1)  # (N, Q, K+1)
    num_classes = log_p.shape[-1] - 1
    log_miss = F.logsigmoid(-mask_logits.float())  # log(1 - sigmoid(m))
    out = []
    for c in range(num_classes):
        others = torch.cat([log_p[..., :c], log_p[..., c + 1 :]], dim=-1).logsumexp(dim=-1)  # log(1 - p_q(c))
        # log(1 - p sigmoid(m)) = log((1 - p) + p (1 - sigmoid(m)))
        log_keep = torch.logaddexp(others[..., None, None], log_p[..., c, None, None] + log_miss)
        log_not = log_keep.sum(dim=1).clamp(max=-clamp)  # log(1 - P_c), (N, H, W)
        out.append(torch.log(-torch.expm1(log_not)) - log_not)
    return torch.stack(out, dim=1).to(mask_logits.dtype)


class MaskFormer(SegmentationModel):
    """MaskFormer: backbone, FPN pixel decoder, transformer decoder over learned queries, mask classification.

    Args:
        in_channels: input channels.
        num_classes: foreground classes K (output logit channels).
        backbone_widths: ResNet stage widths (inner widths for bottlenecks).
        backbone_depths: ResNet blocks per stage.
        bottleneck: bottleneck blocks (ResNet-50) instead of basic blocks.
        conv_dim: FPN width.
        mask_dim: per-pixel embedding width.
        hidden_dim: transformer width.
        num_queries: learned queries N.
        dec_layers: transformer decoder layers.
        heads: attention heads.
        ffn_dim: FFN width.
        dropout: transformer dropout.
    """

    stride = 32

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        backbone_widths: tuple[int, ...] = (64, 128, 256, 512),
        backbone_depths: tuple[int, ...] = (3, 4, 6, 3),
        bottleneck: bool = True,
        conv_dim: int = 256,
        mask_dim: int = 256,
        hidden_dim: int = 256,
        num_queries: int = 100,
        dec_layers: int = 6,
        heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        backbone_widths, backbone_depths = tuple(backbone_widths), tuple(backbone_depths)
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if len(backbone_widths) != 4 or len(backbone_depths) != 4 or min(backbone_depths) < 1:
            raise ValueError(f"need four backbone stages with >= 1 block, got {backbone_widths}, {backbone_depths}")
        if hidden_dim % heads or hidden_dim % 4 or num_queries < 1 or dec_layers < 1:
            raise ValueError(
                f"hidden_dim {hidden_dim} must be divisible by heads {heads} and 4; num_queries {num_queries} and "
                f"dec_layers {dec_layers} must be >= 1"
            )
        self.backbone = ResNetBackbone(in_channels, backbone_widths, backbone_depths, bottleneck)
        self.pixel_decoder = FPNPixelDecoder(self.backbone.out_channels, conv_dim, mask_dim)
        self.input_proj = nn.Conv2d(self.backbone.out_channels[-1], hidden_dim, 1)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.layers = nn.ModuleList(QueryDecoderLayer(hidden_dim, heads, ffn_dim, dropout) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, mask_dim),
        )
        with torch.no_grad():
            # each query claims a pixel with probability ~1/N at the start, so the union starts near 0.4, not 1
            self.class_embed.bias.zero_()
            self.class_embed.bias[-1] = math.log(num_queries)

    def forward_output(self, x: Tensor) -> ModelOutput:
        size = x.shape[-2:]
        feats = self.backbone(x)
        pixel_embed = self.pixel_decoder(feats)  # (N, mask_dim, H/4, W/4)
        memory = self.input_proj(feats[-1])
        n, c, h, w = memory.shape
        memory = memory.flatten(2).transpose(1, 2)  # (N, hw, C)
        pos = sine_position_encoding(h, w, c, memory.device, memory.dtype)
        query_pos = self.query_embed.weight[None].repeat(n, 1, 1)
        tgt = self.query_feat.weight[None].repeat(n, 1, 1)
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, pos)
        tgt = self.decoder_norm(tgt)
        class_logits = self.class_embed(tgt)  # (N, Q, K+1)
        mask_logits = torch.einsum("nqc,nchw->nqhw", self.mask_embed(tgt), pixel_embed)
        full = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
        return ModelOutput(
            logits=foreground_logits(class_logits, full),
            features={"query_class_logits": class_logits, "query_mask_logits": mask_logits},
        )


@register_model(paper_size=True)
def maskformer(in_channels: int = 3, num_classes: int = 1, **kwargs) -> MaskFormer:
    """MaskFormer-R50 (100 queries, 6 decoder layers, width 256), from scratch, noisy-OR foreground logits."""
    return MaskFormer(in_channels, num_classes, **kwargs)


@register_model(cpu_size=True)
def maskformer_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> MaskFormer:
    """MaskFormer for 2 CPU cores: basic-block ResNet 16-128 (one block each), FPN 32, 16 queries, 2 layers of 64."""
    defaults = {
        "backbone_widths": (16, 32, 64, 128),
        "backbone_depths": (1, 1, 1, 1),
        "bottleneck": False,
        "conv_dim": 32,
        "mask_dim": 32,
        "hidden_dim": 64,
        "num_queries": 16,
        "dec_layers": 2,
        "heads": 4,
        "ffn_dim": 256,
    }
    return MaskFormer(in_channels, num_classes, **{**defaults, **kwargs})
