"""UTNetV2 (MedFormer), 2D.

Gao, Zhou, Liu, Ma, Yang, Zhang and Metaxas, "A Multi-scale Transformer for Medical Image Segmentation:
Architectures, Model Efficiency, and Benchmarks", arXiv 2203.00131 (2022; the model is called UTNetV2, later
MedFormer); public code github.com/yhygao/CBIM-Medical-Image-Segmentation (``model/dim2/utnetv2.py``,
``utnetv2_utils.py``, ``conv_layers.py``, ``trans_layers.py``).

The paper and its 2D code: a U-shaped hybrid. A convolution stem (3x3 convolution + a pre-activation basic block at
base width B = 32, full resolution), then four down stages by *patch merging* (2x2 neighbours concatenated, BN,
depthwise-separable 3x3 to the next width) at widths [2B, 4B, 8B, 16B] (1/2 .. 1/16). Stage 1 holds two
pre-activation basic blocks; from stage 2 on, the stages carry *bidirectional multi-head attention* (B-MHA) blocks:
a compact semantic map of 8x8 tokens is generated once (stage 2: a 3x3 projection of the features, pooled by a
softmax over positions for each of the 64 map tokens) and carried through the network; in each B-MHA block the
feature queries attend to the map (softmax over map tokens) and the map queries attend to the features (softmax
over positions) with *shared* query-key logits, so the cost is linear in the number of pixels; the feature side uses
depthwise-separable projections, the map side 1x1; each block is ``feat = DWSep(attn) + x``, then an MBConv
feed-forward (pre-activation 1x1 expansion x4, depthwise 3x3, squeeze-excitation, 1x1 projection, residual) and
``map = map_out + map``. Blocks per stage (conv, B-MHA): down (2, 0), (1, 1), (0, 2), (0, 2); up (0, 2), (1, 1),
(2, 0), (2, 0); heads 1, 4, 8, 16 / 8, 4, 1, 1 (head width = stage width / heads). Before decoding, the maps of
stages 2-4 are fused by a 2-layer transformer (width 512, 16 heads, MLP width 512) over their concatenated tokens.
Each up stage: bilinear x2 of the deeper features (``align_corners=True``), concatenation with the skip, BN, 1x1
reduction, its B-MHA blocks (the map of the deeper stage concatenated with the encoder's map of this stage and
reduced by a 1x1 convolution), its basic blocks; a 1x1 convolution gives the logits. GELU, BatchNorm, no dropout.

Ours: attention by ``F.scaled_dot_product_attention`` (both directions are an SDPA with the roles of the two token
sets swapped, which gives exactly the shared-logit softmaxes above); heads split the channels head-major where the
code splits them head-minor (a fixed permutation of learned weights); the fusion transformer is
:class:`~lesionseg.models.blocks.TransformerBlock` (qkv and MLP biases, which the code's may not have); the two
conv-only decoder stages have no map projection (the code builds one whose output nothing reads). No pretrained
weights (the paper trains from scratch too). Input H and W must be multiples of 16.

Sizes: ``utnetv2`` is the code's 2D default (B = 32); ``utnetv2_s`` (2 CPU cores) has B = 8, heads 1, 1, 2, 4 /
2, 1, 1, 1 and a fusion transformer of width 64 with 4 heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks import TransformerBlock

__all__ = [
    "BidirectionAttention",
    "BidirectionAttentionBlock",
    "MBConv",
    "PreActBasicBlock",
    "SemanticMapFusion",
    "SemanticMapGeneration",
    "UTNetV2",
    "utnetv2",
    "utnetv2_s",
]


def _preact(cin: int, cout: int, kernel: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    """The code's ``ConvNormAct(preact=True)``: BN, GELU (optional), convolution without bias."""
    layers: list[nn.Module] = [nn.BatchNorm2d(cin)]
    if act:
        layers.append(nn.GELU())
    layers.append(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False))
    return nn.Sequential(*layers)


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block: two ``BN -> GELU -> conv3x3`` plus the input (a pre-activated 3x3 if widths differ).

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_preact(in_channels, out_channels, 3), _preact(out_channels, out_channels, 3))
        self.shortcut = nn.Identity() if in_channels == out_channels else _preact(in_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class _DWSeparable(nn.Sequential):
    """Depthwise 3x3 then pointwise 1x1, both without bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )


class MBConv(nn.Module):
    """Pre-activation MBConv with squeeze-excitation: 1x1 expand, depthwise 3x3, SE (ratio 4), 1x1 project, residual.

    Args:
        channels: input and output channels.
        expansion: expansion factor of the hidden width.
    """

    def __init__(self, channels: int, expansion: int = 4) -> None:
        super().__init__()
        hidden = channels * expansion
        self.expand = _preact(channels, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = _preact(hidden, hidden, 3, groups=hidden)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(hidden, hidden // 4, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden // 4, hidden, 1),
            nn.Sigmoid(),
        )
        self.project = _preact(hidden, channels, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.depthwise(self.expand(x))
        return self.project(h * self.se(h)) + x


class BidirectionAttention(nn.Module):
    """Bidirectional attention between a feature map and the semantic map, with shared query-key logits.

    Args:
        feat_dim: feature channels.
        map_dim: semantic-map channels.
        out_dim: output feature channels.
        heads: attention heads.
        dim_head: width of one head.
        map_out: also update the map (off in the network's last block, whose map nothing reads; the code's 3D
            version has the same switch, ``no_map_out``).
    """

    def __init__(
        self, feat_dim: int, map_dim: int, out_dim: int, heads: int, dim_head: int, map_out: bool = True
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.feat_qv = _DWSeparable(feat_dim, 2 * inner)
        self.feat_out = _DWSeparable(inner, out_dim)
        self.map_qv = nn.Conv2d(map_dim, 2 * inner, 1, bias=False)
        self.map_out = nn.Conv2d(inner, map_dim, 1, bias=False) if map_out else None

    def _tokens(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        q, v = x.reshape(n, 2, self.heads, self.dim_head, h * w).transpose(-1, -2).unbind(1)
        return q, v  # (N, heads, HW, dim_head)

    def forward(self, feat: Tensor, semantic_map: Tensor) -> tuple[Tensor, Tensor | None]:
        """(N, C_f, H, W), (N, C_m, h, w) -> (N, out_dim, H, W), (N, C_m, h, w) or None without ``map_out``."""
        n, _, h, w = feat.shape
        mh, mw = semantic_map.shape[-2:]
        feat_q, feat_v = self._tokens(self.feat_qv(feat))
        map_q, map_v = self._tokens(self.map_qv(semantic_map))
        # Both directions share the logits q_feat . q_map: softmax over map tokens (features), over pixels (map)
        feat_out = F.scaled_dot_product_attention(feat_q, map_q, map_v)
        feat_out = self.feat_out(feat_out.transpose(-1, -2).reshape(n, -1, h, w))
        if self.map_out is None:
            return feat_out, None
        map_out = F.scaled_dot_product_attention(map_q, feat_q, feat_v)
        return feat_out, self.map_out(map_out.transpose(-1, -2).reshape(n, -1, mh, mw))


class BidirectionAttentionBlock(nn.Module):
    """B-MHA block: BN both inputs, bidirectional attention, feature residual + MBConv, map residual.

    Args:
        feat_dim: input feature channels.
        map_dim: semantic-map channels.
        out_dim: output feature channels.
        heads: attention heads.
        dim_head: width of one head.
        expansion: MBConv expansion.
        map_out: update the map (see :class:`BidirectionAttention`).
    """

    def __init__(
        self,
        feat_dim: int,
        map_dim: int,
        out_dim: int,
        heads: int,
        dim_head: int,
        expansion: int = 4,
        map_out: bool = True,
    ) -> None:
        super().__init__()
        self.feat_norm = nn.BatchNorm2d(feat_dim)
        self.map_norm = nn.BatchNorm2d(map_dim)
        self.attn = BidirectionAttention(feat_dim, map_dim, out_dim, heads, dim_head, map_out)
        self.shortcut = nn.Identity() if feat_dim == out_dim else _preact(feat_dim, out_dim, 1)
        self.feedforward = MBConv(out_dim, expansion)

    def forward(self, x: Tensor, semantic_map: Tensor) -> tuple[Tensor, Tensor]:
        out, map_out = self.attn(self.feat_norm(x), self.map_norm(semantic_map))
        semantic_map = semantic_map if map_out is None else map_out + semantic_map
        return self.feedforward(out + self.shortcut(x)), semantic_map


class SemanticMapGeneration(nn.Module):
    """The semantic map: ``map_size**2`` tokens, each a softmax-weighted average of a 3x3 projection of the features.

    Args:
        feat_dim: feature channels.
        map_dim: map channels.
        map_size: side of the square map.
    """

    def __init__(self, feat_dim: int, map_dim: int, map_size: int) -> None:
        super().__init__()
        self.map_size = map_size
        self.base_proj = nn.Conv2d(feat_dim, map_dim, 3, padding=1, bias=False)
        self.semantic_proj = nn.Conv2d(feat_dim, map_size * map_size, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, map_dim, map_size, map_size)."""
        n = x.shape[0]
        feat = self.base_proj(x).flatten(2)  # (N, D, HW)
        weights = self.semantic_proj(x).flatten(2).softmax(dim=-1)  # (N, M, HW)
        return torch.einsum("ndl,nml->ndm", feat, weights).reshape(n, -1, self.map_size, self.map_size)


class SemanticMapFusion(nn.Module):
    """Fuse several semantic maps by a transformer over their concatenated tokens (projected to one width and back).

    Args:
        in_dims: channels of each map.
        dim: fusion width.
        heads: attention heads.
        depth: transformer blocks.
    """

    def __init__(self, in_dims: tuple[int, ...], dim: int, heads: int, depth: int) -> None:
        super().__init__()
        self.in_proj = nn.ModuleList(nn.Conv2d(c, dim, 1, bias=False) for c in in_dims)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio=1.0) for _ in range(depth))
        self.out_proj = nn.ModuleList(nn.Conv2d(dim, c, 1, bias=False) for c in in_dims)

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        n, _, h, w = maps[0].shape
        tokens = torch.cat([proj(m).flatten(2).transpose(1, 2) for proj, m in zip(self.in_proj, maps)], dim=1)
        x = tokens.unsqueeze(1)  # (N, 1, L, C): the blocks take a (N, H, W, C) grid
        for block in self.blocks:
            x = block(x)
        parts = x.squeeze(1).chunk(len(maps), dim=1)
        return [proj(p.transpose(1, 2).reshape(n, -1, h, w)) for proj, p in zip(self.out_proj, parts)]


