"""SC-UNeXt: UNeXt with CBAM, SC (cross) skip connections and pyramid feature fusion.

"Lesion image segmentation based on UNeXt with multi-scale feature fusion and attention" (SC-UNeXt; text in
``shared/papers/sc_unext_multiscale_fusion_attention.md``). No code is public; the paper gives one equation, no
figure we can read, and no widths. What it states, and what we chose:

- Base: UNeXt (:mod:`lesionseg.models.unext`). Width: the paper's table gives UNeXt 247.62K parameters and
  0.10 GFLOPs, SC-UNeXt 243.63K and 0.13 GFLOPs. The public code's ``UNext_S`` (widths 8-16-32-64-128) has 253,561
  parameters = 247.62 x 1024 and 0.099 GMACs at 256x256, so the paper's "K" is 1024, its "FLOPs" are MACs (thop),
  counted at 256x256 although it trains at 512x512, and its UNeXt is ``UNext_S``. We build SC-UNeXt on those widths;
  243.63K is 249,477 parameters.
- CBAM (channel then spatial attention, Woo et al. 2018) "introduced based on UNeXt"; the paper does not say where.
  We put one after each convolutional encoder stage, so both the skips and the deeper stages see re-weighted
  features (reduction 16, at least 4 hidden units, 7x7 spatial kernel).
- SC skip connection, Eq. (2): ``z = f([(z_a + z_b) * x] + z_c)``, fusing by multiplication instead of
  concatenation; "the skip link uses more detailed low-dimensional feature information as a supplement". Our
  reading at skip level ``l``: ``x`` is the decoder feature upsampled to level ``l`` (UNeXt's conv, BN, x2 upsampling,
  ReLU), ``z_a`` the encoder feature of level ``l``, ``z_b`` the next deeper encoder feature (1x1 conv + BN to the
  level's width, bilinear x2), ``z_c`` the next shallower encoder feature (2x2 max-pool, 1x1 conv + BN) — absent at
  the shallowest level — and ``f`` the rest of UNeXt's decoder step (shifted-MLP block where UNeXt has one, then the
  next conv + upsampling). With ``use_sc_skip=False`` the skip is UNeXt's ``x + z_a``.
- PFM: "deconvolution expands feature layers at different levels to the same size, then adds them element-wise".
  Ours: every decoder level below the input size (1/16 .. 1/2) goes through a 1x1 conv to the last decoder width,
  then a transposed conv with kernel = stride = its scale factor, and is added to the full-size decoder output
  before the head. The 1x1 reduction first keeps the deepest branch at 16K parameters instead of 131K for a direct
  64-to-8 channel 16x16 transposed conv.
- Joint loss BCE + Dice + edge term: the loss, not the model (``edge_bce_dice`` in :mod:`lesionseg.losses.edge`).

Cost of ``sc_unext`` (widths 8-16-32-64-128): 291,155 parameters and 0.124 GMACs at 256x256 (0.495 at 512x512),
against the paper's 249,477 parameters and 0.13 GFLOPs. CBAM adds 0.8K parameters, the SC skips 14.0K, the PFM
22.8K (and 0.019 GMACs, nearly all of the paper's +0.03); the paper's model is 4K parameters *smaller* than its
UNeXt, so it must also remove something from the base that the text does not mention.

The ablation switches ``use_cbam``, ``use_sc_skip``, ``use_pfm`` remove each module entirely; with all three off the
model is UNeXt at the same widths (same parameters, same outputs). Input H and W must be multiples of 32.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput
from .blocks import CBAM, ConvNormAct
from .unext import UNeXt

__all__ = ["PyramidFusion", "SCSkip", "SCUNeXt", "sc_unext"]


class SCSkip(nn.Module):
    """SC skip fusion at one level: ``(z_a + z_b) * x + z_c`` (Eq. 2 of SC-UNeXt before ``f``).

    Args:
        channels: width of the level (of ``x`` and ``z_a``).
        deeper_channels: width of the next deeper encoder level, projected to ``z_b``.
        shallower_channels: width of the next shallower encoder level, projected to ``z_c``; None at the shallowest
            level, where ``z_c`` is left out.
    """

    def __init__(self, channels: int, deeper_channels: int, shallower_channels: int | None = None) -> None:
        super().__init__()
        self.deeper = ConvNormAct(deeper_channels, channels, kernel_size=1, act_layer=None)
        self.shallower = (
            ConvNormAct(shallower_channels, channels, kernel_size=1, act_layer=None)
            if shallower_channels is not None
            else None
        )

    def forward(self, x: Tensor, skip: Tensor, deeper: Tensor, shallower: Tensor | None = None) -> Tensor:
        """Fuses the level's features.

        Args:
            x: upsampled decoder features (N, C, H, W).
            skip: encoder features of the level, ``z_a``, (N, C, H, W).
            deeper: encoder features one level deeper, (N, C_deep, H / 2, W / 2).
            shallower: encoder features one level shallower, (N, C_shallow, 2H, 2W); required when the module was
                built with ``shallower_channels``.

        Returns:
            (N, C, H, W).
        """
        z_b = F.interpolate(self.deeper(deeper), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        out = (skip + z_b) * x
        if self.shallower is not None:
            if shallower is None:
                raise ValueError("this SC skip level was built with a shallower input; pass `shallower`")
            out = out + self.shallower(F.max_pool2d(shallower, 2))
        return out


class PyramidFusion(nn.Module):
    """PFM: each lower-resolution level -> 1x1 conv -> transposed conv (kernel = stride = scale), summed at full size.

    Args:
        in_channels: widths of the levels to fuse.
        scales: upsampling factor of each level to the full size (powers of 2).
        out_channels: width of the full-size features they are added to.
    """

    def __init__(self, in_channels: tuple[int, ...], scales: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        if len(in_channels) != len(scales):
            raise ValueError(f"need one scale per level, got {len(in_channels)} levels and {len(scales)} scales")
        if any(s < 1 for s in scales):
            raise ValueError(f"scales must be >= 1, got {scales!r}")
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, out_channels, 1, bias=False),
                nn.ConvTranspose2d(out_channels, out_channels, kernel_size=s, stride=s),
            )
            for c, s in zip(in_channels, scales)
        )

    def forward(self, levels: list[Tensor], base: Tensor) -> Tensor:
        """``base + sum_i branch_i(levels[i])``; ``levels[i]`` at 1/scales[i] of ``base``'s size, (N, C, H, W) out."""
        if len(levels) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} levels, got {len(levels)}")
        out = base
        for branch, level in zip(self.branches, levels):
            out = out + branch(level)
        return out


