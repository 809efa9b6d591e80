"""EFP: every switch off keeps shapes and gradients; the blocks follow the paper's formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def _randomize_batch_norms(module: torch.nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so that eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.3)


def _conv_bn_relu(x: torch.Tensor, cna: torch.nn.Sequential) -> torch.Tensor:
    """act(W * x): the 3x3 convolution, eval-mode batch norm written out, ReLU."""
    conv, bn = cna[0], cna[1]
    y = torch.nn.functional.conv2d(x, conv.weight, None, padding=1)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    y = (y - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]
    return y.clamp_min(0)


@pytest.mark.parametrize("deeper", [True, False])
def test_cross_scale_enhancement_is_the_paper_formula(deeper):
    """F*_ij = act(W_ij * F_i) + act(W_ji * resample(F_j)), the partner bilinearly upsampled or 2x2 average-pooled."""
    torch.manual_seed(0)
    block = CrossScaleEnhancement(8, 16, partner_is_deeper=deeper).eval()
    _randomize_batch_norms(block)
    x = torch.randn(1, 8, 16, 16)
    partner = torch.randn(1, 16, 8, 8) if deeper else torch.randn(1, 16, 32, 32)
    if deeper:  # bilinear, half-pixel centres: output pixel i reads input position (i + 0.5) / 2 - 0.5
        pos = ((torch.arange(16) + 0.5) / 2 - 0.5).clamp(0, 7)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=7)
        t = pos - lo
        rows = partner[:, :, lo] * (1 - t)[:, None] + partner[:, :, hi] * t[:, None]
        resampled = rows[..., lo] * (1 - t) + rows[..., hi] * t
    else:  # mean of each 2x2 block
        resampled = partner.reshape(1, 16, 16, 2, 16, 2).mean(dim=(3, 5))
    expected = _conv_bn_relu(x, block.self_conv) + _conv_bn_relu(resampled, block.partner_conv)
    with torch.no_grad():
        out = block(x, partner)
    assert out.shape == (1, 8, 16, 16)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def _correlate_same(planes: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Zero-padded 'same' cross-correlation of (C, H, W) planes with a (C, k, k) kernel, summed over C (numpy)."""
    c, h, w = planes.shape
    k = kernel.shape[-1]
    r = k // 2
    padded = np.pad(planes, ((0, 0), (r, r), (r, r)))
    out = np.zeros((h, w))
    for i in range(k):
        for j in range(k):
            out += np.einsum("c,chw->hw", kernel[:, i, j], padded[:, i : i + h, j : j + w])
    return out


def test_spatial_attention_is_the_paper_formula():
    """Ms = sigmoid(conv7x7([avg_c(F), max_c(F)])), F_out = Ms * F, computed in numpy from a kernel we set."""
    att = SpatialAttention(7)
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.3, (2, 7, 7))
    att.conv.weight.data.copy_(torch.from_numpy(kernel)[None].float())
    x = torch.randn(2, 5, 8, 8)
    xn = x.double().numpy()
    for n in range(2):
        planes = np.stack([xn[n].mean(axis=0), xn[n].max(axis=0)])  # channel 0 average, channel 1 maximum
        ms = 1 / (1 + np.exp(-_correlate_same(planes, kernel)))
        np.testing.assert_allclose(att.weights(x[n : n + 1])[0, 0].detach().numpy(), ms, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(att(x)[n].detach().numpy(), ms[None] * xn[n], rtol=1e-4, atol=1e-5)


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
