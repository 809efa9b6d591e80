"""bf16 autocast on CPU: the float32 islands (dilated depthwise convolutions, normalisations) and MALUNet / EGE-UNet
training steps that stay finite and follow fp32's gradients; the U-shape's memory format."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lesionseg.models import create_model
from lesionseg.models.blocks import DepthwiseConv2d, GroupNorm32, LayerNorm2d


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def test_dilated_depthwise_weight_gradient_under_bf16_autocast_matches_fp32():
    # oneDNN's bf16 weight gradient of this convolution on a channels-last 32x32 input was garbage (relative error
    # ~2) before the convolution ran in float32 under autocast.
    torch.manual_seed(0)
    conv = DepthwiseConv2d(8, 3, dilation=2)
    x = torch.randn(4, 8, 32, 32).contiguous(memory_format=torch.channels_last)
    g = torch.randn(4, 8, 32, 32)
    conv(x).backward(g)
    expected = conv.weight.grad.clone()
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16  # what an autocast convolution returns
    y.backward(g.bfloat16())
    err = (conv.weight.grad - expected).abs().max() / expected.abs().max()
    assert err < 0.02


def test_depthwise_conv_is_a_plain_conv_outside_autocast():
    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, 3, dilation=5)
    plain = nn.Conv2d(6, 6, 3, padding=5, dilation=5, groups=6)
    assert list(conv.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 20, 20)
    torch.testing.assert_close(conv(x), plain(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="kernel_size"):
        DepthwiseConv2d(6, 4)


@pytest.mark.parametrize("norm", [GroupNorm32(4, 8), LayerNorm2d(8)], ids=["group_norm", "layer_norm2d"])
def test_norms_compute_in_float32_under_autocast(norm):
    x = torch.randn(2, 8, 6, 6).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, norm(x.float()), rtol=0, atol=0)
    xf = torch.randn(2, 8, 6, 6)
    reference = nn.GroupNorm(4, 8) if isinstance(norm, GroupNorm32) else None
    if reference is not None:
        reference.load_state_dict(norm.state_dict())
        torch.testing.assert_close(norm(xf), reference(xf), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["malunet", "egeunet"])
def test_bf16_training_step_is_finite_and_follows_fp32(name):
    # At 256x256 the dilated depthwise convolutions see 32x32 and larger maps; in bf16 their weight gradients were
    # non-finite from the first step (NaN loss from the second), in channels-last and (through the attention levels'
    # channels-last outputs) in NCHW alike.
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.randn(2, 3, 256, 256)
    target = (torch.rand(2, 1, 256, 256) > 0.5).float()

    def grads(bf16: bool) -> torch.Tensor:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        F.binary_cross_entropy_with_logits(logits.float(), target).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    fp32, bf16 = grads(False), grads(True)
    assert torch.isfinite(bf16).all()
    assert _cosine(bf16, fp32) > 0.9


@pytest.mark.parametrize("name", ["malunet", "egeunet"])
def test_output_does_not_depend_on_the_input_memory_format(name):
    # The levels compute channels-last on CPU whatever the input's format (the attention levels used to switch the
    # rest of the network to channels-last half-way, and a contiguous input then paid for copies).
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model(x)
        b = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
