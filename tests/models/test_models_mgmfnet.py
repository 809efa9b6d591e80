"""MGMFNet: five side masks finest first, deep supervision backpropagates, every switch off keeps gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from model_checks import params_without_grad

from lesionseg.engine import load_config
from lesionseg.losses import DeepSupervisionLoss, build_loss
from lesionseg.models import ModelOutput, create_model
from lesionseg.models.mgmfnet import NUM_SIDE_OUTPUTS, DualPathAttention, MaskGuidedFusion, MGMFNet, focus_regions

FLAGS = ("use_mgmscf", "use_mask_guidance", "use_dpam")
WEIGHTS = (1.0, 0.5, 0.4, 0.3, 0.2, 0.1)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _switches(off: tuple[str, ...]) -> dict[str, bool]:
    return {flag: flag not in off for flag in FLAGS}


def _deep_supervision_loss() -> DeepSupervisionLoss:
    return DeepSupervisionLoss(build_loss("bce_dice", bce_weight=1.0, dice_weight=1.0), WEIGHTS)


def test_five_side_outputs_finest_first():
    model = create_model("mgmfnet_s").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96), return_aux=True)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (1, 1, 64, 96)
    assert len(out.aux_logits) == NUM_SIDE_OUTPUTS == len(WEIGHTS) - 1
    assert [tuple(a.shape[-2:]) for a in out.aux_logits] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]


@pytest.mark.parametrize("off", [()] + [(flag,) for flag in FLAGS] + [FLAGS], ids=lambda off: "+".join(off) or "all")
def test_deep_supervision_reaches_every_parameter(off):
    torch.manual_seed(0)
    model = create_model("mgmfnet_s", **_switches(off)).train()
    x = torch.randn(2, 3, 64, 64)
    target = (torch.rand(2, 1, 64, 64) > 0.5).float()
    out = model(x, return_aux=True)
    assert out.logits.shape == (2, 1, 64, 64)
    loss = _deep_supervision_loss()(out.logits, out.aux_logits, target)
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = params_without_grad(model)
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


def test_switches_remove_the_modules():
    model = create_model("mgmfnet_s", use_mgmscf=False, use_dpam=False)
    assert not any(isinstance(m, (MaskGuidedFusion, DualPathAttention)) for m in model.modules())
    guided = create_model("mgmfnet_s", use_mask_guidance=False)
    assert all(not f.use_mask_guidance for f in guided.fusions)


def test_mask_guidance_gates_each_branch_with_its_focus_region():
    """Branch k sees x * (1 + r_k) for the k-th focus region of the mask; without guidance the mask is ignored."""
    torch.manual_seed(0)
    fusion = MaskGuidedFusion(8, 8, 8).eval()
    plain = MaskGuidedFusion(8, 8, 8, use_mask_guidance=False).eval()
    plain.load_state_dict(fusion.state_dict())
    skip, deep = torch.randn(1, 8, 12, 12), torch.randn(1, 8, 12, 12)
    lesion = torch.full((1, 1, 12, 12), -30.0)
    lesion[..., 2:5, 2:5] = 30.0
    other = torch.full((1, 1, 12, 12), -30.0)
    other[..., 7:10, 6:10] = 30.0
    seen: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0])) for b in fusion.branches]
    with torch.no_grad():
        out_lesion = fusion(skip, deep, lesion)
        x = fusion.reduce(torch.cat([skip, deep], 1))
        for branch_input, region in zip(seen, focus_regions(lesion)):
            torch.testing.assert_close(branch_input, x * (1 + region))
        # the mask changes the fusion, and where it is empty the gates are 1: the unguided fusion of the same weights
        assert not torch.allclose(out_lesion, fusion(skip, deep, other), atol=1e-3)
        torch.testing.assert_close(fusion(skip, deep, torch.full_like(lesion, -30.0)), plain(skip, deep, lesion))
        torch.testing.assert_close(plain(skip, deep, lesion), plain(skip, deep, other))
    for h in hooks:
        h.remove()


def test_focus_regions_by_hand():
    mask = torch.full((1, 1, 9, 9), -20.0)
    mask[..., 3:6, 3:6] = 20.0  # a 3x3 square, probability ~1 inside, ~0 outside
    p, dilated5, dilated9, band = focus_regions(mask)
    inside = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    inside[..., 3:6, 3:6] = True
    assert torch.equal(p > 0.5, inside)
    assert int((dilated5 > 0.5).sum()) == 7 * 7
    assert bool((dilated9 > 0.5).all())
    ring = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    ring[..., 2:7, 2:7] = True
    ring[..., 4, 4] = False  # dilated 5x5 minus the eroded centre pixel
    assert torch.equal(band > 0.5, ring)


@pytest.mark.parametrize(
    "bad", [{"channels": (8, 16, 32, 64)}, {"depths": (1, 1, 1)}, {"depths": (1, 0, 1, 1)}, {"in_channels": 0}]
)
def test_invalid_arguments_raise(bad):
    with pytest.raises(ValueError):
        MGMFNet(**bad)


def test_configs_deep_supervision_matches_the_side_outputs():
    for name in ("mgmfnet_ph2.yaml", "mgmfnet_paper.yaml"):
        cfg = load_config(CONFIGS / name)
        assert cfg.loss.deep_supervision == WEIGHTS
    base = yaml.safe_load((CONFIGS / "mgmfnet_ph2.yaml").read_text())
    for flag in FLAGS:
        path = CONFIGS / "ablation" / f"mgmfnet_ph2_no_{flag[4:]}.yaml"
        cfg = load_config(path)
        assert cfg.model.kwargs == {**base["model"]["kwargs"], flag: False}
        ablation = yaml.safe_load(path.read_text())
        ablation["model"]["kwargs"][flag] = True
        assert ablation == base
