"""Attention U-Net: a U-Net whose skip connections pass through additive attention gates.

Oktay, Schlemper, Le Folgoc, Lee, Heinrich, Misawa, Mori, McDonagh, Hammerla, Kainz, Glocker and Rueckert,
"Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018 (arXiv 1804.03999); code at
github.com/ozan-oktay/Attention-Gated-Networks.

What the paper states: attention gates (AGs) on the skip connections of a U-Net filter the skip features before
they are concatenated with the decoder features; the gating signal ``g`` comes from the coarser scale; additive
attention ``q = psi^T relu(W_x^T x + W_g^T g + b_g) + b_psi``, ``alpha = sigmoid(q)``, linear transforms by 1x1(x1)
convolutions, the coefficients computed on the coarser grid and resampled to the skip's size; the output is
``alpha * x``. Trained on 3D CT with Adam, batch normalisation, deep supervision and a Dice loss.

Our reading (2D, for lesion images):
    - The U-Net is :class:`~lesionseg.models.unet.UNet` unchanged (padded 3x3 convolutions with batch norm, max
      pooling, 2x2 transposed convolutions); the gates plug into its ``skip_attention`` hook, so with
      ``use_attention=False`` the model is exactly that U-Net, weight for weight.
    - Every skip is gated (the authors' 3D networks leave the finest one ungated); the gating signal of a skip is the
      decoder features one level deeper, before upsampling (the bottleneck for the deepest skip), used directly:
      the authors' extra 1x1 conv + BN + ReLU on the bottleneck ("gating signal" block) and the conv + BN + ReLU
      after each gate ("combine gates") are left out, as is their deep supervision.
    - The gate is :class:`~lesionseg.models.blocks.AttentionGate`: a 2x2 stride-2 ``W_x`` to the coarser grid,
      ``F_int`` = the skip width (as the authors' networks), bilinear resampling, an output 1x1 conv + BN.

Input H and W must be multiples of 16 (four 2x2 poolings at the default five widths).
"""

from __future__ import annotations

from torch import nn

from ._registry import register_model
from .blocks import AttentionGate
from .unet import UNet

__all__ = ["AttentionUNet", "attention_unet", "attention_unet_s"]


class AttentionUNet(UNet):
    """U-Net with an additive attention gate on every skip connection.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: widths of the encoder stages, shallowest first; the last is the bottleneck.
        bilinear: upsample by bilinear interpolation + 1x1 conv instead of a transposed convolution.
        use_attention: gate the skips; False gives the plain :class:`UNet` (same parameter names and values).
        inter_ratio: width ``F_int`` of every gate as a fraction of its skip width (1.0 as the authors' networks).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        channels: tuple[int, ...] = (64, 128, 256, 512, 1024),
        bilinear: bool = False,
        use_attention: bool = True,
        inter_ratio: float = 1.0,
    ) -> None:
        if inter_ratio <= 0:
            raise ValueError(f"inter_ratio must be > 0, got {inter_ratio}")
        super().__init__(in_channels, num_classes, channels, bilinear)
        channels = tuple(channels)
        self.channels = channels
        if use_attention:
            # Decoder order, deepest first: the skip of level i is gated by the features of level i + 1.
            self.skip_attention = nn.ModuleList(
                AttentionGate(skip, deep, inter_channels=max(1, round(skip * inter_ratio)))
                for deep, skip in zip(channels[:0:-1], channels[-2::-1])
            )


@register_model(paper_size=True)
def attention_unet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> AttentionUNet:
    """Attention U-Net at the U-Net paper widths 64-1024 (33.5M parameters, 50.9 GMACs at 256x256)."""
    return AttentionUNet(in_channels, num_classes, **{"channels": (64, 128, 256, 512, 1024), **kwargs})


@register_model(cpu_size=True)
def attention_unet_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> AttentionUNet:
    """Attention U-Net at widths 16-256 like ``unet_small`` (2.1M parameters, 3.2 GMACs at 256x256), for 2 CPU cores."""
    return AttentionUNet(in_channels, num_classes, **{"channels": (16, 32, 64, 128, 256), **kwargs})
