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


def _ss2d_reference(block: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D written out position by position: four scan orders as explicit pixel lists, the S6 recurrence as a
    Python loop, each direction's outputs put back on the pixels they came from and summed."""
    n, h, w, _ = x.shape
    inner, s_dim, rank = block.d_inner, block.d_state, block.dt_rank
    xz = x @ block.in_proj.weight.T
    u, z = xz[..., :inner], xz[..., inner:]
    u = torch.nn.functional.conv2d(u.permute(0, 3, 1, 2), block.conv.weight, block.conv.bias, padding=1, groups=inner)
    u = torch.nn.functional.silu(u).permute(0, 2, 3, 1)  # (N, H, W, inner)
    row_major = [(i, j) for i in range(h) for j in range(w)]
    col_major = [(i, j) for j in range(w) for i in range(h)]
    orders = [row_major, col_major, row_major[::-1], col_major[::-1]]
    A = -torch.exp(block.A_log).view(4, inner, s_dim)
    D = block.D.view(4, inner)
    bias = block.dt_proj_bias.view(4, inner)
    y = torch.zeros(n, h, w, inner)
    for k, order in enumerate(orders):
        state = torch.zeros(n, inner, s_dim)
        for i, j in order:
            u_t = u[:, i, j]  # (N, inner)
            proj = u_t @ block.x_proj_weight[k].T  # (N, rank + 2S)
            dt, b_t, c_t = proj[:, :rank], proj[:, rank : rank + s_dim], proj[:, rank + s_dim :]
            delta = torch.nn.functional.softplus(dt @ block.dt_proj_weight[k].T + bias[k])  # (N, inner)
            state = torch.exp(delta[..., None] * A[k]) * state + (delta * u_t)[..., None] * b_t[:, None, :]
            y[:, i, j] += (state * c_t[:, None, :]).sum(-1) + D[k] * u_t
    y = torch.nn.functional.layer_norm(y, (inner,), block.out_norm.weight, block.out_norm.bias, block.out_norm.eps)
    return (y * torch.nn.functional.silu(z)) @ block.out_proj.weight.T


def test_ss2d_matches_a_written_out_four_direction_scan():
    torch.manual_seed(0)
    block = SS2D(4, d_state=3).eval()
    with torch.no_grad():  # per-direction parameters made different, so a direction mix-up shows
        block.A_log.copy_(torch.randn_like(block.A_log) * 0.5)
        block.D.copy_(torch.randn_like(block.D))
        block.dt_proj_bias.copy_(torch.randn_like(block.dt_proj_bias) * 0.5)
        block.out_norm.weight.copy_(torch.rand_like(block.out_norm.weight) + 0.5)
        block.out_norm.bias.copy_(torch.randn_like(block.out_norm.bias) * 0.1)
        x = torch.randn(2, 3, 5, 4)  # H != W: a transposed scan order would not even fit
        out = block(x)
        assert out.shape == (2, 3, 5, 4)
        torch.testing.assert_close(out, _ss2d_reference(block, x), rtol=1e-4, atol=1e-5)


def test_attention_blocks():
    x = torch.randn(2, 8, 6, 10)
    assert SqueezeExcite(8)(x).shape == x.shape
    cra = CrossRegionAttention(8)
    y = cra(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert cra.attend_h.weight.grad is not None and cra.attend_w.weight.grad is not None


@pytest.mark.parametrize("size", [(6, 10), (8, 8)], ids=["6x10", "8x8"])
def test_cross_region_attention_pools_along_each_axis(size):
    """y = x * g^h * g^w: g^h from the mean over W of each row (one weight per row), g^w from the mean over H of each
    column, each through the shared reduction then its own 1x1 convolution and a sigmoid. The square case matters:
    there a pooling-axis mix-up keeps every shape (as on the square inputs the models are trained on) and only the
    values can show it."""
    torch.manual_seed(0)
    cra = CrossRegionAttention(8, reduction=2, min_hidden=4).eval()
    bn = cra.reduce[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(4) * 0.2)
        bn.running_var.copy_(torch.rand(4) + 0.5)
        bn.weight.copy_(torch.rand(4) + 0.5)
        bn.bias.copy_(torch.randn(4) * 0.2)
    x = torch.randn(2, 8, *size)

    def hidden(z):  # (N, C, L) -> (N, hidden, L): shared 1x1 conv, eval BN, hard-swish
        f = torch.einsum("kc,ncl->nkl", cra.reduce[0].weight[:, :, 0, 0], z)
        f = (f - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps) * bn.weight[:, None]
        f = f + bn.bias[:, None]
        return f * torch.clamp(f + 3, 0, 6) / 6

    def gate(conv, f):
        return torch.sigmoid(torch.einsum("ck,nkl->ncl", conv.weight[:, :, 0, 0], f) + conv.bias[:, None])

    g_h = gate(cra.attend_h, hidden(x.mean(dim=3)))  # (N, C, H): one weight per row
    g_w = gate(cra.attend_w, hidden(x.mean(dim=2)))  # (N, C, W): one weight per column
    with torch.no_grad():
        torch.testing.assert_close(cra(x), x * g_h[..., :, None] * g_w[..., None, :], rtol=1e-4, atol=1e-5)
