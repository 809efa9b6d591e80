"""VM-UNet.

Ruan and Xiang, "VM-UNet: Vision Mamba UNet for Medical Image Segmentation", arXiv 2402.02491 (2024); public code
github.com/JCruan519/VM-UNet (``models/vmunet/vmamba.py``).

The paper: a 4x4 patch embedding (convolution + LayerNorm) to C = 96 channels; an encoder of four stages of visual
state-space (VSS) blocks, depths [2, 2, 2, 2] at widths [C, 2C, 4C, 8C], patch merging (2x2 neighbours concatenated,
LayerNorm, linear 4C -> 2C) after each of the first three; a symmetric decoder, depths [2, 2, 2, 1] at widths
[8C, 4C, 2C, C], patch expanding (linear C -> 2C, rearranged to 2x2 pixels of C/2, LayerNorm) before each of the last
three; skip connections by addition; a final 4x patch expanding and a 1x1 convolution to the classes. The VSS block
is VMamba's v0 block: ``x + drop_path(SS2D(LayerNorm(x)))`` with d_state 16, expansion 2 and ``dt_rank = C / 16``
(:mod:`lesionseg.models.blocks.ss2d`). 27.43M parameters at 256x256 in the paper.

As in the public code: the skip of a decoder stage is added to its input *before* its patch expanding (so the deepest
skip is the input of the last encoder stage, and the patch-embedding output is not used as a skip), stochastic depth
0.2 rising linearly over the encoder blocks and falling over the decoder blocks, truncated-normal (std 0.02) linear
layers. Not reproduced: VM-UNet starts from ImageNet-pretrained VMamba-S weights; we train from scratch (no downloads).
The selective scan is our pure-PyTorch chunked scan (:mod:`lesionseg.models.blocks.scan`), not the CUDA kernel.
Input H and W must be multiples of 32.

Sizes: ``vmunet`` is the paper's (27.43M parameters, 5.29 GMACs at 256x256 by torch's counter, the scan's own
element-wise work not counted). ``vmunet_s``, for 2 CPU cores, has C = 16, one block per stage and d_state 1 (0.43M
parameters, 0.09 GMACs, about 1.1 s a batch-8 training step at 256x256): with d_state 16 the scan's (N, D, S, L)
states dominate the step; VMamba's own later versions use d_state 1.

``forward(x, return_aux=True)`` also returns every block's output in ``ModelOutput.features`` (see
:meth:`VMUNet.forward_output`), which the feature-distillation loss (``fd_bce_dice``) reads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._registry import register_model
from .base import ModelOutput, SegmentationModel
from .blocks.ss2d import VSSBlock

__all__ = ["PatchEmbed", "PatchExpand", "PatchMerging", "VMUNet", "vmunet", "vmunet_s"]

BlockFactory = Callable[[int, float], nn.Module]
SkipFactory = Callable[[int], nn.Module]


class PatchEmbed(nn.Module):
    """Non-overlapping 4x4 patches to ``dim`` channels, then LayerNorm: (N, C, H, W) -> (N, H/4, W/4, dim)."""

    patch_size = 4

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, self.patch_size, stride=self.patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2x2 neighbours concatenated, LayerNorm, linear: (N, H, W, C) -> (N, H/2, W/2, out_dim)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """Linear to ``scale**2 * out_dim`` channels rearranged into ``scale x scale`` pixels, then LayerNorm.

    (N, H, W, C) -> (N, scale*H, scale*W, out_dim).
    """

    def __init__(self, dim: int, out_dim: int, scale: int = 2) -> None:
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        n, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).reshape(n, h, w, s, s, self.out_dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(n, h * s, w * s, self.out_dim))


class EncoderStage(nn.Module):
    """Blocks at one resolution, then patch merging (none after the last stage)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class DecoderStage(nn.Module):
    """Patch expanding (none in the first stage), then blocks at one resolution."""

    def __init__(self, upsample: nn.Module, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.upsample = upsample
        self.blocks = nn.ModuleList(blocks)


class VMUNet(SegmentationModel):
    """VM-UNet: a U-shaped network of VSS blocks with additive skips.

    Args:
        in_channels: input channels.
        num_classes: output logit channels.
        channels: encoder widths, shallowest first (the decoder mirrors them); the first must be a multiple of 4.
        depths: blocks per encoder stage.
        decoder_depths: blocks per decoder stage, deepest first.
        d_state: SSM state size of SS2D.
        expand: SS2D inner width factor.
        drop_path_rate: largest stochastic-depth probability.
        block_layer: for subclasses: ``(dim, drop_path) -> block`` on (N, H, W, C); None for the VSS block.
        skip_layer: for subclasses: ``dim -> module`` applied to each skip, on (N, C, H, W); None for identity.
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
        *,
        block_layer: BlockFactory | None = None,
        skip_layer: SkipFactory | None = None,
    ) -> None:
        super().__init__()
        channels, depths, decoder_depths = tuple(channels), tuple(depths), tuple(decoder_depths)
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if len(channels) < 2 or len(depths) != len(channels) or len(decoder_depths) != len(channels):
            raise ValueError(
                f"channels, depths and decoder_depths need the same length >= 2, got {channels}, {depths}, "
                f"{decoder_depths}"
            )
        if min(channels) < 1 or channels[0] % 4:
            raise ValueError(f"channels must be positive and channels[0] a multiple of 4, got {channels}")
        if min(depths) < 1 or min(decoder_depths) < 1:
            raise ValueError(f"every stage needs at least one block, got {depths}, {decoder_depths}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if block_layer is None:

            def block_layer(dim: int, drop_path: float) -> nn.Module:
                return VSSBlock(dim, d_state=d_state, expand=expand, drop_path=drop_path)

        self.stride = PatchEmbed.patch_size * 2 ** (len(channels) - 1)
        self.patch_embed = PatchEmbed(in_channels, channels[0])
        enc_rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        dec_rates = torch.linspace(0, drop_path_rate, sum(decoder_depths)).tolist()[::-1]
        self.encoder = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(channels, depths)):
            rates, enc_rates = enc_rates[:depth], enc_rates[depth:]
            down = PatchMerging(dim, channels[i + 1]) if i + 1 < len(channels) else nn.Identity()
            self.encoder.append(EncoderStage([block_layer(dim, r) for r in rates], down))
        self.decoder = nn.ModuleList()
        widths = channels[::-1]
        for i, (dim, depth) in enumerate(zip(widths, decoder_depths)):
            rates, dec_rates = dec_rates[:depth], dec_rates[depth:]
            up = PatchExpand(widths[i - 1], dim) if i > 0 else nn.Identity()
            self.decoder.append(DecoderStage(up, [block_layer(dim, r) for r in rates]))
        # one per decoder stage after the first, deepest first: applied to the skip that stage receives
        self.skip_attention = nn.ModuleList(
            [nn.Identity() if skip_layer is None else skip_layer(dim) for dim in widths[:-1]]
        )
        self.final_expand = PatchExpand(channels[0], channels[0] // 4, scale=PatchEmbed.patch_size)
        self.head = nn.Conv2d(channels[0] // 4, num_classes, 1)
        self.apply(_init_linear)

    def forward_output(self, x: Tensor) -> ModelOutput:
        """Logits and every block's output.

        ``features`` holds each block's output as (N, C, H, W) (a permuted view of the (N, H, W, C) tensor), in forward
        order under the keys ``encoder.{stage}.{block}`` then ``decoder.{stage}.{block}`` (decoder stage 0 is the
        deepest). The last entry is the last decoder block, the teacher of the cross-feature distillation.
        """
        x = self.patch_embed(x)
        features: dict[str, Tensor] = {}
        skips = []
        for i, stage in enumerate(self.encoder):
            skips.append(x)
            for j, block in enumerate(stage.blocks):
                x = block(x)
                features[f"encoder.{i}.{j}"] = x.permute(0, 3, 1, 2)
            x = stage.downsample(x)
        for i, stage in enumerate(self.decoder):
            if i > 0:
                skip = self.skip_attention[i - 1](skips[-i].permute(0, 3, 1, 2))
                x = stage.upsample(x + skip.permute(0, 2, 3, 1))
            for j, block in enumerate(stage.blocks):
                x = block(x)
                features[f"decoder.{i}.{j}"] = x.permute(0, 3, 1, 2)
        x = self.final_expand(x).permute(0, 3, 1, 2)
        return ModelOutput(logits=self.head(x), features=features)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# The CPU size shared by ``vmunet_s`` and the models built on its U-shape (``cmssm_unet_s``, ``medmamba_s``,
# ``hcmamba_s``).
CPU_SIZE = {
    "channels": (16, 32, 64, 128),
    "depths": (1, 1, 1, 1),
    "decoder_depths": (1, 1, 1, 1),
    "d_state": 1,
    "drop_path_rate": 0.0,
}


@register_model(paper_size=True)
def vmunet(in_channels: int = 3, num_classes: int = 1, **kwargs) -> VMUNet:
    """VM-UNet at the paper's size: C = 96, depths [2, 2, 2, 2] / [2, 2, 2, 1], d_state 16."""
    return VMUNet(in_channels, num_classes, **kwargs)


@register_model(cpu_size=True)
def vmunet_s(in_channels: int = 3, num_classes: int = 1, **kwargs) -> VMUNet:
    """VM-UNet for 2 CPU cores: C = 16, one block per stage, d_state 1 (as VMamba's later versions), no drop-path."""
    return VMUNet(in_channels, num_classes, **{**CPU_SIZE, **kwargs})