class _PatchMerging(nn.Module):
    """2x2 neighbours concatenated, BN, depthwise-separable 3x3 to ``out_dim``; optional 1x1 projection of the map."""

    def __init__(self, dim: int, out_dim: int, map_proj: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(4 * dim)
        self.reduction = _DWSeparable(4 * dim, out_dim)
        self.map_projection = nn.Conv2d(dim, out_dim, 1, bias=False) if map_proj else None

    def forward(self, x: Tensor, semantic_map: Tensor | None) -> tuple[Tensor, Tensor | None]:
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], dim=1)
        if semantic_map is not None and self.map_projection is not None:
            semantic_map = self.map_projection(semantic_map)
        return self.reduction(self.norm(x)), semantic_map


class _DownStage(nn.Module):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        conv_num: int,
        trans_num: int,
        heads: int,
        expansion: int,
        map_size: int,
        map_generate: bool,
        map_proj: bool,
    ) -> None:
        super().__init__()
        self.merge = _PatchMerging(in_ch, out_ch, map_proj)
        self.conv_blocks = nn.Sequential(*(PreActBasicBlock(out_ch, out_ch) for _ in range(conv_num)))
        self.map_gen = SemanticMapGeneration(out_ch, out_ch, map_size) if map_generate else None
        self.trans_blocks = nn.ModuleList(
            BidirectionAttentionBlock(out_ch, out_ch, out_ch, heads, out_ch // heads, expansion)
            for _ in range(trans_num)
        )

    def forward(self, x: Tensor, semantic_map: Tensor | None) -> tuple[Tensor, Tensor | None]:
        x, semantic_map = self.merge(x, semantic_map)
        x = self.conv_blocks(x)
        if self.map_gen is not None:
            semantic_map = self.map_gen(x)
        for block in self.trans_blocks:
            x, semantic_map = block(x, semantic_map)
        return x, semantic_map


class _UpStage(nn.Module):
    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        conv_num: int,
        trans_num: int,
        heads: int,
        expansion: int,
        map_shortcut: bool,
        last_map: bool,
    ) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_ch + out_ch)
        self.reduction = nn.Conv2d(in_ch + out_ch, out_ch, 1, bias=False)
        self.map_reduction: nn.Module | None = None
        if trans_num:
            self.map_reduction = nn.Conv2d(in_ch + out_ch if map_shortcut else in_ch, out_ch, 1, bias=False)
        self.trans_blocks = nn.ModuleList(
            BidirectionAttentionBlock(
                out_ch, out_ch, out_ch, heads, out_ch // heads, expansion, map_out=not (last_map and j == trans_num - 1)
            )
            for j in range(trans_num)
        )
        self.conv_blocks = nn.Sequential(*(PreActBasicBlock(out_ch, out_ch) for _ in range(conv_num)))

    def forward(self, x: Tensor, skip: Tensor, deep_map: Tensor | None, skip_map: Tensor | None):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        x = self.reduction(self.norm(torch.cat([x, skip], dim=1)))
        semantic_map = None
        if self.map_reduction is not None and deep_map is not None:
            semantic_map = deep_map if skip_map is None else torch.cat([deep_map, skip_map], dim=1)
            semantic_map = self.map_reduction(semantic_map)
            for block in self.trans_blocks:
                x, semantic_map = block(x, semantic_map)
        return self.conv_blocks(x), semantic_map


