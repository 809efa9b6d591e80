"""Time one training step (forward + backward + AdamW) of registered models in fp32/bf16, NCHW/channels-last.

Usage: python benchmarks/train_step.py [MODEL ...] [--batch 8] [--size 256] [--steps 4] [--threads 2]
Prints the median step time per setting; the first (warm-up) step is excluded.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lesionseg.losses import BCEDiceLoss
from lesionseg.models import create_model


def time_steps(name: str, precision: str, channels_last: bool, batch: int, size: int, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model(name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = BCEDiceLoss()
    x = torch.randn(batch, 3, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        loss = loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["unet_small"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch} at {args.size}x{args.size}, {args.threads} threads, torch {torch.__version__}")
    print(f"{'model':20s} {'fp32':>8s} {'fp32+CL':>8s} {'bf16+CL':>8s}  (seconds per step, median)")
    for name in args.models:
        cells = [
            time_steps(name, prec, cl, args.batch, args.size, args.steps)
            for prec, cl in (("fp32", False), ("fp32", True), ("bf16", True))
        ]
        print(f"{name:20s} " + " ".join(f"{c:8.3f}" for c in cells))


if __name__ == "__main__":
    main()
