"""EAMNet: every switch off keeps shapes and gradients; MRCF, CMAM and external attention behave as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from model_checks import params_without_grad

from lesionseg.engine import load_config
from lesionseg.models import create_model
from lesionseg.models.blocks import ExternalAttention
from lesionseg.models.eamnet import CrossMixAttention, EAMNet, MRCFBlock

FLAGS = ("use_mrcf", "use_cmam", "use_eab")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _switches(off: tuple[str, ...]) -> dict[str, bool]:
    return {flag: flag not in off for flag in FLAGS}


@pytest.mark.parametrize("off", [(flag,) for flag in FLAGS] + [FLAGS], ids=lambda off: "+".join(off))
def test_switch_off_forward_and_gradients(off):
    torch.manual_seed(0)
    model = create_model("eamnet_s", **_switches(off)).train()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 1, 64, 64)
    out.square().mean().backward()
    no_grad = params_without_grad(model)
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


def test_switches_remove_the_modules():
    model = create_model("eamnet_s", use_mrcf=False, use_cmam=False, use_eab=False)
    assert not any(isinstance(m, (MRCFBlock, CrossMixAttention, ExternalAttention)) for m in model.modules())


def test_full_resolution_stem_of_the_paper_size():
    model = EAMNet(channels=(8, 8, 16, 16, 32)).eval()
    assert model.stride == 16
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 80)).shape == (1, 1, 48, 80)


def test_mrcf_block_handles_maps_smaller_than_its_pooling():
    block = MRCFBlock(8, 16).eval()
    with torch.no_grad():
        assert block(torch.randn(1, 8, 3, 5)).shape == (1, 16, 3, 5)


def test_cross_mix_attention_is_the_documented_formula():
    """y = x * sigmoid(c(x) + sum_k g_k s_k(x)), recomputed from the parameters with 2x2 / 4x4 block means, a
    shared MLP on the average- and max-pooled channels, softmax gates per sample and bilinear upsampling."""
    torch.manual_seed(0)
    att = CrossMixAttention(8).eval()
    with torch.no_grad():  # larger gate weights: the three contexts get clearly different shares
        att.context_gate.weight.mul_(20)
    x = torch.randn(2, 8, 16, 16)
    n = x.shape[0]
    avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))  # (N, C)
    w1, b1 = att.channel_mlp[0].weight[:, :, 0, 0], att.channel_mlp[0].bias
    w2, b2 = att.channel_mlp[2].weight[:, :, 0, 0], att.channel_mlp[2].bias

    def mlp(v):
        return (v @ w1.T + b1).clamp_min(0) @ w2.T + b2

    c = mlp(avg) + mlp(mx)  # (N, C)
    gates = torch.softmax(torch.cat([avg, mx], 1) @ att.context_gate.weight[:, :, 0, 0].T + att.context_gate.bias, 1)
    assert gates.shape == (n, 3) and (gates.max(1).values - gates.min(1).values).min() > 0.05
    s = torch.zeros(n, 16, 16)
    for k, factor in enumerate((1, 2, 4)):
        blocks = x.reshape(n, 8, 16 // factor, factor, 16 // factor, factor).mean(dim=(3, 5))
        planes = torch.stack([blocks.mean(1), blocks.amax(1)], 1)
        conv = att.spatial[k]
        sk = torch.nn.functional.conv2d(planes, conv.weight, conv.bias, padding=3)
        sk = torch.nn.functional.interpolate(sk, size=(16, 16), mode="bilinear", align_corners=False)
        s = s + gates[:, k, None, None] * sk[:, 0]
    expected = x * torch.sigmoid(c[:, :, None, None] + s[:, None])
    with torch.no_grad():
        torch.testing.assert_close(att(x), expected, rtol=1e-4, atol=1e-5)


def test_external_attention_is_position_equivariant():
    # memories are shared by all positions and the softmax runs over positions: permuting pixels permutes the output
    ea = ExternalAttention(8, memory_size=16).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ea(x.flip(-1).transpose(-1, -2)), ea(x).flip(-1).transpose(-1, -2))


@pytest.mark.parametrize("bad", [{"channels": (16, 30)}, {"channels": (16,)}, {"stem_stride": 3}])
def test_invalid_arguments_raise(bad):
    with pytest.raises(ValueError):
        EAMNet(**bad)


def test_configs_load_and_ablations_change_one_switch():
    base = yaml.safe_load((CONFIGS / "eamnet_ph2.yaml").read_text())
    load_config(CONFIGS / "eamnet_paper.yaml")
    for flag in FLAGS:
        path = CONFIGS / "ablation" / f"eamnet_ph2_no_{flag[4:]}.yaml"
        cfg = load_config(path)
        assert cfg.model.kwargs == {**base["model"]["kwargs"], flag: False}
        ablation = yaml.safe_load(path.read_text())
        ablation["model"]["kwargs"][flag] = True
        assert ablation == base