class SCUNeXt(UNeXt):
    """UNeXt + CBAM after the convolutional encoder stages + SC skip connections + pyramid feature fusion.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: encoder widths as in :class:`UNeXt` (the paper's size is the public code's UNext_S, 8-16-32-64-128).
        mlp_ratio: hidden-width ratio of the shifted MLPs.
        shift_groups: channel groups of the shift.
        use_cbam: CBAM after each convolutional encoder stage.
        use_sc_skip: SC skip fusion ``(z_a + z_b) * x + z_c`` instead of UNeXt's ``x + z_a`` ("skip" in the
            paper's ablation).
        use_pfm: pyramid feature fusion of every decoder level before the head ("fuse" in the paper's ablation).
        cbam_reduction: CBAM channel-MLP reduction.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (8, 16, 32, 64, 128),
        mlp_ratio: float = 1.0,
        shift_groups: int = 5,
        use_cbam: bool = True,
        use_sc_skip: bool = True,
        use_pfm: bool = True,
        cbam_reduction: int = 16,
    ) -> None:
        super().__init__(in_channels, num_classes, channels, mlp_ratio, shift_groups)
        channels = self.channels
        num_conv = len(channels) - self.num_token_stages
        self.use_cbam, self.use_sc_skip, self.use_pfm = bool(use_cbam), bool(use_sc_skip), bool(use_pfm)
        self.encoder_attention = (
            nn.ModuleList(CBAM(c, reduction=cbam_reduction) for c in channels[:num_conv]) if use_cbam else None
        )
        self.sc_skips = (
            nn.ModuleList(
                SCSkip(channels[lvl], channels[lvl + 1], channels[lvl - 1] if lvl > 0 else None)
                for lvl in range(len(channels) - 1)
            )
            if use_sc_skip
            else None
        )
        dec = self.decoder_channels
        scales = tuple(2 ** (len(dec) - 1 - i) for i in range(len(dec) - 1))
        self.pyramid_fusion = PyramidFusion(dec[:-1], scales, dec[-1]) if use_pfm else None

    def encode(self, x: Tensor) -> list[Tensor]:
        feats = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if self.encoder_attention is not None and i < len(self.encoder_attention):
                x = self.encoder_attention[i](x)
            feats.append(x)
        return feats

    def fuse_skip(self, level: int, x: Tensor, feats: list[Tensor]) -> Tensor:
        if self.sc_skips is None:
            return super().fuse_skip(level, x, feats)
        shallower = feats[level - 1] if level > 0 else None
        return self.sc_skips[level](x, feats[level], feats[level + 1], shallower)

    def forward_output(self, x: Tensor) -> ModelOutput:
        levels = self.decode(self.encode(x))
        out = levels[-1]
        if self.pyramid_fusion is not None:
            out = self.pyramid_fusion(levels[:-1], out)
        return ModelOutput(logits=self.head(out))

    def extra_repr(self) -> str:
        return f"use_cbam={self.use_cbam}, use_sc_skip={self.use_sc_skip}, use_pfm={self.use_pfm}"


@register_model(paper_size=True, cpu_size=True)
def sc_unext(in_channels: int = 3, num_classes: int = 1, **kwargs) -> SCUNeXt:
    """SC-UNeXt at UNext_S widths 8-16-32-64-128 (0.29M parameters, 0.12 GMACs at 256x256)."""
    return SCUNeXt(in_channels, num_classes, **{"channels": (8, 16, 32, 64, 128), **kwargs})
