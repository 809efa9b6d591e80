"""EFP: every switch off keeps shapes and gradients; the blocks follow the paper's formulas."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from model_checks import params_without_grad

from lesionseg.engine import load_config
from lesionseg.models import create_model
from lesionseg.models.blocks import SpatialAttention
from lesionseg.models.efp import EFP, CrossScaleEnhancement

FLAGS = ("use_cross_scale", "use_spatial_attention")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _switches(off: tuple[str, ...]) -> dict[str, bool]:
    return {flag: flag not in off for flag in FLAGS}


@pytest.mark.parametrize("off", [(flag,) for flag in FLAGS] + [FLAGS], ids=lambda off: "+".join(off))
def test_switch_off_forward_and_gradients(off):
    torch.manual_seed(0)
    model = create_model("efp_s", **_switches(off)).train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 1, 32, 32)
    out.square().mean().backward()
    no_grad = params_without_grad(model)
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


def test_switches_remove_the_modules():
    model = create_model("efp_s", use_cross_scale=False, use_spatial_attention=False)
    assert model.cross_scale is None
    assert not any(isinstance(m, (SpatialAttention, CrossScaleEnhancement)) for m in model.modules())


@pytest.mark.parametrize("deeper", [True, False])
def test_cross_scale_enhancement_resamples_the_partner(deeper):
    block = CrossScaleEnhancement(8, 16, partner_is_deeper=deeper).eval()
    x = torch.randn(1, 8, 16, 16)
    partner = torch.randn(1, 16, 8, 8) if deeper else torch.randn(1, 16, 32, 32)
    assert block(x, partner).shape == (1, 8, 16, 16)


def test_spatial_attention_is_the_paper_formula():
    att = SpatialAttention(7)
    x = torch.randn(2, 5, 8, 8)
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
    expected = torch.sigmoid(att.conv(pooled)) * x
    torch.testing.assert_close(att(x), expected)


@pytest.mark.parametrize("bad", [{"channels": (16, 32, 64)}, {"fpn_channels": 0}, {"num_classes": 0}])
def test_invalid_arguments_raise(bad):
    with pytest.raises(ValueError):
        EFP(**bad)


def test_configs_load_and_ablations_change_one_switch():
    base = yaml.safe_load((CONFIGS / "efp_ph2.yaml").read_text())
    load_config(CONFIGS / "efp_paper.yaml")
    for flag in FLAGS:
        path = CONFIGS / "ablation" / f"efp_ph2_no_{flag[4:]}.yaml"
        cfg = load_config(path)
        assert cfg.model.kwargs == {**base["model"]["kwargs"], flag: False}
        ablation = yaml.safe_load(path.read_text())
        ablation["model"]["kwargs"][flag] = True
        assert ablation == base
