"""UNeXt and SC-UNeXt: sizes against the papers, the shift, the SC skip and PFM by hand, the ablation switches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from model_checks import params_without_grad

from lesionseg.models import create_model
from lesionseg.models.blocks import CBAM
from lesionseg.models.complexity import count_macs, count_parameters
from lesionseg.models.sc_unext import PyramidFusion, SCSkip, SCUNeXt
from lesionseg.models.unext import UNeXt, shift_channel_groups


def test_unext_matches_the_public_code_size():
    model = create_model("unext")
    assert model.channels == (16, 32, 128, 160, 256)
    assert model.stride == 32
    # UNeXt paper: 1.47M parameters, 0.57 GFLOPs (MACs) at 256x256.
    assert count_parameters(model) == 1_471_921
    assert count_macs(model, (256, 256)) / 1e9 == pytest.approx(0.562, abs=0.001)


def test_unext_s_is_the_sc_unext_papers_baseline():
    model = create_model("unext_s")
    # SC-UNeXt paper, Table 1: UNeXt 247.62 K(=1024) parameters, 0.10 GFLOPs.
    assert count_parameters(model) == 253_561
    assert round(count_parameters(model) / 1024, 2) == 247.62
    assert count_macs(model, (256, 256)) / 1e9 == pytest.approx(0.0992, abs=0.0005)


def test_sc_unext_size():
    model = create_model("sc_unext")
    assert isinstance(model, SCUNeXt) and model.channels == (8, 16, 32, 64, 128)
    # Paper: 243.63 K(=1024) = 249,477 parameters and 0.13 GFLOPs; our reading of the modules is ~17% larger.
    assert count_parameters(model) == 291_155
    assert count_macs(model, (256, 256)) / 1e9 == pytest.approx(0.1238, abs=0.0005)


def test_shift_moves_each_channel_group_with_zero_fill():
    x = torch.zeros(1, 5, 5, 5)
    x[:, :, 2, 2] = 1.0
    x[:, 1, 0, 0] = 7.0  # shifted up by one: leaves the map
    out = shift_channel_groups(x, dim=2, groups=5)
    for c, shift in enumerate(range(-2, 3)):
        expected = torch.zeros(5, 5)
        expected[2 + shift, 2] = 1.0
        assert torch.equal(out[0, c], expected), c
    out_w = shift_channel_groups(x, dim=3, groups=5)
    assert out_w[0, 4, 2, 4] == 1.0 and out_w[0, 0, 2, 0] == 1.0


def test_shift_uses_torch_chunk_groups_like_the_public_code():
    # 8 channels chunk into 4 groups of 2: shifts -2, -1, 0, +1 (the +2 shift is unused).
    x = torch.zeros(1, 8, 7, 1)
    x[:, :, 3, 0] = 1.0
    rows = shift_channel_groups(x, dim=2, groups=5)[0, :, :, 0].argmax(dim=1)
    assert rows.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]


def test_unext_additive_skip():
    model = create_model("unext_s")
    feats = [torch.randn(1, c, 4, 4) for c in model.channels]
    x = torch.randn(1, model.channels[2], 4, 4)
    assert torch.equal(model.fuse_skip(2, x, feats), x + feats[2])


def test_sc_unext_with_every_switch_off_is_unext():
    torch.manual_seed(0)
    base = create_model("unext_s").eval()
    plain = create_model("sc_unext", use_cbam=False, use_sc_skip=False, use_pfm=False).eval()
    assert plain.state_dict().keys() == base.state_dict().keys()
    plain.load_state_dict(base.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(plain(x), base(x))


@pytest.mark.parametrize(
    ("switch", "module"),
    [("use_cbam", "encoder_attention"), ("use_sc_skip", "sc_skips"), ("use_pfm", "pyramid_fusion")],
)
def test_each_switch_removes_only_its_module(switch, module):
    full = create_model("sc_unext")
    ablated = create_model("sc_unext", **{switch: False})
    assert getattr(full, module) is not None and getattr(ablated, module) is None
    removed = {k.split(".")[0] for k in full.state_dict().keys() - ablated.state_dict().keys()}
    assert removed == {module}


@pytest.mark.parametrize(
    "flags",
    [
        {"use_cbam": False},
        {"use_sc_skip": False},
        {"use_pfm": False},
        {"use_sc_skip": False, "use_pfm": False},
    ],
)
def test_ablations_run_and_train(flags):
    torch.manual_seed(0)
    model = create_model("sc_unext", in_channels=1, **flags).train()
    x = torch.randn(2, 1, 64, 32)
    out = model(x)
    assert out.shape == (2, 1, 64, 32)
    out.square().mean().backward()
    no_grad = params_without_grad(model)
    assert not no_grad, no_grad[:5]


def test_sc_skip_formula_by_hand():
    skip_fusion = SCSkip(channels=4, deeper_channels=8, shallower_channels=2).eval()
    with torch.no_grad():
        for proj, value in ((skip_fusion.deeper, 1.0), (skip_fusion.shallower, 2.0)):
            proj[0].weight.zero_()  # 1x1 conv -> 0, then BN (eval, default statistics) adds its bias
            proj[1].bias.fill_(value)
    x, skip = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    deeper, shallower = torch.randn(2, 8, 3, 3), torch.randn(2, 2, 12, 12)
    with torch.no_grad():
        out = skip_fusion(x, skip, deeper, shallower)
    # z_b = 1 and z_c = 2 everywhere: (z_a + z_b) * x + z_c.
    torch.testing.assert_close(out, (skip + 1.0) * x + 2.0)
    with pytest.raises(ValueError, match="shallower"):
        skip_fusion(x, skip, deeper)
    shallowest = SCSkip(channels=4, deeper_channels=8).eval()
    with torch.no_grad():
        shallowest.deeper[0].weight.zero_()
        torch.testing.assert_close(shallowest(x, skip, deeper), skip * x)


def test_pyramid_fusion_is_upsample_and_add():
    pfm = PyramidFusion(in_channels=(2, 2), scales=(4, 2), out_channels=2)
    with torch.no_grad():
        for branch in pfm.branches:
            branch[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))  # 1x1 conv: identity
            branch[1].weight.zero_()
            branch[1].weight[0, 0].fill_(1.0)  # transposed conv, kernel = stride: nearest-neighbour upsampling
            branch[1].weight[1, 1].fill_(1.0)
            branch[1].bias.zero_()
    levels = [torch.randn(1, 2, 2, 3), torch.randn(1, 2, 4, 6)]
    base = torch.randn(1, 2, 8, 12)
    with torch.no_grad():
        out = pfm(levels, base)
    nearest = [torch.nn.functional.interpolate(lv, scale_factor=s, mode="nearest") for lv, s in zip(levels, (4, 2))]
    torch.testing.assert_close(out, base + nearest[0] + nearest[1])
    with pytest.raises(ValueError, match="one scale per level"):
        PyramidFusion((2,), (2, 4), 2)


def test_pfm_scales_follow_the_decoder():
    model = create_model("sc_unext")
    transposed = [branch[1] for branch in model.pyramid_fusion.branches]
    assert [t.stride[0] for t in transposed] == [16, 8, 4, 2]
    assert [branch[0].in_channels for branch in model.pyramid_fusion.branches] == [64, 32, 16, 8]


def test_cbam_is_channel_then_spatial_attention():
    torch.manual_seed(0)
    cbam = CBAM(8)
    x = torch.randn(2, 8, 5, 5)
    y = cbam.channel_attention(x)
    torch.testing.assert_close(cbam(x), cbam.spatial_attention.weights(y) * y)
    assert cbam(x).shape == x.shape


def test_invalid_widths_raise():
    with pytest.raises(ValueError, match="channels"):
        UNeXt(channels=(8, 16))
    with pytest.raises(ValueError, match="shift_groups"):
        UNeXt(channels=(8, 16, 32), shift_groups=4)


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize(
    ("ablation", "switch", "value"),
    [
        ("no_skip", "model.kwargs.use_sc_skip", False),
        ("no_fuse", "model.kwargs.use_pfm", False),
        ("no_edge", "loss.kwargs.edge_weight", 0.0),
    ],
)
def test_ablation_configs_change_exactly_one_switch(ablation, switch, value):
    configs = Path(__file__).resolve().parents[2] / "configs"
    base = _leaves(yaml.safe_load((configs / "sc_unext_ph2.yaml").read_text()))
    other = _leaves(yaml.safe_load((configs / "ablation" / f"sc_unext_ph2_{ablation}.yaml").read_text()))
    assert base.keys() == other.keys()
    assert {k for k in base if base[k] != other[k]} == {switch}
    assert other[switch] == value
