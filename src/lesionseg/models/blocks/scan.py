"""Selective scan (Mamba's S6 recurrence) in plain PyTorch: a sequential reference and a fast chunked scan.

The recurrence, for every batch row ``b``, channel ``d`` and state index ``n``::

    h[t] = exp(delta[t] * A[d, n]) * h[t - 1] + delta[t] * B[n, t] * u[t]
    y[t] = sum_n C[n, t] * h[t, n] + D[d] * u[t]            (then * silu(z[t]) when z is given)

with ``delta`` first shifted by ``delta_bias`` and passed through softplus. Gu and Dao, "Mamba: Linear-Time Sequence
Modeling with Selective State Spaces", arXiv 2312.00752, run it in a fused CUDA kernel; this module needs none.

Shapes (Mamba's conventions): ``u``, ``delta``, ``z``: (N, D, L); ``A``: (D, S); ``B``, ``C``: (N, G, S, L) where the
channels are split into ``G`` equal groups and group ``g`` (channels ``g * D/G ... (g + 1) * D/G - 1``) reads
``B[:, g]`` -- SS2D puts its four scan directions in the groups -- or (N, S, L), the same as ``G = 1``; ``D``,
``delta_bias``: (D,). The output is (N, D, L).

How the fast scan works (:func:`selective_scan`). The decay ``exp(delta * A)`` depends on the state index ``n``, so
unlike Mamba-2's scalar decay the ``T x T`` intra-chunk decay matrix cannot become a matrix product: it costs ``T``
times the work of the states themselves and measured slower than even the sequential loop on CPU (at T = 16, about 7x
slower than the scan below; ``perf/selective_scan.py`` keeps that variant for the comparison). We use a
two-level chunked scan instead: the sequence is cut into ``L/T`` chunks of length ``T``, then

1. a loop over the ``T`` positions, vectorised over all chunks at once, gives each chunk's local end state (from a
   zero start);
2. a loop over the ``L/T`` chunks carries the states: start[c + 1] = decay[c] * start[c] + local_end[c], where
   decay[c] = exp(A * sum of delta over the chunk);
3. a second loop over the ``T`` positions, again over all chunks, rebuilds every state from the right start state;
   the states are then contracted with ``C`` at once.

Only ``2T + L/T`` Python steps instead of ``L``, each one fused multiply-add over all chunks (the decays and drives
are computed for all positions beforehand), O(L) work, and every exponent is a sum of ``delta * A <= 0`` (never a
large positive number), so it is as stable as the sequential recurrence. The backward pass (a custom autograd function)
recomputes the states from the saved chunk starts and runs the same three steps in reverse time for the adjoint
``lambda[t] = C[t] * dy[t] + exp(delta[t + 1] * A) * lambda[t + 1]``; the parameter gradients follow in closed form.
Memory: the forward saves only the inputs and the (L/T) chunk-start states, like the CUDA kernel; full-size
(N, D, S, L) buffers live only inside one call (two in the forward, four in the backward). A variant that rebuilt the
decays inside the loops instead (no full-size buffers, five small operations per step) was up to 20% faster on one
core but 2-4x slower with two threads on a busy machine, where the cost per operation dominates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["default_chunk_size", "selective_scan", "selective_scan_ref"]


def default_chunk_size(length: int) -> int:
    """The power of two nearest to ``sqrt(L)``, within [4, 128]: it balances the ``2T`` in-chunk steps against the
    ``L/T`` carry steps.

    Measured (``perf/selective_scan.py`` and a sweep over T = 8..128 at L = 1024 and 4096): on one core this
    choice was the fastest or within 10% of it. With two threads on a busy machine, chunks of 8-16 were up to 2x faster
    at L = 4096 (fewer multi-threaded operations to synchronise) but slower at L = 1024, so the rule keeps the
    one-core optimum.
    """
    return int(min(128, max(4, 2 ** round(math.log2(math.sqrt(max(length, 1)))))))


def _check_inputs(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """Validates the shapes and returns ``B`` and ``C`` as (N, G, S, L)."""
    if u.ndim != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (N, D, L), got {tuple(u.shape)} and {tuple(delta.shape)}")
    n_batch, dim, length = u.shape
    if A.ndim != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (D, S) with D = {dim}, got {tuple(A.shape)}")
    d_state = A.shape[1]
    if B.ndim == 3:
        B = B.unsqueeze(1)
    if C.ndim == 3:
        C = C.unsqueeze(1)
    for name, t in (("B", B), ("C", C)):
        if t.ndim != 4 or t.shape[0] != n_batch or t.shape[2] != d_state or t.shape[3] != length:
            raise ValueError(f"{name} must be (N, G, S, L) or (N, S, L) with N, S, L = {n_batch}, {d_state}, {length}")
    if B.shape[1] != C.shape[1] or dim % B.shape[1]:
        raise ValueError(f"B and C need the same number of groups G dividing D = {dim}, got {B.shape[1]}, {C.shape[1]}")
    return B, C


def _prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    if delta_bias is not None:
        delta = delta + delta_bias.unsqueeze(-1)
    return F.softplus(delta) if delta_softplus else delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    if D is not None:
        y = y + u * D.unsqueeze(-1)
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
) -> Tensor:
    """Sequential reference: a Python loop over the ``L`` positions, differentiated by autograd.

    Args:
        u: inputs (N, D, L).
        delta: step sizes before ``delta_bias`` and softplus, (N, D, L).
        A: state matrix diagonal (D, S), normally negative.
        B: input projections (N, G, S, L) or (N, S, L); see the module docstring for the groups.
        C: output projections, same shape as ``B``.
        D: skip weights (D,).
        z: gate (N, D, L); the output is multiplied by ``silu(z)``.
        delta_bias: added to ``delta`` before softplus, (D,).
        delta_softplus: apply softplus to ``delta``.

    Returns:
        Outputs (N, D, L).
    """
    B, C = _check_inputs(u, delta, A, B, C)
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    n_batch, dim, _ = u.shape
    per_group = dim // B.shape[1]
    B = B.repeat_interleave(per_group, dim=1)  # (N, D, S, L)
    C = C.repeat_interleave(per_group, dim=1)
    decay = torch.exp(delta.unsqueeze(-1) * A.unsqueeze(1))  # (N, D, L, S)
    drive = (delta * u).unsqueeze(-1) * B.transpose(2, 3)  # (N, D, L, S)
    h = u.new_zeros(n_batch, dim, A.shape[1])
    ys = []
    # unbind, not indexing: the backward of t-th slice indexing would allocate a full-size zero gradient per step.
    for a_t, x_t, c_t in zip(decay.unbind(2), drive.unbind(2), C.unbind(3)):
        h = a_t * h + x_t
        ys.append((h * c_t).sum(-1))
    return _finish(torch.stack(ys, dim=-1), u, D, z)


def _to_chunks(t: Tensor, n_chunks: int, chunk: int) -> Tensor:
    """(N, ..., L) -> contiguous (L/T, T, N, ...), so that ``[:, t]`` is position ``t`` of every chunk.

    A tensor stored with ``L`` innermost goes through a 2-D transpose, which PyTorch copies block-wise (a direct
    permute-copy of that layout misses the cache on every element); a token-major one, e.g. the (N, D, L) transpose
    of an (N, L, D) tensor, is permuted directly, copying contiguous channel runs.
    """
    lead = t.shape[:-1]
    if t.stride(-1) == 1:
        return t.reshape(-1, t.shape[-1]).t().contiguous().view(n_chunks, chunk, *lead)
    t = t.reshape(*lead, n_chunks, chunk)
    return t.permute(t.ndim - 2, t.ndim - 1, *range(len(lead))).contiguous()


def _from_chunks(t: Tensor) -> Tensor:
    """(L/T, T, N, ...) -> (N, ..., L) as a view of a token-major (N, L, ...) tensor; inverts :func:`_to_chunks`."""
    n_chunks, chunk, batch, *rest = t.shape
    out = t.movedim(2, 0).contiguous().view(batch, n_chunks * chunk, *rest)
    return out.movedim(1, -1)


class _ChunkedScan(torch.autograd.Function):
    """``y[t] = sum_s C[s, t] h[t, s]`` of the S6 recurrence, on inputs whose length is a multiple of ``chunk``.

    Tensors are laid out (L/T, T, N, G, S or 1, D/G or 1); ``[:, t]`` is position ``t`` of every chunk. Decays and
    drives are computed for all positions at once, so each loop step is a single fused multiply-add; the state index
    comes before the channels so that sums over it add contiguous rows.
    """

    @staticmethod
    def _expand(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, chunk: int) -> tuple[Tensor, ...]:
        n_batch, dim, length = u.shape
        groups, d_state = B.shape[1], B.shape[2]
        n_chunks = length // chunk
        shape = (n_batch, groups, dim // groups, length)
        dp = _to_chunks(delta.reshape(shape), n_chunks, chunk).unsqueeze(-2)  # (K, T, N, G, 1, D/G)
        wp = _to_chunks((delta * u).reshape(shape), n_chunks, chunk).unsqueeze(-2)
        bp = _to_chunks(B, n_chunks, chunk).unsqueeze(-1)  # (K, T, N, G, S, 1)
        a3 = A.reshape(groups, dim // groups, d_state).transpose(1, 2).contiguous()  # (G, S, D/G)
        decay = torch.mul(dp, a3).exp_()  # (K, T, N, G, S, D/G)
        drive = wp * bp
        chunk_decay = torch.mul(dp.sum(1), a3).exp_()  # (K, N, G, S, D/G)
        return dp, wp, bp, a3, decay, drive, chunk_decay

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int) -> Tensor:
        with torch.autocast(u.device.type, enabled=False):
            _, _, _, _, decay, drive, chunk_decay = _ChunkedScan._expand(u, delta, A, B, chunk)
            # 1. local end state of every chunk (zero start), all chunks at once
            local = drive[:, 0]
            for t in range(1, chunk):
                local = torch.addcmul(drive[:, t], decay[:, t], local)
            # 2. carry the states across chunks
            starts = torch.zeros_like(local)
            for c in range(1, starts.shape[0]):
                torch.addcmul(local[c - 1], chunk_decay[c - 1], starts[c - 1], out=starts[c])
            # 3. every state from its chunk's start, written over the drives
            states = drive
            states[:, 0].addcmul_(decay[:, 0], starts)
            for t in range(1, chunk):
                states[:, t].addcmul_(decay[:, t], states[:, t - 1])
            cp = _to_chunks(C, decay.shape[0], chunk).unsqueeze(-1)
            y = states.mul_(cp).sum(-2)  # (K, T, N, G, D/G)
        ctx.save_for_backward(u, delta, A, B, C, starts)
        ctx.chunk = chunk
        return _from_chunks(y).reshape(u.shape)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        u, delta, A, B, C, starts = ctx.saved_tensors
        chunk = ctx.chunk
        with torch.autocast(u.device.type, enabled=False):
            dp, wp, bp, a3, decay, drive, chunk_decay = _ChunkedScan._expand(u, delta, A, B, chunk)
            n_chunks = dp.shape[0]
            group_shape = wp.shape[2:4] + wp.shape[-1:] + u.shape[-1:]  # (N, G, D/G, L)
            up = _to_chunks(u.reshape(group_shape), n_chunks, chunk).unsqueeze(-2)
            gp = _to_chunks(grad_y.reshape(group_shape), n_chunks, chunk).unsqueeze(-2)
            cp = _to_chunks(C, n_chunks, chunk).unsqueeze(-1)
            # the states again, from the saved chunk starts
            states = torch.empty_like(drive)
            torch.addcmul(drive[:, 0], decay[:, 0], starts, out=states[:, 0])
            for t in range(1, chunk):
                torch.addcmul(drive[:, t], decay[:, t], states[:, t - 1], out=states[:, t])
            # adjoint lambda[t] = C[t] dy[t] + decay[t + 1] lambda[t + 1]: the same three steps in reverse time
            lam = gp * cp
            local = lam[:, -1]
            for t in range(chunk - 2, -1, -1):
                local = torch.addcmul(lam[:, t], decay[:, t + 1], local)
            local = local * decay[:, 0]  # what chunk c passes to the last position of chunk c - 1
            incoming = torch.zeros_like(local)
            for c in range(n_chunks - 1, 0, -1):
                torch.addcmul(local[c], chunk_decay[c], incoming[c], out=incoming[c - 1])
            lam[:, -1] += incoming
            for t in range(chunk - 2, -1, -1):
                lam[:, t].addcmul_(decay[:, t + 1], lam[:, t + 1])
            tmp = decay  # free from here on: scratch space for the products below
            grad_c = torch.mul(states, gp, out=tmp).sum(-1)  # sum over the channels of a group
            # q = lambda * exp(delta A) h[t - 1] = lambda * (h - drive): gradient of the log-decay delta * A
            q = states.sub_(drive).mul_(lam)
            lam_b = torch.mul(lam, bp, out=tmp).sum(-2, keepdim=True)  # sum over the states of lambda * B
            grad_b = torch.mul(lam, wp, out=tmp).sum(-1)
            q_a = torch.mul(q, a3, out=tmp).sum(-2, keepdim=True)
            grad_a = torch.mul(q, dp, out=tmp).sum((0, 1, 2))  # (G, S, D/G)
            grad_dp = q_a.addcmul_(up, lam_b)
            grad_u = dp * lam_b
        return (
            _from_chunks(grad_u.squeeze(-2)).reshape(u.shape),
            _from_chunks(grad_dp.squeeze(-2)).reshape(u.shape),
            grad_a.transpose(1, 2).reshape(A.shape),
            _from_chunks(grad_b),
            _from_chunks(grad_c),
            None,
        )


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    chunk_size: int | None = None,
) -> Tensor:
    """Fast selective scan: the two-level chunked scan of the module docstring, with its own backward pass.

    Same arguments and result as :func:`selective_scan_ref`; half-precision inputs are scanned in float32 and the
    result is cast back.

    Args:
        u: inputs (N, D, L).
        delta: step sizes before ``delta_bias`` and softplus, (N, D, L).
        A: state matrix diagonal (D, S), normally negative.
        B: input projections (N, G, S, L) or (N, S, L).
        C: output projections, same shape as ``B``.
        D: skip weights (D,).
        z: gate (N, D, L); the output is multiplied by ``silu(z)``.
        delta_bias: added to ``delta`` before softplus, (D,).
        delta_softplus: apply softplus to ``delta``.
        chunk_size: chunk length ``T``; None for :func:`default_chunk_size`; shortened to ``L`` for shorter
            sequences.

    Returns:
        Outputs (N, D, L) in the dtype of ``u``.

    Raises:
        ValueError: for inconsistent shapes or a chunk size below 1.
    """
    B, C = _check_inputs(u, delta, A, B, C)
    length = u.shape[-1]
    if chunk_size is None:
        chunk_size = default_chunk_size(length)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out_dtype = u.dtype
    work = torch.promote_types(u.dtype, torch.float32)
    u_w, delta_w, a_w, b_w, c_w = (t.to(work) for t in (u, delta, A, B, C))
    delta_w = _prepare_delta(delta_w, None if delta_bias is None else delta_bias.to(work), delta_softplus)
    chunk = min(chunk_size, length)
    n_chunks = math.ceil(length / chunk)
    pad = n_chunks * chunk - length
    scan_in = (u_w, delta_w, a_w, b_w, c_w)
    if pad:
        # zero steps at the end: decay exp(0) = 1 and no drive, so the outputs before them are unchanged
        scan_in = (F.pad(u_w, (0, pad)), F.pad(delta_w, (0, pad)), a_w, F.pad(b_w, (0, pad)), F.pad(c_w, (0, pad)))
    y = _ChunkedScan.apply(*scan_in, chunk)
    if pad:
        y = y[..., :length]
    return _finish(y, u_w, None if D is None else D.to(work), None if z is None else z.to(work)).to(out_dtype)
