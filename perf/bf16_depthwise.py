"""Show the bf16 weight-gradient error of dilated depthwise convolutions on this CPU: plain nn.Conv2d vs ours.

Usage: python perf/bf16_depthwise.py [--sizes 16 32 64] [--dilations 1 2 3 5 7] [--channels 8]

For each memory format, feature-map size and dilation, a depthwise 3x3 convolution (batch 8) runs forward and
backward under CPU bf16 autocast, once as ``nn.Conv2d`` and once as
:class:`lesionseg.models.blocks.DepthwiseConv2d` (float32 under autocast when dilated), and the script prints the
relative error max|g - g64| / max|g64| of the weight gradient against float64. bf16 rounding alone gives about 1e-2;
``nan``/``inf`` or errors near 1 are a broken kernel, ``crash`` a process killed by a signal (each row runs in its own
subprocess, restarted after a crash). On torch 2.13 with an AMD EPYC (AVX512-BF16) the plain convolution is broken
for channels-last inputs from 32x32 on at every dilation >= 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["main", "weight_grad_error"]


def weight_grad_error(kind: str, channels_last: bool, size: int, dilation: int, channels: int) -> float:
    """Relative error of the bf16-autocast weight gradient of one depthwise convolution against float64."""
    from lesionseg.models.blocks import DepthwiseConv2d

    torch.manual_seed(0)
    conv = (
        DepthwiseConv2d(channels, 3, dilation=dilation)
        if kind == "ours"
        else nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels)
    )
    x = torch.randn(8, channels, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(8, channels, size, size).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.backward(g)
    w64 = conv.weight.detach().double().requires_grad_()
    F.conv2d(
        x.double(), w64, conv.bias.detach().double(), padding=dilation, dilation=dilation, groups=channels
    ).backward(g.double())
    return float((conv.weight.grad.double() - w64.grad).abs().max() / w64.grad.abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--dilations", type=int, nargs="+", default=[1, 2, 3, 5, 7])
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--row", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:  # KIND CL SIZE CHANNELS DILATION...: one line per dilation, flushed before the next may crash
        kind, cl, size, channels, *dilations = args.row
        for d in dilations:
            print(weight_grad_error(kind, cl == "1", int(size), int(d), int(channels)), flush=True)
        return
    print(
        f"bf16 autocast weight-gradient error vs float64, depthwise 3x3, batch 8, {args.channels} channels, "
        f"torch {torch.__version__}; columns: dilation"
    )
    print(f"{'format':6s} {'size':>4s} {'conv':9s} " + " ".join(f"{'d' + str(d):>8s}" for d in args.dilations))
    for cl in (False, True):
        for size in args.sizes:
            for kind in ("nn.Conv2d", "ours"):
                cells: list[str] = []
                while len(cells) < len(args.dilations):
                    rest = [str(d) for d in args.dilations[len(cells) :]]
                    row = ["ours" if kind == "ours" else "plain", str(int(cl)), str(size), str(args.channels), *rest]
                    proc = subprocess.run([sys.executable, __file__, "--row", *row], capture_output=True, text=True)
                    cells += [f"{float(v):8.2g}" for v in proc.stdout.split()]
                    if proc.returncode != 0:  # the case after the last printed one crashed the process
                        cells.append(f"{'crash':>8s}")
                print(f"{'CL' if cl else 'NCHW':6s} {size:4d} {kind:9s} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
