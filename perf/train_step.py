"""Time one training step (forward + backward + AdamW) of registered models in fp32/bf16, NCHW/channels-last.

Usage: python perf/train_step.py [MODEL ...] [--batch 8] [--size 256] [--steps 4] [--threads 2]
Prints the median step time per setting; the settings run in interleaved rounds, the first (warm-up) round untimed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from _timing import interleaved

from lesionseg.losses import BCEDiceLoss
from lesionseg.models import create_model

SETTINGS = {"fp32": ("fp32", False), "fp32+CL": ("fp32", True), "bf16+CL": ("bf16", True)}


def train_step(name: str, precision: str, channels_last: bool, batch: int, size: int) -> Callable[[], None]:
    """One AdamW step of a fresh ``name`` (seed 0) on a fixed random batch, as a callable."""
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

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        loss = loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


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
    print(f"{'model':20s} " + " ".join(f"{s:>8s}" for s in SETTINGS) + "  (seconds per step, median)")
    for name in args.models:
        steps = {s: train_step(name, prec, cl, args.batch, args.size) for s, (prec, cl) in SETTINGS.items()}
        timings = interleaved(steps, args.steps)
        print(f"{name:20s} " + " ".join(f"{timings[s].median:8.3f}" for s in SETTINGS))


if __name__ == "__main__":
    main()
