"""Attention U-Net, UNet++ and ResUNet++: shapes, gradients, sizes, the attention gate, deep supervision, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_checks import params_without_grad

from lesionseg.engine import load_config
from lesionseg.losses import DeepSupervisionLoss, build_loss
from lesionseg.models import ModelOutput, UNet, create_model, list_models
from lesionseg.models.attention_unet import AttentionUNet
from lesionseg.models.blocks import ASPP, AttentionGate, SqueezeExcite
from lesionseg.models.complexity import count_parameters
from lesionseg.models.resunetpp import DecoderAttention, ResidualUnit, ResUNetPlusPlus
from lesionseg.models.unetpp import UNetPlusPlus

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CPU_SIZES = ("attention_unet_s", "unetpp_s", "resunetpp_s")
PAPER_SIZES = ("attention_unet", "unetpp", "resunetpp")
SWITCHES = {
    "attention_unet_s": [{"use_attention": False}],
    "unetpp_s": [{"deep_supervision": True}],
    "resunetpp_s": [
        {"use_se": False},
        {"use_aspp": False},
        {"use_attention": False},
        {"use_se": False, "use_aspp": False, "use_attention": False},
    ],
}


def test_registered_with_size_tags():
    assert set(CPU_SIZES) <= set(list_models(cpu_size=True))
    assert set(PAPER_SIZES) <= set(list_models(paper_size=True))


@pytest.mark.parametrize("name", CPU_SIZES + PAPER_SIZES)
def test_logits_at_input_size(name):
    model = create_model(name, in_channels=1, num_classes=2).eval()
    h, w = 2 * model.stride, 3 * model.stride
    with torch.no_grad():
        out = model(torch.randn(2, 1, h, w))
    assert out.shape == (2, 2, h, w)


@pytest.mark.parametrize(
    ("name", "flags"),
    [(name, flags) for name in CPU_SIZES for flags in [{}, *SWITCHES[name]]],
    ids=lambda v: v if isinstance(v, str) else ("+".join(f"{k}={v[k]}" for k in v) or "default"),
)
def test_every_parameter_gets_a_gradient(name, flags):
    torch.manual_seed(0)
    model = create_model(name, **flags).train()
    x = torch.randn(2, 3, 64, 64)
    target = (torch.rand(2, 1, 64, 64) > 0.5).float()
    out = model(x, return_aux=True)
    assert isinstance(out, ModelOutput) and out.logits.shape == (2, 1, 64, 64)
    loss = build_loss("bce_dice")
    if out.aux_logits:
        loss = DeepSupervisionLoss(loss, (1.0,) * (1 + len(out.aux_logits)))
        value = loss(out.logits, out.aux_logits, target)
    else:
        value = loss(out.logits, target)
    value.backward()
    no_grad = params_without_grad(model)
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


@pytest.mark.parametrize("name", CPU_SIZES)
def test_channels_last_training_step(name):
    # The PH2 configs train channels-last; resunetpp_s once crashed there (a strided 1x1 convolution on 8 channels).
    torch.manual_seed(0)
    model = create_model(name).to(memory_format=torch.channels_last).train()
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    model(x).square().mean().backward()
    assert not params_without_grad(model)


@pytest.mark.parametrize(
    ("name", "kwargs", "params"),
    [
        ("attention_unet", {}, 33_479_557),  # U-Net 31,037,633 + four gates
        ("attention_unet_s", {}, 2_096_101),
        # Paper: 9.04M (the Keras code's 9,041,601 with one input channel, no batch norm); ours has BN.
        ("unetpp", {}, 9_045_825),
        ("unetpp", {"deep_supervision": True}, 9_045_825 + 3 * 33),
        ("unetpp_s", {}, 567_057),
        # The authors' widths: 4,062,993 in their code, "4.07M" (4,070,385 with BN statistics) in the paper.
        ("resunetpp", {}, 4_061_321),
        ("resunetpp", {"channels": (32, 64, 128, 256, 512)}, 16_223_481),
        ("resunetpp_s", {}, 1_018_585),
    ],
)
def test_parameter_counts(name, kwargs, params):
    assert count_parameters(create_model(name, **kwargs)) == params


# ----------------------------------------------------------------------------------------------- attention gate
def test_attention_gate_coefficients_are_in_unit_interval_at_skip_size():
    torch.manual_seed(0)
    gate = AttentionGate(channels=6, gating_channels=10)
    x, g = 3.0 * torch.randn(2, 6, 16, 12), 3.0 * torch.randn(2, 10, 8, 6)
    alpha = gate.coefficients(x, g)
    assert alpha.shape == (2, 1, 16, 12)
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert gate(x, g).shape == x.shape
    # A gating signal at another size is resampled to the coarse grid.
    assert gate.coefficients(x, torch.randn(2, 10, 4, 3)).shape == (2, 1, 16, 12)


def test_attention_gate_formula_by_hand():
    torch.manual_seed(0)
    gate = AttentionGate(channels=4, gating_channels=8, inter_channels=3).eval()
    assert gate.theta.weight.shape == (3, 4, 2, 2) and gate.theta.bias is None
    x, g = torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        theta = torch.nn.functional.conv2d(x, gate.theta.weight, stride=2)
        q = gate.psi(torch.relu(theta + gate.phi(g)))
        alpha = torch.nn.functional.interpolate(torch.sigmoid(q), size=(8, 8), mode="bilinear", align_corners=False)
        torch.testing.assert_close(gate.coefficients(x, g), alpha)
        torch.testing.assert_close(gate(x, g), gate.out(alpha * x))
        gate.psi.weight.zero_()
        gate.psi.bias.fill_(0.0)
        torch.testing.assert_close(gate.coefficients(x, g), torch.full((1, 1, 8, 8), 0.5))


def test_attention_gate_rejects_bad_sizes():
    with pytest.raises(ValueError, match="channels"):
        AttentionGate(0, 4)
    with pytest.raises(ValueError, match="subsample"):
        AttentionGate(4, 4, subsample=0)


def test_attention_unet_gates_every_skip_with_the_coarser_level():
    model = create_model("attention_unet_s")
    assert isinstance(model, AttentionUNet) and isinstance(model, UNet)
    gates = list(model.skip_attention)
    assert [(g.theta.in_channels, g.phi.in_channels) for g in gates] == [(128, 256), (64, 128), (32, 64), (16, 32)]
    seen = []
    hooks = [g.register_forward_hook(lambda m, args, out: seen.append((args[0].shape, args[1].shape))) for g in gates]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 48))
    for hook in hooks:
        hook.remove()
    # Skip at H x W, gating signal (the decoder level below, before upsampling) at H/2 x W/2.
    assert [(tuple(s[-2:]), tuple(d[-2:])) for s, d in seen] == [
        ((4, 6), (2, 3)),
        ((8, 12), (4, 6)),
        ((16, 24), (8, 12)),
        ((32, 48), (16, 24)),
    ]


def test_attention_unet_without_attention_is_the_unet():
    torch.manual_seed(0)
    base = create_model("unet_small").eval()
    plain = create_model("attention_unet_s", use_attention=False).eval()
    assert plain.skip_attention is None
    assert plain.state_dict().keys() == base.state_dict().keys()
    plain.load_state_dict(base.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain(x), base(x))
    gated = create_model("attention_unet_s")
    assert {k.split(".")[0] for k in gated.state_dict().keys() - base.state_dict().keys()} == {"skip_attention"}


def test_attention_unet_rejects_bad_ratio():
    with pytest.raises(ValueError, match="inter_ratio"):
        AttentionUNet(channels=(4, 8), inter_ratio=0.0)


# ------------------------------------------------------------------------------------------------------- UNet++
def test_unetpp_deep_supervision_returns_the_top_row_in_order():
    model = create_model("unetpp_s", deep_supervision=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model(x, return_aux=True)
    assert len(out.aux_logits) == len(model.channels) - 2 == 3  # X^{0,1}, X^{0,2}, X^{0,3}; X^{0,4} is the main
    assert all(a.shape == (1, 1, 32, 32) for a in out.aux_logits)
    # Perturbing the block of X^{0,j} leaves the outputs of the earlier top-row nodes unchanged: document order.
    for j in (2, 3):
        with torch.no_grad():
            model.nested[0][j - 1][0][0].weight.add_(1.0)
            changed = model(x, return_aux=True)
        assert all(torch.equal(changed.aux_logits[k], out.aux_logits[k]) for k in range(j - 1))
        assert not torch.equal(changed.aux_logits[j - 1], out.aux_logits[j - 1])
        assert not torch.equal(changed.logits, out.logits)
        out = changed


def test_unetpp_deep_supervision_does_not_change_the_main_output():
    torch.manual_seed(0)
    plain = create_model("unetpp_s").eval()
    supervised = create_model("unetpp_s", deep_supervision=True).eval()
    assert plain.aux_heads is None and len(supervised.aux_heads) == 3
    missing, unexpected = supervised.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[0] for k in missing} == {"aux_heads"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain(x), supervised(x))
        assert plain(x, return_aux=True).aux_logits == ()


def test_unetpp_nodes_see_every_earlier_node_of_their_level():
    model = UNetPlusPlus(channels=(4, 8, 16))
    # X^{0,1}: [X^{0,0}, U(X^{1,0})]; X^{0,2}: [X^{0,0}, X^{0,1}, U(X^{1,1})]; X^{1,1}: [X^{1,0}, U(X^{2,0})].
    assert [len(level) for level in model.nested] == [2, 1]
    assert [block[0][0].in_channels for block in model.nested[0]] == [8, 12]
    assert model.nested[1][0][0][0].in_channels == 16
    assert model.stride == 4
    with pytest.raises(ValueError, match="channels"):
        UNetPlusPlus(channels=(8,))


# ----------------------------------------------------------------------------------------------------- ResUNet++
def test_resunetpp_widths_follow_the_authors_code():
    model = create_model("resunetpp", channels=(16, 32, 64, 128, 256))
    assert model.stride == 8
    assert [u.shortcut[0].out_channels for u in model.encoder] == [16, 32, 64, 128]
    assert isinstance(model.bridge, ASPP) and model.bridge.project.out_channels == 256
    # Decoder level i reads concat(upsampled deeper, skip i) and outputs channels[i + 1].
    assert [(u.shortcut[0].in_channels, u.shortcut[0].out_channels) for u in model.decoder] == [
        (256 + 64, 128),
        (128 + 32, 64),
        (64 + 16, 32),
    ]
    assert model.output_aspp.project.out_channels == 16 and model.head.in_channels == 16
    assert all(isinstance(u.se, SqueezeExcite) for u in [*model.encoder, *model.decoder])


def test_resunetpp_switches_remove_their_modules():
    full = create_model("resunetpp_s")
    bare = create_model("resunetpp_s", use_se=False, use_aspp=False, use_attention=False)
    assert not any(isinstance(m, (SqueezeExcite, ASPP, DecoderAttention)) for m in bare.modules())
    assert isinstance(bare.bridge, ResidualUnit) and bare.attention is None
    assert bare.head.in_channels == bare.channels[1]
    no_attention = create_model("resunetpp_s", use_attention=False)
    removed = {k.split(".")[0] for k in full.state_dict().keys() - no_attention.state_dict().keys()}
    assert removed == {"attention"}


def test_aspp_sums_its_dilated_branches():
    torch.manual_seed(0)
    aspp = ASPP(3, 4, dilations=(1, 2)).eval()
    assert [b[0].dilation for b in aspp.branches] == [(1, 1), (2, 2)]
    x = torch.randn(1, 3, 9, 7)
    with torch.no_grad():
        expected = aspp.project(aspp.branches[0](x) + aspp.branches[1](x))
        torch.testing.assert_close(aspp(x), expected)
    assert aspp(x).shape == (1, 4, 9, 7)
    with pytest.raises(ValueError, match="dilations"):
        ASPP(3, 4, dilations=())


def test_decoder_attention_multiplies_the_decoder_features():
    torch.manual_seed(0)
    block = DecoderAttention(encoder_channels=4, decoder_channels=6).eval()
    g, x = torch.randn(1, 4, 8, 10), torch.randn(1, 6, 4, 5)
    with torch.no_grad():
        y = block(g, x)
        mixed = block.encoder_conv(g)
        expected = block.attend(torch.nn.functional.max_pool2d(mixed, 2) + block.decoder_conv(x)) * x
    assert y.shape == x.shape
    torch.testing.assert_close(y, expected)


def test_resunetpp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="channels"):
        ResUNetPlusPlus(channels=(8, 16))
    with pytest.raises(ValueError, match="stride"):
        ResidualUnit(4, 8, stride=3)


# ------------------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("family", ["attention_unet", "unetpp", "resunetpp"])
def test_configs_load_and_name_the_right_model(family):
    paper = load_config(CONFIGS / f"{family}_paper.yaml")
    ph2 = load_config(CONFIGS / f"{family}_ph2.yaml")
    assert paper.model.name == family and ph2.model.name == f"{family}_s"
    assert ph2.data.layout == "ph2"
    for cfg in (paper, ph2):
        model = create_model(cfg.model.name, **cfg.model.kwargs).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 32, 32), return_aux=True)
        expected = 0 if cfg.loss.deep_supervision is None else len(cfg.loss.deep_supervision) - 1
        assert len(out.aux_logits) == expected


def test_paper_recipes():
    attention = load_config(CONFIGS / "attention_unet_paper.yaml")
    assert (attention.optim.name, attention.optim.lr, attention.loss.name) == ("adam", 1e-4, "dice")
    unetpp = load_config(CONFIGS / "unetpp_paper.yaml")
    assert (unetpp.optim.name, unetpp.optim.lr) == ("adam", 3e-4)
    assert unetpp.loss.kwargs == {"bce_weight": 0.5, "dice_weight": 1.0}
    assert unetpp.model.kwargs["deep_supervision"] and unetpp.loss.deep_supervision == (1.0, 1.0, 1.0, 1.0)
    resunetpp = load_config(CONFIGS / "resunetpp_paper.yaml")
    assert (resunetpp.optim.name, resunetpp.optim.lr, resunetpp.loss.name) == ("adam", 1e-5, "dice")
    assert resunetpp.data.batch_size == 16 and resunetpp.data.image_size == (256, 256)
