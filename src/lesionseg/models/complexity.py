"""Parameter and multiply-accumulate counts, the figures papers report as "Params" and "GFLOPs"."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_macs"]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, size: tuple[int, int] = (256, 256), in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on a (1, C, H, W) input.

    Counted by ``torch.utils.flop_counter`` (convolutions, matmuls, attention); element-wise operations,
    normalisation and custom loops (e.g. a selective scan's recurrence) are not counted, as in thop/fvcore, whose
    "FLOPs" most segmentation papers report, and which are MACs.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, in_channels, *size))
    model.train(was_training)
    return counter.get_total_flops() // 2