class UTNetV2(SegmentationModel):
    """UTNetV2 (2D): convolution stem, patch-merging encoder with B-MHA stages, semantic-map fusion, hybrid decoder.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        base_channels: B; stage widths [2B, 4B, 8B, 16B] down and [8B, 4B, 2B, B] up.
        conv_num: basic blocks of the eight stages (four down, four up).
        trans_num: B-MHA blocks of the eight stages; stage 1 down and the last two up stages must have none.
        heads: attention heads of the eight stages (each must divide its stage width).
        map_size: side of the semantic map.
        fusion_dim: width of the map-fusion transformer.
        fusion_heads: its heads.
        fusion_depth: its blocks.
        expansion: MBConv expansion in the B-MHA blocks.
    """

    stride = 16

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        base_channels: int = 32,
        conv_num: tuple[int, ...] = (2, 1, 0, 0, 0, 1, 2, 2),
        trans_num: tuple[int, ...] = (0, 1, 2, 2, 2, 1, 0, 0),
        heads: tuple[int, ...] = (1, 4, 8, 16, 8, 4, 1, 1),
        map_size: int = 8,
        fusion_dim: int = 512,
        fusion_heads: int = 16,
        fusion_depth: int = 2,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        conv_num, trans_num, heads = tuple(conv_num), tuple(trans_num), tuple(heads)
        if in_channels < 1 or num_classes < 1 or base_channels < 1:
            raise ValueError(f"in_channels, num_classes, base_channels must be >= 1, got {in_channels}, {num_classes}")
        if not len(conv_num) == len(trans_num) == len(heads) == 8:
            raise ValueError(f"conv_num, trans_num and heads need 8 values, got {conv_num}, {trans_num}, {heads}")
        if trans_num[0] or trans_num[6] or trans_num[7] or not trans_num[1]:
            raise ValueError(f"trans_num must be 0 in stages 0, 6, 7 and >= 1 in stage 1, got {trans_num}")
        b = base_channels
        widths = (2 * b, 4 * b, 8 * b, 16 * b, 8 * b, 4 * b, 2 * b, b)
        if any(w % h for w, h in zip(widths, heads)):
            raise ValueError(f"heads {heads} must divide the stage widths {widths}")
        if fusion_dim % fusion_heads or map_size < 1:
            raise ValueError(
                f"fusion_heads {fusion_heads} must divide fusion_dim {fusion_dim}; map_size {map_size} >= 1"
            )
        self.stem = nn.Sequential(nn.Conv2d(in_channels, b, 3, padding=1, bias=False), PreActBasicBlock(b, b))
        ins = (b,) + widths[:3]
        self.down = nn.ModuleList(
            _DownStage(ins[i], widths[i], conv_num[i], trans_num[i], heads[i], expansion, map_size, i == 1, i >= 2)
            for i in range(4)
        )
        self.map_fusion = SemanticMapFusion(widths[1:4], fusion_dim, fusion_heads, fusion_depth)
        self.up = nn.ModuleList(
            _UpStage(
                widths[i - 1],
                widths[i],
                conv_num[i],
                trans_num[i],
                heads[i],
                expansion,
                map_shortcut=i in (4, 5),
                last_map=not any(trans_num[i + 1 :]),
            )
            for i in range(4, 8)
        )
        self.head = nn.Conv2d(b, num_classes, 1)

    def forward_output(self, x: Tensor) -> ModelOutput:
        feats = [self.stem(x)]
        maps: list[Tensor | None] = [None]
        semantic_map = None
        for stage in self.down:
            out, semantic_map = stage(feats[-1], semantic_map)
            feats.append(out)
            maps.append(semantic_map)
        fused = self.map_fusion([m for m in maps[2:] if m is not None])  # stages 2-4 (1/4 .. 1/16)
        x, deep_map = feats[4], fused[2]
        skip_maps: list[Tensor | None] = [fused[1], fused[0], None, None]
        for stage, skip, skip_map in zip(self.up, reversed(feats[:4]), skip_maps):
            x, deep_map = stage(x, skip, deep_map, skip_map)
        return ModelOutput(logits=self.head(x))


@register_model(paper_size=True)
def utnetv2(in_channels: int = 3, num_classes: int = 1, **kwargs) -> UTNetV2:
    """UTNetV2 2D as the public code's default: B = 32, map 8x8, fusion transformer 512 x 2."""
    return UTNetV2(in_channels, num_classes, **kwargs)


@register_model(cpu_size=True)
def utnetv2_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> UTNetV2:
    """UTNetV2 for 2 CPU cores: B = 8, heads 1-1-2-4 / 2-1-1-1, fusion transformer 64 wide, 4 heads."""
    defaults = {"base_channels": 8, "heads": (1, 1, 2, 4, 2, 1, 1, 1), "fusion_dim": 64, "fusion_heads": 4}
    return UTNetV2(in_channels, num_classes, **{**defaults, **kwargs})
