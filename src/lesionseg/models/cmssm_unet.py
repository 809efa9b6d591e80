"""CM-SSM U-Net: VM-UNet with channel-enhanced state-space blocks and cross-region attention on the skips.

Ke, Wang, Guo, Du, Zhou, Wang and Zhang, "An Effective Algorithm for Skin Disease Segmentation Combining
inter-channel Features and Spatial Feature Enhancement" (no public code). Trained with the feature-distillation loss
``fd_bce_dice`` (:mod:`lesionseg.losses.distillation`).

The paper: the VM-UNet layout (:mod:`lesionseg.models.vmunet`: 4x4 patch embedding to C = 96, encoder depths
[2, 2, 2, 2] at [C, 2C, 4C, 8C] with patch merging, decoder depths [2, 2, 2, 1] with patch expanding, a final
projection) whose blocks are CM-SSM blocks: the SS2D of VMamba, then squeeze-and-excitation (SE) on its output, then a
channel-mixing network (CMN) of a depthwise convolution and two fully connected layers that expand and restore the
channels ("since it operates on the channel after extension", the depthwise convolution comes after the expansion).
The skip connections pass through cross-region attention (CRA): pool along H and along W, concatenate, 1x1 reduction
by ``r`` + activation, split, two 1x1 convolutions + sigmoid, ``y = x * g_h * g_w``
(:class:`~lesionseg.models.blocks.attention.CrossRegionAttention`). Ablation switches: SE, CMN, CRA (Table 4).

Where the paper is silent we chose: the block is ``x = x + drop_path(SE(SS2D(LN(x))))`` then
``x = x + drop_path(CMN(LN(x)))``, the pre-norm residual layout of VMamba's blocks with a feed-forward part; CMN =
linear C -> 4C, depthwise 3x3, GELU, linear 4C -> C (VMamba's MLP ratio 4; the Mix-FFN order); SE reduction 16 with at
least 8 hidden units; CRA as coordinate attention (reduction 32, at least 8 hidden units, BN + hard-swish); CRA on
each of VM-UNet's three additive skips. The rest follows our VM-UNet: additive skips before the patch expanding,
drop-path 0.2, no ImageNet pre-training. The paper reports no parameter count; with CMN ratio 4 the model has about
twice VM-UNet's 27.4M. With ``use_se = use_cmn = use_cra = False`` the network is exactly ``vmunet``.
Input H and W must be multiples of 32.

``forward(x, return_aux=True)`` returns every CM-SSM block's output in ``ModelOutput.features`` as (N, C, H, W),
keys ``encoder.{stage}.{block}`` then ``decoder.{stage}.{block}`` in forward order; the last entry is the last
decoder block (the paper's D1), the teacher of the cross-feature distillation.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._registry import register_model
from .blocks.attention import CrossRegionAttention, SqueezeExcite
from .blocks.ss2d import SS2D, DropPath
from .blocks.transformer import ChannelMixing
from .vmunet import CPU_SIZE, VMUNet

__all__ = ["CMSSMBlock", "CMSSMUNet", "cmssm_unet", "cmssm_unet_s"]


class CMSSMBlock(nn.Module):
    """CM-SSM block on (N, H, W, C): ``x + drop_path(SE(SS2D(LN(x))))``, then ``x + drop_path(CMN(LN(x)))``.

    Args:
        dim: channels.
        d_state: SSM state size of SS2D.
        expand: SS2D inner width factor.
        drop_path: stochastic-depth probability of each branch.
        use_se: squeeze-and-excitation after SS2D; off gives VM-UNet's VSS block branch.
        use_cmn: the channel-mixing branch; off removes it.
        se_reduction: SE reduction.
        cmn_ratio: CMN expansion.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        expand: float = 2.0,
        drop_path: float = 0.0,
        use_se: bool = True,
        use_cmn: bool = True,
        se_reduction: int = 16,
        cmn_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ss2d = SS2D(dim, d_state=d_state, expand=expand)
        self.se = SqueezeExcite(dim, reduction=se_reduction) if use_se else nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.cmn_norm = nn.LayerNorm(dim) if use_cmn else None
        self.cmn = ChannelMixing(dim, cmn_ratio) if use_cmn else None

    def forward(self, x: Tensor) -> Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        y = self.ss2d(self.norm(x))
        y = self.se(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path(y)
        if self.cmn is not None:
            x = x + self.drop_path(self.cmn(self.cmn_norm(x)))
        return x


class CMSSMUNet(VMUNet):
    """VM-UNet with CM-SSM blocks and cross-region attention on the skips.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: encoder widths, shallowest first; the first a multiple of 4.
        depths: blocks per encoder stage.
        decoder_depths: blocks per decoder stage, deepest first.
        d_state: SSM state size of SS2D.
        expand: SS2D inner width factor.
        drop_path_rate: largest stochastic-depth probability.
        use_se: squeeze-and-excitation in every block (ablation switch).
        use_cmn: channel-mixing network in every block (ablation switch).
        use_cra: cross-region attention on every skip (ablation switch).
        se_reduction: SE reduction.
        cmn_ratio: CMN expansion.
        cra_reduction: CRA reduction ``r``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (96, 192, 384, 768),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        decoder_depths: tuple[int, ...] = (2, 2, 2, 1),
        d_state: int = 16,
        expand: float = 2.0,
        drop_path_rate: float = 0.2,
        use_se: bool = True,
        use_cmn: bool = True,
        use_cra: bool = True,
        se_reduction: int = 16,
        cmn_ratio: float = 4.0,
        cra_reduction: int = 32,
    ) -> None:
        for name, flag in (("use_se", use_se), ("use_cmn", use_cmn), ("use_cra", use_cra)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag!r}")

        def block(dim: int, drop_path: float) -> nn.Module:
            return CMSSMBlock(
                dim, d_state, expand, drop_path, use_se, use_cmn, se_reduction=se_reduction, cmn_ratio=cmn_ratio
            )

        def skip(dim: int) -> nn.Module:
            return CrossRegionAttention(dim, reduction=cra_reduction)

        super().__init__(
            in_channels,
            num_classes,
            channels,
            depths,
            decoder_depths,
            d_state,
            expand,
            drop_path_rate,
            block_layer=block,
            skip_layer=skip if use_cra else None,
        )


@register_model(paper_size=True)
def cmssm_unet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> CMSSMUNet:
    """CM-SSM U-Net at VM-UNet's size: C = 96, depths [2, 2, 2, 2] / [2, 2, 2, 1], d_state 16, CMN ratio 4."""
    return CMSSMUNet(in_channels, num_classes, **kwargs)


@register_model(cpu_size=True)
def cmssm_unet_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> CMSSMUNet:
    """CM-SSM U-Net at ``vmunet_s``'s size (C = 16, one block per stage, d_state 1, no drop-path)."""
    return CMSSMUNet(in_channels, num_classes, **{**CPU_SIZE, **kwargs})
