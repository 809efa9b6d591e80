"""The chunked selective scan against the sequential reference: outputs and every gradient, in float64."""

from __future__ import annotations

import pytest
import torch

from lesionseg.models.blocks import default_chunk_size, selective_scan, selective_scan_ref


def _inputs(batch: int, dim: int, d_state: int, length: int, groups: int | None, seed: int = 0) -> dict:
    """Random scan inputs; ``groups=None`` gives B and C as (N, S, L)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    bc_shape = (batch, d_state, length) if groups is None else (batch, groups, d_state, length)
    return {
        "u": rand(batch, dim, length),
        "delta": rand(batch, dim, length) - 1.0,
        "A": -torch.rand(dim, d_state, generator=gen, dtype=torch.float64) * 4 - 0.1,
        "B": rand(*bc_shape),
        "C": rand(*bc_shape),
        "D": rand(dim),
        "z": rand(batch, dim, length),
        "delta_bias": rand(dim),
    }


def _run(fn, inputs: dict, grad_out: torch.Tensor, **kwargs) -> list[torch.Tensor]:
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    y = fn(**leaves, **kwargs)
    y.backward(grad_out)
    return [y.detach()] + [leaves[k].grad for k in inputs]


@pytest.mark.parametrize(
    ("length", "chunk", "groups"),
    [
        (1, 4, 1),  # a single position
        (5, 8, None),  # shorter than one chunk, ungrouped B and C
        (16, 4, 4),  # a multiple of the chunk
        (37, 8, 4),  # not a multiple: padded last chunk
        (33, 1, 2),  # chunks of one position: the carry loop alone
        (50, None, 4),  # default chunk size
    ],
)
def test_fast_matches_reference(length, chunk, groups):
    inputs = _inputs(2, 8, 4, length, groups)
    grad_out = torch.randn(2, 8, length, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = _run(selective_scan_ref, inputs, grad_out)
    fast = _run(selective_scan, inputs, grad_out, chunk_size=chunk)
    names = ["y", *inputs]
    for name, r, f in zip(names, ref, fast):
        torch.testing.assert_close(f, r, rtol=1e-6, atol=1e-8, msg=lambda m, n=name: f"{n}: {m}")


def test_without_optional_inputs_and_softplus():
    inputs = _inputs(1, 4, 2, 11, 2)
    args = {k: inputs[k] for k in ("u", "delta", "A", "B", "C")}
    args["delta"] = args["delta"].abs()  # positive steps without softplus
    ref = selective_scan_ref(**args, delta_softplus=False)
    fast = selective_scan(**args, delta_softplus=False, chunk_size=4)
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-8)


def test_gradcheck_chunked_scan():
    inputs = _inputs(1, 2, 2, 7, 1)
    leaves = [inputs[k].requires_grad_() for k in ("u", "delta", "A", "B", "C")]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk_size=3), leaves)


def test_large_steps_stay_finite():
    inputs = _inputs(1, 4, 4, 40, 1)
    inputs["delta"] = inputs["delta"].abs() * 200  # decays of exp(-800): no large positive exponent anywhere
    out = _run(selective_scan, inputs, torch.ones(1, 4, 40, dtype=torch.float64), chunk_size=8)
    assert all(torch.isfinite(t).all() for t in out)


def test_half_precision_is_scanned_in_float32():
    inputs = {k: v.float() for k, v in _inputs(1, 4, 2, 9, 1).items()}
    y32 = selective_scan(**inputs)
    y16 = selective_scan(**{k: v.bfloat16() for k, v in inputs.items()})
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, rtol=0.1, atol=0.1)


def test_shapes_are_validated():
    inputs = _inputs(1, 4, 2, 6, 1)
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(**{**inputs, "A": inputs["A"][:3]})
    with pytest.raises(ValueError, match="groups"):
        selective_scan(**{**inputs, "B": inputs["B"].repeat(1, 3, 1, 1), "C": inputs["C"].repeat(1, 3, 1, 1)})
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(**inputs, chunk_size=0)


def test_default_chunk_size_is_near_sqrt_length():
    assert default_chunk_size(4096) == 64
    assert default_chunk_size(1024) == 32
    assert default_chunk_size(1) == 4
    assert default_chunk_size(10**8) == 128


def test_token_major_inputs():
    # SS2D passes (N, D, L) views of (N, L, D) tensors and B, C as views of (N, L, G, S); the result must not change
    inputs = _inputs(2, 8, 4, 24, 4)
    strided = {k: v.clone() for k, v in inputs.items()}
    for k in ("u", "delta", "z"):
        strided[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
    for k in ("B", "C"):
        strided[k] = inputs[k].permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    grad_out = torch.randn(2, 8, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = _run(selective_scan_ref, inputs, grad_out)
    fast = _run(selective_scan, strided, grad_out, chunk_size=8)
    for r, f in zip(ref, fast):
        torch.testing.assert_close(f, r, rtol=1e-6, atol=1e-8)
