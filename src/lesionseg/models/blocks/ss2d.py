"""2D selective scan (SS2D) and the visual state-space (VSS) block of VMamba / VM-UNet, on (N, H, W, C) tensors.

Liu et al., "VMamba: Visual State Space Model", arXiv 2401.10166 (the v0 block that VM-UNet, Ruan and Xiang,
arXiv 2402.02491, builds on). SS2D: a linear ``in_proj`` to ``2 * expand * C`` split into ``x`` and a gate ``z``;
depthwise 3x3 convolution + SiLU on ``x``; cross-scan into four sequences (row-major, column-major and both reversed);
per direction a projection ``x_proj`` to ``dt_rank + 2 * d_state`` (step-size rank, ``B``, ``C``) and ``dt_proj`` back
to the channels; the selective scan (:func:`~lesionseg.models.blocks.scan.selective_scan`); the four outputs mapped
back to the image grid and summed; LayerNorm; times ``SiLU(z)``; ``out_proj`` to ``C``. Initialisation as VMamba:
``A = -[1..d_state]`` per channel (stored as ``log``), ``D = 1``, ``dt_proj`` bias the inverse softplus of steps
drawn log-uniformly in [1e-3, 1e-1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .scan import selective_scan

__all__ = ["DropPath", "SS2D", "VSSBlock", "cross_merge", "cross_scan"]


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): drops the whole residual branch per sample in training.

    Args:
        p: drop probability in [0, 1).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def cross_scan(x: Tensor) -> Tensor:
    """(N, H, W, D) -> (N, H*W, 4, D): row-major, column-major, row-major reversed, column-major reversed."""
    n, h, w, d = x.shape
    rows = x.reshape(n, h * w, d)
    cols = x.transpose(1, 2).reshape(n, h * w, d)
    return torch.stack([rows, cols, rows.flip(1), cols.flip(1)], dim=2)


def cross_merge(y: Tensor, height: int, width: int) -> Tensor:
    """(N, H*W, 4, D) in the :func:`cross_scan` order -> their sum on the grid, (N, H, W, D)."""
    n, _, _, d = y.shape
    rows = y[:, :, 0] + y[:, :, 2].flip(1)
    cols = y[:, :, 1] + y[:, :, 3].flip(1)
    return rows.view(n, height, width, d) + cols.view(n, width, height, d).transpose(1, 2)


class SS2D(nn.Module):
    """2D selective scan over four directions, (N, H, W, C) -> (N, H, W, C).

    Args:
        dim: channels ``C``.
        d_state: SSM state size ``S`` per channel (16 in VMamba v0 / VM-UNet).
        expand: inner width ``expand * C``.
        d_conv: depthwise convolution kernel size.
        dt_rank: rank of the step-size projection; None for ``ceil(C / 16)`` as in Mamba.
        dropout: dropout after ``out_proj``.
        dt_min: smallest initial step.
        dt_max: largest initial step.
        dt_init_floor: floor of the initial steps.
    """

    directions = 4

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        expand: float = 2.0,
        d_conv: int = 3,
        dt_rank: int | None = None,
        dropout: float = 0.0,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        if dim < 1 or d_state < 1 or expand <= 0 or d_conv < 1 or d_conv % 2 == 0:
            raise ValueError(
                f"need dim, d_state >= 1, expand > 0 and an odd d_conv, got {dim}, {d_state}, {expand}, {d_conv}"
            )
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        inner = int(expand * dim)
        rank = math.ceil(dim / 16) if dt_rank is None else dt_rank
        if inner < 1 or rank < 1:
            raise ValueError(f"inner width {inner} and dt_rank {rank} must be >= 1")
        k = self.directions
        self.d_inner, self.d_state, self.dt_rank = inner, d_state, rank
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, d_conv, padding=d_conv // 2, groups=inner)
        self.act = nn.SiLU()
        bound = inner**-0.5
        self.x_proj_weight = nn.Parameter(torch.empty(k, rank + 2 * d_state, inner).uniform_(-bound, bound))
        dt_bound = rank**-0.5
        self.dt_proj_weight = nn.Parameter(torch.empty(k, inner, rank).uniform_(-dt_bound, dt_bound))
        dt = torch.exp(torch.rand(k, inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp_min(dt_init_floor)
        self.dt_proj_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(k * inner, 1))
        self.D = nn.Parameter(torch.ones(k * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        n, h, w, _ = x.shape
        length, k = h * w, self.directions
        x, z = self.in_proj(x).chunk(2, dim=-1)
        # a dense channels-last input keeps the depthwise convolution and its output channels-last
        x = self.act(self.conv(x.contiguous().permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        # token-major (N, L, K, D) throughout: the scan reads it without transposing
        xs = cross_scan(x)
        proj = torch.einsum("nlkd,kcd->nlkc", xs, self.x_proj_weight)
        dts, bs, cs = proj.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dts = torch.einsum("nlkr,kdr->nlkd", dts, self.dt_proj_weight)
        ys = selective_scan(
            xs.reshape(n, length, -1).transpose(1, 2).float(),
            dts.reshape(n, length, -1).transpose(1, 2).float(),
            -torch.exp(self.A_log.float()),
            bs.permute(0, 2, 3, 1).float(),
            cs.permute(0, 2, 3, 1).float(),
            D=self.D.float(),
            delta_bias=self.dt_proj_bias.reshape(-1).float(),
            delta_softplus=True,
        )
        y = cross_merge(ys.transpose(1, 2).reshape(n, length, k, self.d_inner), h, w)
        y = self.out_norm(y).to(z.dtype) * F.silu(z)
        return self.dropout(self.out_proj(y))


class VSSBlock(nn.Module):
    """VSS block of VM-UNet: ``x + drop_path(SS2D(LayerNorm(x)))`` on (N, H, W, C).

    Args:
        dim: channels.
        d_state: SSM state size.
        expand: SS2D inner width factor.
        drop_path: stochastic-depth probability of the branch.
    """

    def __init__(self, dim: int, d_state: int = 16, expand: float = 2.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ss2d = SS2D(dim, d_state=d_state, expand=expand)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        return x + self.drop_path(self.ss2d(self.norm(x)))
