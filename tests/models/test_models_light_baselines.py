"""MALUNet, EGE-UNet and SegFormer: sizes as published, switches, side outputs, blocks, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from model_checks import params_without_grad

from lesionseg.engine import load_config
from lesionseg.models import create_model
from lesionseg.models.blocks import EfficientSelfAttention, ExternalAttention, LayerNorm2d, SpatialAttention
from lesionseg.models.complexity import count_parameters
from lesionseg.models.egeunet import EGEUNet, GroupAggregationBridge, GroupedHadamardAttention
from lesionseg.models.malunet import DilatedGatedAttention, MALUNet, SpatialChannelBridge
from lesionseg.models.segformer import SegFormer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MALUNET_FLAGS = ("use_dga", "use_iea", "use_sab", "use_cab")
EGEUNET_FLAGS = ("use_ghpa", "use_gab", "use_mask_guidance")


def _off(flags: tuple[str, ...], off: tuple[str, ...]) -> dict[str, bool]:
    return {flag: flag not in off for flag in flags}


@pytest.mark.parametrize(
    ("name", "published"), [("malunet", 175_000), ("egeunet", 53_000), ("segformer_b0", 3_700_000)]
)
def test_parameter_counts_match_the_papers(name, published):
    assert abs(count_parameters(create_model(name)) - published) / published < 0.05


@pytest.mark.parametrize("off", [(f,) for f in MALUNET_FLAGS] + [MALUNET_FLAGS], ids=lambda off: "+".join(off))
def test_malunet_switches_keep_shapes_and_gradients(off):
    torch.manual_seed(0)
    model = create_model("malunet", **_off(MALUNET_FLAGS, off)).train()
    # 64x64, not 32x32: at a 1x1 bottleneck the softmax over positions of external attention is constant (no gradient).
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    out.square().mean().backward()
    assert not params_without_grad(model)


def test_malunet_switches_remove_the_modules():
    model = create_model("malunet", use_dga=False, use_iea=False, use_sab=False, use_cab=False)
    assert model.skip_bridge is None
    assert not any(isinstance(m, (DilatedGatedAttention, ExternalAttention)) for m in model.modules())


def test_malunet_bridge_is_the_code_order():
    torch.manual_seed(0)
    bridge = SpatialChannelBridge((4, 8)).eval()
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    spatial = [bridge.spatial_attention(t) for t in feats]
    mixed = [s + t for s, t in zip(spatial, feats)]
    weights = bridge.channel_attention.weights(mixed)
    for out, w, u, s in zip(bridge(feats), weights, mixed, spatial):
        torch.testing.assert_close(out, w * u + s)


def test_sab_uses_a_dilated_7x7():
    conv = SpatialAttention(7, dilation=3).conv
    assert conv.dilation == (3, 3) and conv.padding == (9, 9)


def test_egeunet_side_outputs_are_deepest_first():
    model = create_model("egeunet").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), return_aux=True)
    assert [a.shape[-1] for a in out.aux_logits] == [2, 4, 8, 16, 32]
    assert all(a.shape[:2] == (2, 1) for a in out.aux_logits)


@pytest.mark.parametrize("off", [(f,) for f in EGEUNET_FLAGS] + [EGEUNET_FLAGS], ids=lambda off: "+".join(off))
def test_egeunet_switches_keep_shapes_and_gradients(off):
    torch.manual_seed(0)
    model = create_model("egeunet", **_off(EGEUNET_FLAGS, off)).train()
    out = model(torch.randn(2, 3, 32, 32), return_aux=True)
    assert out.logits.shape == (2, 1, 32, 32)
    assert len(out.aux_logits) == (0 if "use_mask_guidance" in off else 5)
    loss = out.logits.square().mean() + sum(a.square().mean() for a in out.aux_logits)
    loss.backward()
    assert not params_without_grad(model)


def test_egeunet_switches_remove_the_modules():
    model = create_model("egeunet", use_ghpa=False, use_gab=False, use_mask_guidance=False)
    assert model.side_heads is None and model.bridges is None
    assert not any(isinstance(m, GroupedHadamardAttention) for m in model.modules())


def test_ghpa_axis_weights_start_at_one_and_resize():
    block = GroupedHadamardAttention(8, 12).eval()
    assert block(torch.randn(1, 8, 6, 10)).shape == (1, 12, 6, 10)
    assert torch.equal(block.weight_ch, torch.ones_like(block.weight_ch))


def test_gab_requires_its_mask():
    bridge = GroupAggregationBridge(16, 8, mask_channels=1)
    high, low = torch.randn(1, 16, 4, 4), torch.randn(1, 8, 8, 8)
    assert bridge(high, low, torch.randn(1, 1, 8, 8)).shape == (1, 8, 8, 8)
    with pytest.raises(ValueError, match="mask"):
        bridge(high, low)


def test_layernorm2d_normalises_channels():
    norm = LayerNorm2d(6)
    x = torch.randn(2, 6, 3, 5)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)


def test_efficient_attention_without_reduction_is_full_attention():
    torch.manual_seed(0)
    attn = EfficientSelfAttention(8, heads=2, reduction=1).eval()
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([attn.query.weight, attn.key_value.weight]))
        mha.in_proj_bias.copy_(torch.cat([attn.query.bias, attn.key_value.bias]))
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    x = torch.randn(2, 4, 4, 8)
    tokens = x.reshape(2, 16, 8)
    torch.testing.assert_close(attn(x).reshape(2, 16, 8), mha(tokens, tokens, tokens, need_weights=False)[0])


def test_efficient_attention_reduces_keys():
    attn = EfficientSelfAttention(8, heads=1, reduction=4)
    assert attn(torch.randn(1, 8, 8, 8)).shape == (1, 8, 8, 8)


def test_segformer_b0_forward_and_gradients():
    torch.manual_seed(0)
    model = create_model("segformer_b0").train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1, 32, 32)
    out.square().mean().backward()
    assert not params_without_grad(model)


@pytest.mark.parametrize(
    ("cls", "bad"),
    [
        (MALUNet, {"channels": (8, 16, 24, 30, 48, 64)}),
        (MALUNet, {"num_conv_stages": 7}),
        (EGEUNet, {"channels": (8, 16)}),
        (EGEUNet, {"num_classes": 0}),
        (SegFormer, {"heads": (1, 2, 5)}),
        (SegFormer, {"channels": (32, 64, 160, 250)}),
    ],
)
def test_invalid_arguments_raise(cls, bad):
    with pytest.raises(ValueError):
        cls(**bad)


@pytest.mark.parametrize(
    "stem", ["malunet_paper", "malunet_ph2", "egeunet_paper", "egeunet_ph2", "segformer_b0_paper", "segformer_s_ph2"]
)
def test_configs_load(stem):
    cfg = load_config(CONFIGS / f"{stem}.yaml")
    model = create_model(cfg.model.name, **cfg.model.kwargs)
    if cfg.model.name == "egeunet":
        assert cfg.loss.deep_supervision == (1.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    assert isinstance(model, (MALUNet, EGEUNet, SegFormer))
