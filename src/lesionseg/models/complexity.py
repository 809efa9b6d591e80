"""Parameter and multiply-accumulate counts, the figures papers report as "Params" and "GFLOPs"."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_parameters", "measure_latency"]


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


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    size: tuple[int, int] = (256, 256),
    in_channels: int = 3,
    batch: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    channels_last: bool = False,
) -> float:
    """Median wall-clock milliseconds of one forward pass on a (batch, C, H, W) input in eval mode, fp32.

    Uses the current ``torch.get_num_threads()``; report it with the figure.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"bad repeats {repeats} or warmup {warmup}")
    was_training = model.training
    model.eval()
    x = torch.randn(batch, in_channels, *size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        model(x)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    model.train(was_training)
    return 1000.0 * statistics.median(times)
