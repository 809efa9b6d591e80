"""LV-UNet, UTNetV2, TransFuse, MedMamba, HC-Mamba and MaskFormer: published sizes, blocks, side outputs, configs.

The shared tester (``test_models_registry.py``) covers their CPU sizes: shapes, gradients to every parameter,
rectangular grayscale multi-class inputs, sizes off the stride, ``return_aux`` and ``predict``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from model_checks import params_without_grad

from lesionseg.engine import load_config
from lesionseg.models import create_model
from lesionseg.models.blocks import channel_shuffle
from lesionseg.models.complexity import count_parameters
from lesionseg.models.hcmamba import HCSSM, HCMamba
from lesionseg.models.lv_unet import FusibleBlock, LVUNet
from lesionseg.models.maskformer import MaskFormer, foreground_logits
from lesionseg.models.medmamba import MedMambaUNet, SSConvSSM
from lesionseg.models.transfuse import TransFuse
from lesionseg.models.utnetv2 import BidirectionAttention, UTNetV2

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NEW_CPU_MODELS = ("lv_unet", "medmamba_s", "hcmamba_s", "transfuse_s", "utnetv2_s", "maskformer_s")


@pytest.mark.parametrize(
    ("name", "kwargs", "published"),
    [
        ("transfuse", {}, 26_300_000),  # TransFuse-S, the paper's table
        ("maskformer", {"num_classes": 150}, 41_000_000),  # MaskFormer-R50 on ADE20K, the paper's table
    ],
)
def test_parameter_counts_match_the_papers(name, kwargs, published):
    assert abs(count_parameters(create_model(name, **kwargs)) - published) / published < 0.05


def test_channel_shuffle_interleaves_the_halves():
    x = torch.arange(6.0).reshape(1, 1, 1, 6)
    assert channel_shuffle(x, 2).flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    with pytest.raises(ValueError, match="divisible"):
        channel_shuffle(torch.zeros(1, 1, 1, 5), 2)


@pytest.mark.parametrize("block", [SSConvSSM, HCSSM])
def test_split_blocks_keep_shape_and_are_residual(block):
    torch.manual_seed(0)
    b = block(8, d_state=2).eval()
    x = torch.randn(2, 5, 6, 8)
    out = b(x)
    assert out.shape == x.shape
    # the SSM half's output projection at zero leaves only the conv half (shuffled) on top of the input
    with torch.no_grad():
        b.ssm.out_proj.weight.zero_()
        left = b.conv_branch(x[..., :4].permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        expected = channel_shuffle(torch.cat([left, torch.zeros_like(left)], dim=-1), 2) + x
        torch.testing.assert_close(b(x), expected)


def test_hcssm_dilations_are_the_hybrid_schedule():
    dilations = [m.dilation[0] for m in HCSSM(8).conv_branch if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert dilations == [1, 2, 3]


def test_lv_unet_block_is_linear_before_its_pool_when_fusible():
    torch.manual_seed(0)
    block = FusibleBlock(4, 6, scale=1).eval()
    block.act_learn = 1.0

    def pre(x):
        return block.conv2(F.leaky_relu(block.conv1(x), block.act_learn))

    x, zero = torch.randn(1, 4, 3, 3), torch.zeros(1, 4, 3, 3)
    torch.testing.assert_close(pre(2 * x) - pre(zero), 2 * (pre(x) - pre(zero)))


def test_lv_unet_act_learn_is_validated_and_applied():
    model = LVUNet(act_learn=0.5)
    assert {m.act_learn for m in model.modules() if isinstance(m, FusibleBlock)} == {0.5}
    with pytest.raises(ValueError, match="act_learn"):
        model.set_act_learn(1.5)


def test_transfuse_side_outputs_and_their_gradients():
    torch.manual_seed(0)
    model = create_model("transfuse_s", deep_supervision=True).train()
    out = model(torch.randn(2, 3, 64, 96), return_aux=True)
    assert out.logits.shape == (2, 1, 64, 96)
    assert [a.shape for a in out.aux_logits] == [(2, 1, 64, 96)] * 2
    (out.logits.square().mean() + sum(a.square().mean() for a in out.aux_logits)).backward()
    assert not params_without_grad(model)
    assert create_model("transfuse_s").side_heads is None


def test_bidirectional_attention_shares_its_logits():
    torch.manual_seed(0)
    attn = BidirectionAttention(8, 6, 8, heads=2, dim_head=4).eval()
    feat, smap = torch.randn(1, 8, 4, 5), torch.randn(1, 6, 2, 2)
    with torch.no_grad():
        feat_out, map_out = attn(feat, smap)
        fq, fv = attn._tokens(attn.feat_qv(feat))
        mq, mv = attn._tokens(attn.map_qv(smap))
        logits = fq @ mq.transpose(-1, -2) / 2.0  # (1, heads, 20, 4), scale 1/sqrt(4)
        feat_ref = (logits.softmax(-1) @ mv).transpose(-1, -2).reshape(1, 8, 4, 5)
        map_ref = (logits.softmax(-2).transpose(-1, -2) @ fv).transpose(-1, -2).reshape(1, 8, 2, 2)
    torch.testing.assert_close(feat_out, attn.feat_out(feat_ref))
    torch.testing.assert_close(map_out, attn.map_out(map_ref))


def test_utnetv2_last_attention_block_does_not_update_the_map():
    model = create_model("utnetv2_s")
    assert model.up[1].trans_blocks[-1].attn.map_out is None
    assert model.up[0].trans_blocks[-1].attn.map_out is not None


@pytest.mark.parametrize("num_classes", [1, 2])
def test_maskformer_foreground_logits_are_the_union_probability(num_classes):
    torch.manual_seed(0)
    class_logits, mask_logits = torch.randn(2, 5, num_classes + 1), torch.randn(2, 5, 3, 4)
    p = class_logits.softmax(-1)[..., :num_classes]  # (N, Q, K)
    claim = p[..., None, None] * torch.sigmoid(mask_logits)[:, :, None]  # (N, Q, K, H, W)
    union = 1 - (1 - claim).prod(dim=1)
    torch.testing.assert_close(torch.sigmoid(foreground_logits(class_logits, mask_logits)), union)


def test_maskformer_starts_near_an_undecided_map():
    torch.manual_seed(0)
    with torch.no_grad():
        prob = torch.sigmoid(create_model("maskformer_s").eval()(torch.randn(1, 3, 64, 64)))
    assert 0.2 < prob.mean().item() < 0.6


def test_maskformer_gives_query_outputs():
    model = create_model("maskformer_s").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), return_aux=True)
    assert out.features["query_class_logits"].shape == (1, 16, 2)
    assert out.features["query_mask_logits"].shape == (1, 16, 16, 16)


@pytest.mark.parametrize(
    ("cls", "bad"),
    [
        (LVUNet, {"channels": (80,)}),
        (MedMambaUNet, {"channels": (18, 36, 70, 144)}),
        (HCMamba, {"dilations": ()}),
        (TransFuse, {"embed_dim": 100, "heads": 3}),
        (UTNetV2, {"trans_num": (1, 1, 2, 2, 2, 1, 0, 0)}),
        (MaskFormer, {"hidden_dim": 30}),
    ],
)
def test_invalid_arguments_raise(cls, bad):
    with pytest.raises(ValueError):
        cls(**bad)


@pytest.mark.parametrize("name", NEW_CPU_MODELS)
def test_ph2_configs_load(name):
    stem = name.removesuffix("_s")
    cfg = load_config(CONFIGS / f"{stem}_ph2.yaml")
    assert cfg.model.name == name
    model = create_model(cfg.model.name, **cfg.model.kwargs)
    if name == "transfuse_s":
        assert cfg.loss.deep_supervision == (0.5, 0.3, 0.2) and model.side_heads is not None


def test_benchmark_configs_list_the_six():
    from lesionseg.benchmark import load_benchmark_config

    for bench in ("ph2",):
        cfg = load_benchmark_config(CONFIGS / "benchmark" / f"{bench}.yaml")
        names = {load_config(CONFIGS.parent / m.config).model.name for m in cfg.models}
        assert set(NEW_CPU_MODELS) <= names


@pytest.mark.heavy
@pytest.mark.parametrize("name", NEW_CPU_MODELS)
def test_ph2_recipe_trains_and_reloads(name, blob_root, blob_split, tmp_path):
    """One epoch of each PH2 recipe (data swapped for synthetic blobs); the best checkpoint reloads (about 3 s each)."""
    from lesionseg.engine import Trainer, load_model

    stem = name.removesuffix("_s")
    size = 128 if name == "lv_unet" else 64  # LV-UNet halves seven times
    overrides = [
        "data.layout=folder",
        f"data.root={blob_root}",
        f"data.split={blob_split}",
        f"data.image_size=[{size},{size}]",
        "data.batch_size=4",
        "train.epochs=1",
        "train.time_budget_min=null",
        "train.threads=1",
        f"train.out_dir={tmp_path / 'runs'}",
        "train.name=run",
    ]
    cfg = load_config(CONFIGS / f"{stem}_ph2.yaml", overrides)
    summary = Trainer(cfg, progress=False).fit()
    assert summary["epochs"] == 1
    model, record = load_model(tmp_path / "runs" / "run" / "best")
    assert record.model == name
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert model(x).shape == (1, 1, size, size)
