"""VM-UNet and CM-SSM U-Net: ablation switches, returned features, the shared scan, SS2D and the attention blocks."""

from __future__ import annotations

import pytest
import torch
from model_checks import params_without_grad

import lesionseg.models.blocks.ss2d as ss2d_module
from lesionseg.models import ModelOutput, create_model
from lesionseg.models.blocks import SS2D, CrossRegionAttention, SqueezeExcite, cross_merge, cross_scan
from lesionseg.models.cmssm_unet import CMSSMUNet
from lesionseg.models.vmunet import VMUNet

TINY = {"channels": (8, 16, 32, 64), "depths": (1, 1, 1, 1), "decoder_depths": (1, 1, 1, 1), "d_state": 2}
FLAGS = ("use_se", "use_cmn", "use_cra")


def _grad_check(model: torch.nn.Module, size: int = 64) -> None:
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 1, size, size)
    out.square().mean().backward()
    missing = params_without_grad(model)
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize(
    "flags",
    [{}, *({name: False} for name in FLAGS), dict.fromkeys(FLAGS, False)],
    ids=["all_on", "no_se", "no_cmn", "no_cra", "all_off"],
)
def test_cmssm_flags_forward_and_gradients(flags):
    torch.manual_seed(0)
    model = CMSSMUNet(**TINY, **flags)
    _grad_check(model)
    if not flags.get("use_se", True):
        assert not any(isinstance(m, SqueezeExcite) for m in model.modules())
    if not flags.get("use_cra", True):
        assert not any(isinstance(m, CrossRegionAttention) for m in model.modules())
    if not flags.get("use_cmn", True):
        assert all(block.cmn is None for stage in model.encoder for block in stage.blocks)


def test_all_flags_off_is_vmunet():
    torch.manual_seed(0)
    plain = CMSSMUNet(**TINY, drop_path_rate=0.0, **dict.fromkeys(FLAGS, False)).eval()
    torch.manual_seed(0)
    base = VMUNet(**TINY, drop_path_rate=0.0).eval()
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in base.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), base(x))


def test_vmunet_gradients():
    torch.manual_seed(0)
    _grad_check(VMUNet(**TINY))


@pytest.mark.parametrize("name", ["vmunet_s", "cmssm_unet_s"])
def test_features_for_distillation(name):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), return_aux=True)
    assert isinstance(out, ModelOutput)
    keys = list(out.features)
    n_blocks = sum(len(s.blocks) for s in model.encoder) + sum(len(s.blocks) for s in model.decoder)
    assert len(keys) == n_blocks
    assert keys[0] == "encoder.0.0"
    last_stage = len(model.decoder) - 1
    assert keys[-1] == f"decoder.{last_stage}.{len(model.decoder[-1].blocks) - 1}"
    teacher = out.features[keys[-1]]
    assert teacher.shape == (1, 16, 16, 16)  # the last decoder block: C channels at 1/4 of the input
    assert out.features["encoder.3.0"].shape == (1, 128, 2, 2)


def test_vmunet_and_cmssm_share_the_scan(monkeypatch):
    calls = []

    def counting_scan(*args, **kwargs):
        calls.append(args[0].shape)
        return ss2d_module.selective_scan.__wrapped__(*args, **kwargs)

    counting_scan.__wrapped__ = ss2d_module.selective_scan
    monkeypatch.setattr(ss2d_module, "selective_scan", counting_scan)
    with torch.no_grad():
        for name in ("vmunet_s", "cmssm_unet_s"):
            calls.clear()
            model = create_model(name).eval()
            model(torch.randn(1, 3, 64, 64))
            assert len(calls) == 8, name  # one scan per block: 4 encoder + 4 decoder


def test_paper_sizes():
    n_vm = sum(p.numel() for p in create_model("vmunet").parameters())
    assert abs(n_vm - 27.43e6) / 27.43e6 < 0.01  # VM-UNet paper: 27.43M
    plain = create_model("cmssm_unet", use_se=False, use_cmn=False, use_cra=False)
    assert sum(p.numel() for p in plain.parameters()) == n_vm


def test_invalid_arguments():
    with pytest.raises(ValueError, match="same length"):
        VMUNet(channels=(8, 16), depths=(1, 1, 1))
    with pytest.raises(ValueError, match="multiple of 4"):
        VMUNet(channels=(6, 12), depths=(1, 1), decoder_depths=(1, 1))
    with pytest.raises(ValueError, match="use_cra"):
        CMSSMUNet(**TINY, use_cra="no")
    with pytest.raises(ValueError, match="d_conv"):
        SS2D(8, d_conv=2)


def test_cross_scan_round_trip():
    x = torch.randn(2, 4, 5, 3)  # (N, H, W, D)
    xs = cross_scan(x)
    assert xs.shape == (2, 20, 4, 3)
    torch.testing.assert_close(xs[:, :, 0].reshape(2, 4, 5, 3), x)  # row-major
    torch.testing.assert_close(xs[:, :, 1].reshape(2, 5, 4, 3).transpose(1, 2), x)  # column-major
    torch.testing.assert_close(xs[:, :, 2], xs[:, :, 0].flip(1))
    torch.testing.assert_close(cross_merge(xs, 4, 5), 4 * x)


def test_ss2d_shape_and_rectangular_input():
    block = SS2D(8, d_state=2)
    y = block(torch.randn(2, 3, 5, 8))
    assert y.shape == (2, 3, 5, 8)


def test_attention_blocks():
    x = torch.randn(2, 8, 6, 10)
    assert SqueezeExcite(8)(x).shape == x.shape
    cra = CrossRegionAttention(8)
    y = cra(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert cra.attend_h.weight.grad is not None and cra.attend_w.weight.grad is not None
