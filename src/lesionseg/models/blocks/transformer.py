"""Transformer parts on tokens laid out (N, H, W, C): efficient self-attention, a pre-norm ViT block, and the
channel-mixing feed-forward (SegFormer's Mix-FFN, CM-SSM's channel-mixing network)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ChannelMixing", "EfficientSelfAttention", "TransformerBlock"]


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from a sequence shortened by ``reduction``.

    Args:
        dim: token width, divisible by ``heads``.
        heads: number of attention heads.
        reduction: the ratio R; the key/value tokens come from a RxR stride-R convolution + LayerNorm (R > 1).
    """

    def __init__(self, dim: int, heads: int, reduction: int = 1) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"dim must be divisible by heads, got {dim} and {heads}")
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if reduction > 1:
            self.reduce: nn.Module | None = nn.Conv2d(dim, dim, reduction, stride=reduction)
            self.reduce_norm: nn.Module = nn.LayerNorm(dim)
        else:
            self.reduce = None
            self.reduce_norm = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Tokens (N, H, W, C) -> (N, H, W, C)."""
        n, h, w, c = x.shape
        d = c // self.heads
        q = self.query(x).reshape(n, h * w, self.heads, d).transpose(1, 2)
        kv = x if self.reduce is None else self.reduce(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        kv = self.key_value(self.reduce_norm(kv)).reshape(n, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (N, heads, HW, d)
        return self.proj(out.transpose(1, 2).reshape(n, h, w, c))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block on tokens (N, H, W, C): ``x + MHSA(LN(x))``, ``x + MLP(LN(x))`` (GELU, ratio 4).

    Args:
        dim: token width, divisible by ``heads``.
        heads: attention heads.
        mlp_ratio: hidden width of the MLP over ``dim``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, heads, reduction=1)
        self.mlp_norm = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class ChannelMixing(nn.Module):
    """Channel-mixing network: linear expand, depthwise 3x3, GELU, linear restore; (N, H, W, C) -> same.

    Args:
        dim: channels.
        ratio: expansion of the hidden width.
    """

    def __init__(self, dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        if hidden < 1:
            raise ValueError(f"channel-mixing hidden width int({dim} * {ratio}) must be >= 1")
        self.expand = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.restore = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.expand(x)
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.restore(self.act(x))
