"""Time the selective scan: sequential reference vs the chunked scan, forward and forward + backward.

Usage: python perf/selective_scan.py [--threads 2] [--repeats 3]

Shapes: VM-UNet's stage-1 scan for one direction, then vmunet_s's scans of all K = 4 directions, (N, K*D_inner, L),
with the directions in the groups of B and C. On a machine busy with other work, two threads stall on each other;
``--threads 1`` gives steadier figures.
Prints the best of ``--repeats`` runs for the chunked scan and of one run for the (slow) reference, the speed-ups,
a chunk-size sweep (how ``default_chunk_size`` was chosen) and the intra-chunk ``T x T`` decay-matrix variant that was
measured and rejected (kept here, not in the package, for that comparison). Runs in about 90 s on 2 cores.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _timing import time_calls

from lesionseg.models.blocks import default_chunk_size, selective_scan, selective_scan_ref

# (label, batch, channels D, state size S, length L, groups)
SHAPES = [
    ("vmunet stage 1, one direction (brief)", 2, 192, 16, 64 * 64, 1),
    ("vmunet_s stage 1, 4 directions", 8, 4 * 32, 1, 64 * 64, 4),
    ("vmunet_s stage 2, 4 directions", 8, 4 * 64, 1, 32 * 32, 4),
]


def make_inputs(batch: int, dim: int, d_state: int, length: int, groups: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(batch, dim, length, generator=gen),
        torch.randn(batch, dim, length, generator=gen) - 2.0,
        -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(dim, 1),
        torch.randn(batch, groups, d_state, length, generator=gen),
        torch.randn(batch, groups, d_state, length, generator=gen),
    ]


def time_fn(fn: Callable[..., torch.Tensor], inputs: list[torch.Tensor], repeats: int) -> tuple[float, float]:
    """Best forward and best forward + backward time in seconds, after one untimed call (allocator warm-up)."""

    def forward_backward(leaves: list[torch.Tensor]) -> None:
        y = fn(*leaves)
        y.backward(torch.ones_like(y))

    fwd = time_calls(lambda leaves: fn(*leaves), repeats, setup=lambda: [t.clone() for t in inputs])
    both = time_calls(
        forward_backward, repeats, warmup=0, setup=lambda: [t.clone().requires_grad_(True) for t in inputs]
    )
    return fwd.best, both.best


def tt_decay_scan(u, delta, A, B, C, chunk: int = 16) -> torch.Tensor:
    """Rejected design: per chunk a (T x T) masked decay matrix ``exp(S_t - S_s)`` from segment sums, per state."""
    n, d, length = u.shape
    s = A.shape[1]
    delta = F.softplus(delta)
    k = length // chunk
    b_full = B.repeat_interleave(d // B.shape[1], 1).transpose(2, 3).reshape(n, d, k, chunk, s)
    c_full = C.repeat_interleave(d // C.shape[1], 1).transpose(2, 3).reshape(n, d, k, chunk, s)
    log_decay = (delta.unsqueeze(-1) * A.unsqueeze(1)).reshape(n, d, k, chunk, s)
    drive = (delta * u).reshape(n, d, k, chunk, 1) * b_full
    cum = log_decay.cumsum(3)
    seg = cum.unsqueeze(4) - cum.unsqueeze(3)  # (n, d, k, t, s', S): S_t - S_s'
    mask = torch.ones(chunk, chunk, dtype=torch.bool).tril().view(chunk, chunk, 1)
    local = (seg.masked_fill(~mask, float("-inf")).exp() * drive.unsqueeze(3)).sum(4)
    end_decay = cum[:, :, :, -1].exp()
    state = u.new_zeros(n, d, s)
    starts = []
    for c in range(k):
        starts.append(state)
        state = end_decay[:, :, c] * state + local[:, :, c, -1]
    h = local + cum.exp() * torch.stack(starts, 2).unsqueeze(3)
    return (h * c_full).sum(-1).reshape(n, d, length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, float32; times in ms (reference: 1 run, fast: best of "
        f"{args.repeats})"
    )
    head = ("ref fwd", "fast fwd", "x", "ref f+b", "fast f+b", "x")
    print(f"{'shape (N, D, S, L)':52s} " + " ".join(f"{h:>8s}" if h != "x" else f"{h:>5s}" for h in head))
    for label, *shape in SHAPES:
        inputs = make_inputs(*shape)
        ref = time_fn(selective_scan_ref, inputs, 1)
        fast = time_fn(selective_scan, inputs, args.repeats)
        name = f"{label} {tuple(shape[:4])}"
        print(
            f"{name:52s} {ref[0] * 1e3:8.0f} {fast[0] * 1e3:8.0f} {ref[0] / fast[0]:5.1f} "
            f"{ref[1] * 1e3:8.0f} {fast[1] * 1e3:8.0f} {ref[1] / fast[1]:5.1f}"
        )
    inputs = make_inputs(*SHAPES[0][1:])
    length = SHAPES[0][4]
    sweep = []
    for chunk in (16, 32, 64, 128):
        fwd, both = time_fn(lambda *a, c=chunk: selective_scan(*a, chunk_size=c), inputs, args.repeats)
        sweep.append(f"T={chunk}: {fwd * 1e3:.0f}/{both * 1e3:.0f}")
    print(
        f"chunk sweep on the first shape, fwd/fwd+bwd ms (default T={default_chunk_size(length)}): " + ", ".join(sweep)
    )
    short = make_inputs(2, 192, 16, 1024, 1)
    tt = time_fn(tt_decay_scan, short, 1)
    fast = time_fn(selective_scan, short, args.repeats)
    print(
        f"T x T decay-matrix variant (T=16, autograd) at (2, 192, 16, 1024): fwd {tt[0] * 1e3:.0f} ms, "
        f"fwd+bwd {tt[1] * 1e3:.0f} ms; chunked scan: {fast[0] * 1e3:.0f} / {fast[1] * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
