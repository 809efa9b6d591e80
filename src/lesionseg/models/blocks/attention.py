"""Attention blocks: channel, spatial, external and strip-convolution attention, each ``(N, C, H, W) -> same``;
the attention gate of Attention U-Net, ``(skip, gating signal) -> gated skip``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionGate",
    "CBAM",
    "ChannelAttention",
    "CrossRegionAttention",
    "ExternalAttention",
    "SpatialAttention",
    "SqueezeExcite",
    "StripConvAttention",
]


class ChannelAttention(nn.Module):
    """Channel attention of CBAM (Woo et al., ECCV 2018): ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``.

    Args:
        channels: input channels.
        reduction: hidden width of the shared MLP is ``max(channels // reduction, min_hidden)``.
        min_hidden: smallest hidden width.
        act_layer: activation of the MLP.
    """

    def __init__(
        self, channels: int, reduction: int = 16, min_hidden: int = 4, act_layer: type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
        hidden = max(channels // reduction, min_hidden)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), act_layer(), nn.Conv2d(hidden, channels, 1))

    def weights(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> channel weights in (0, 1), (N, C, 1, 1)."""
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + mx)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> x reweighted per channel, same shape."""
        return x * self.weights(x)


class SpatialAttention(nn.Module):
    """Spatial attention of CBAM: ``Ms = sigmoid(conv_kxk([mean_c(x), max_c(x)]))``, output ``Ms * x``.

    Args:
        kernel_size: odd size of the convolution over the two pooled maps (7 in CBAM).
        dilation: dilation of that convolution (1 in CBAM; MALUNet's spatial attention bridge uses 7x7, dilation 3).
    """

    def __init__(self, kernel_size: int = 7, dilation: int = 1) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, bias=False)

    def weights(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> spatial weights in (0, 1), (N, 1, H, W)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> x reweighted per position, same shape."""
        return x * self.weights(x)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018): ``F' = Mc(F) * F``, then ``F'' = Ms(F') * F'``.

    Channel attention (:class:`ChannelAttention`) followed by spatial attention (:class:`SpatialAttention`), the
    sequential channel-first order the CBAM paper found best. Input and output have the same shape, so it can be
    inserted anywhere.

    Args:
        channels: input channels.
        reduction: channel-attention MLP reduction (16 in CBAM).
        kernel_size: spatial-attention kernel (7 in CBAM).
        min_hidden: smallest hidden width of the channel MLP (narrow layers would otherwise get 0 or 1 unit).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, min_hidden: int = 4) -> None:
        super().__init__()
        self.channel_attention = ChannelAttention(channels, reduction=reduction, min_hidden=min_hidden)
        self.spatial_attention = SpatialAttention(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        return self.spatial_attention(self.channel_attention(x))


class ExternalAttention(nn.Module):
    """External attention (Guo et al., "Beyond Self-attention: External Attention using Two Linear Layers", 2021).

    Two small learned memories shared by all samples replace self-attention's keys and values: the queries attend
    to ``memory_size`` memory slots (``M_k``), the attention is double-normalised (softmax over the positions, then
    L1 over the slots) and read out through ``M_v``. As in the authors' segmentation head, a 1x1 input projection,
    a 1x1 output projection with normalisation, a residual connection and a ReLU surround it (MALUNet's EA block is
    the same with GELU and GroupNorm).

    Args:
        channels: input and output channels.
        memory_size: number of memory slots S (64 in the paper).
        norm_layer: normalisation after the output projection, called with the channels.
        act_layer: activation after the residual sum (ReLU in the authors' head, GELU in MALUNet).
    """

    def __init__(
        self,
        channels: int,
        memory_size: int = 64,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if channels < 1 or memory_size < 1:
            raise ValueError(f"channels and memory_size must be >= 1, got {channels}, {memory_size}")
        self.query = nn.Conv2d(channels, channels, 1)
        self.memory_key = nn.Parameter(torch.empty(memory_size, channels))
        self.memory_value = nn.Parameter(torch.empty(channels, memory_size))
        nn.init.kaiming_uniform_(self.memory_key, a=5**0.5)
        nn.init.kaiming_uniform_(self.memory_value, a=5**0.5)
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = norm_layer(channels)
        self.act = act_layer(inplace=True) if act_layer is nn.ReLU else act_layer()

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        n, c, h, w = x.shape
        q = self.query(x).flatten(2)  # (N, C, HW)
        attn = torch.matmul(self.memory_key, q).softmax(dim=-1)  # (N, S, HW), softmax over the positions
        attn = attn / (attn.sum(dim=1, keepdim=True) + 1e-9)  # L1 over the S slots
        # (N, HW, C) read-out, viewed back as (N, C, H, W) in the channels-last layout the convolutions prefer
        out = torch.matmul(attn.transpose(1, 2), self.memory_value.t()).transpose(1, 2).reshape(n, c, h, w)
        return self.act(self.norm(self.proj(out)) + x)


class StripConvAttention(nn.Module):
    """Channel-then-spatial attention with depthwise strip convolutions (CPCA; Huang et al., 2023).

    ``x = GELU(conv1x1(x))``; channel prior ``x = ChannelAttention(x) * x`` (CBAM's sigmoid of the summed MLP outputs,
    where the MGMFNet repository sums two sigmoids); spatial attention from a depthwise 5x5
    followed by three depthwise strip pairs (1xk then kx1, k in ``strip_sizes``), summed with the 5x5 output and mixed
    by a 1x1 convolution into a per-channel, per-position map; ``out = conv1x1(map * x)``. The map is used unbounded,
    as in CPCA and the MGMFNet repository. We use two distinct 1x1 convolutions where that code reuses one.

    Args:
        channels: input and output channels.
        reduction: channel-attention MLP reduction (4 in the MGMFNet repository).
        strip_sizes: lengths of the depthwise strip kernels, each odd.
    """

    def __init__(self, channels: int, reduction: int = 4, strip_sizes: tuple[int, ...] = (7, 11, 21)) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if not strip_sizes or any(k < 1 or k % 2 == 0 for k in strip_sizes):
            raise ValueError(f"strip_sizes must be odd positive lengths, got {strip_sizes!r}")
        self.proj_in = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.GELU())
        self.channel_attention = ChannelAttention(channels, reduction=reduction, min_hidden=1)
        self.local = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.strips = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, (1, k), padding=(0, k // 2), groups=channels),
                nn.Conv2d(channels, channels, (k, 1), padding=(k // 2, 0), groups=channels),
            )
            for k in strip_sizes
        )
        self.spatial_mix = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        x = self.proj_in(x)
        x = self.channel_attention(x)
        local = self.local(x)
        spatial = local
        for strip in self.strips:
            spatial = spatial + strip(local)
        return self.proj_out(self.spatial_mix(spatial) * x)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., CVPR 2018): ``x * sigmoid(W2 relu(W1 avgpool(x)))``.

    Args:
        channels: input channels.
        reduction: hidden width is ``max(channels // reduction, min_hidden)`` (16 in the SE paper).
        min_hidden: smallest hidden width. Behind a residual branch whose output is near zero at initialisation, the
            hidden ReLUs see only their biases, and with 4 units all of them start dead in 1 block out of 16; 8 makes
            that 1 in 256.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8) -> None:
        super().__init__()
        if channels < 1 or reduction < 1 or min_hidden < 1:
            raise ValueError(
                f"channels, reduction and min_hidden must be >= 1, got {channels}, {reduction}, {min_hidden}"
            )
        hidden = max(channels // reduction, min_hidden)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> x reweighted per channel, same shape."""
        return x * self.fc(x.mean(dim=(2, 3), keepdim=True))


class CrossRegionAttention(nn.Module):
    """Cross-region attention of the CM-SSM paper (Ke et al.), the coordinate attention of Hou et al., CVPR 2021.

    Average-pool along W and along H (``z^h``: (N, C, H, 1), ``z^w``: (N, C, W, 1)), concatenate along the spatial
    axis, a shared 1x1 convolution to ``C / r`` channels + BN + activation, split back, one 1x1 convolution + sigmoid
    per direction: ``y = x * g^h * g^w``. The BN and the hard-swish activation are coordinate attention's; the CM-SSM
    paper only says "a nonlinear activation".

    Args:
        channels: input channels.
        reduction: ``r``; the hidden width is ``max(channels // reduction, min_hidden)`` (32 and 8 in coordinate
            attention).
        min_hidden: smallest hidden width.
        act_layer: the activation after the shared convolution.
    """

    def __init__(
        self, channels: int, reduction: int = 32, min_hidden: int = 8, act_layer: type[nn.Module] = nn.Hardswish
    ) -> None:
        super().__init__()
        if channels < 1 or reduction < 1 or min_hidden < 1:
            raise ValueError(
                f"channels, reduction and min_hidden must be >= 1, got {channels}, {reduction}, {min_hidden}"
            )
        hidden = max(channels // reduction, min_hidden)
        self.reduce = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act_layer())
        self.attend_h = nn.Conv2d(hidden, channels, 1)
        self.attend_w = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        h, w = x.shape[-2:]
        pooled = torch.cat([x.mean(dim=3, keepdim=True), x.mean(dim=2, keepdim=True).transpose(2, 3)], dim=2)
        f_h, f_w = self.reduce(pooled).split([h, w], dim=2)
        g_h = torch.sigmoid(self.attend_h(f_h))  # (N, C, H, 1)
        g_w = torch.sigmoid(self.attend_w(f_w.transpose(2, 3)))  # (N, C, 1, W)
        return x * g_h * g_w


class AttentionGate(nn.Module):
    """Additive attention gate of Attention U-Net (Oktay et al., MIDL 2018), on a skip connection.

    ``q = psi(relu(theta(x) + phi(g)))``, ``alpha = sigmoid(q)`` resampled to ``x``'s size, output ``W(alpha * x)``.
    ``x`` are the skip features, ``g`` the gating signal from the coarser decoder level; ``theta`` is a strided
    convolution (kernel = stride = ``subsample``) that brings ``x`` to ``g``'s grid, where the coefficients are
    computed, and ``alpha`` is upsampled bilinearly, as in the paper ("grid resampling of attention coefficients").
    ``theta`` has no bias (``phi``'s bias is the paper's ``b_g``), ``psi`` has one (``b_psi``), and the output transform
    ``W`` is a 1x1 convolution + batch norm, all as in the authors' ``GridAttentionBlock2D``.

    Args:
        channels: channels of the skip features ``x`` (and of the output).
        gating_channels: channels of the gating signal ``g``.
        inter_channels: width ``F_int`` of the additive attention; ``channels`` when None (the authors' networks
            pass the skip width, their layer's own default is half of it).
        subsample: ratio of ``x``'s size to ``g``'s size (2 between adjacent U-Net levels).
    """

    def __init__(
        self, channels: int, gating_channels: int, inter_channels: int | None = None, subsample: int = 2
    ) -> None:
        super().__init__()
        inter = channels if inter_channels is None else inter_channels
        if channels < 1 or gating_channels < 1 or inter < 1:
            raise ValueError(
                f"channels, gating_channels and inter_channels must be >= 1, got {channels}, {gating_channels}, {inter}"
            )
        if subsample < 1:
            raise ValueError(f"subsample must be >= 1, got {subsample}")
        self.theta = nn.Conv2d(channels, inter, subsample, stride=subsample, bias=False)
        self.phi = nn.Conv2d(gating_channels, inter, 1)
        self.psi = nn.Conv2d(inter, 1, 1)
        self.out = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels))

    def coefficients(self, x: Tensor, g: Tensor) -> Tensor:
        """Attention coefficients ``alpha`` in [0, 1], (N, 1, H, W) at ``x``'s size.

        Args:
            x: skip features (N, channels, H, W).
            g: gating signal (N, gating_channels, H / subsample, W / subsample); other sizes are resampled.
        """
        theta_x = self.theta(x)
        phi_g = self.phi(g)
        if phi_g.shape[-2:] != theta_x.shape[-2:]:
            phi_g = F.interpolate(phi_g, size=theta_x.shape[-2:], mode="bilinear", align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta_x + phi_g)))
        # Bilinear weights are convex, so the resampled coefficients stay in [0, 1].
        return F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """(N, channels, H, W) skip and its gating signal -> gated skip (N, channels, H, W)."""
        return self.out(x * self.coefficients(x, g))
