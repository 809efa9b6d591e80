"""Parameter and multiply-accumulate counts, the figures papers report as "Params" and "GFLOPs"."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_parameters", "measure_latency", "measure_train_step"]


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_train_step(
    model: nn.Module,
    size: tuple[int, int] = (256, 256),
    batch: int = 8,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    steps: int = 10,
    warmup: int = 3,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    in_channels: int = 3,
) -> float:
    """Median wall-clock milliseconds of one training step (forward, loss, backward, AdamW) on ``device``.

    The model is moved to ``device`` (and to channels-last memory when asked) and trained in place on a fixed random
    batch with a centred square as target; the first ``warmup`` steps (cuDNN autotuning, allocator growth) are not
    timed. On CUDA every step ends with a synchronisation, so the time is the GPU's, not the launch queue's.

    Args:
        model: the network; its weights change.
        size: input (H, W).
        batch: images per step.
        device: where to run.
        precision: ``fp32``, or ``bf16`` / ``fp16`` autocast (fp16 with a gradient scaler, as training does).
        channels_last: NHWC memory for the model and its input.
        steps: timed steps.
        warmup: untimed steps first.
        loss_fn: ``loss(logits, target)``; default binary cross-entropy on logits.
        in_channels: input channels.
    """
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if steps < 1 or warmup < 0:
        raise ValueError(f"bad steps {steps} or warmup {warmup}")
    device = torch.device(device)
    loss_fn = loss_fn or F.binary_cross_entropy_with_logits
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory).train()
    x = torch.randn(batch, in_channels, *size, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(batch, 1, *size)
    y[..., size[0] // 4 : 3 * size[0] // 4, size[1] // 4 : 3 * size[1] // 4] = 1.0
    x, y = x.to(device).contiguous(memory_format=memory), y.to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            out = model(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
