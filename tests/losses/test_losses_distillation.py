"""Feature-distillation loss (CM-SSM paper, eqs. 8-11): hand-checked values, switches, seeding, gradients."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from lesionseg.losses import (
    BCEDiceLoss,
    FeatureDistillationLoss,
    build_loss,
    cross_feature_distillation,
    internal_feature_distillation,
)
from lesionseg.models import ModelOutput, create_model

TARGET = (torch.arange(16.0).reshape(1, 1, 4, 4) % 3 == 0).float()


def _output(features: dict[str, torch.Tensor], logits: torch.Tensor | None = None) -> ModelOutput:
    return ModelOutput(logits=torch.zeros(1, 1, 4, 4) if logits is None else logits, features=features)


def test_identical_features_give_zero():
    # every channel the same map, every block the teacher pooled: any channel choice and any split agree
    teacher = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(1, 2, 1, 1)
    block = torch.nn.functional.avg_pool2d(teacher[:, :1], 2).repeat(1, 4, 1, 1)  # 4 channels at half the size
    assert cross_feature_distillation([teacher.clone(), block], teacher).item() == 0.0
    assert internal_feature_distillation([teacher, block]).item() == 0.0
    loss = FeatureDistillationLoss(bce_weight=0.0, dice_weight=0.0)
    assert loss(_output({"a": block, "b": teacher.clone(), "teacher": teacher}), TARGET).item() == 0.0


def test_known_values():
    teacher = torch.full((1, 2, 4, 4), 3.0)
    block = torch.full((1, 8, 2, 2), 1.0)
    assert cross_feature_distillation([block], teacher).item() == pytest.approx(4.0)  # (1 - 3)^2
    # two blocks: mean of (1 - 3)^2 and (5 - 3)^2
    assert cross_feature_distillation([block, block + 4], teacher).item() == pytest.approx(4.0)
    # ranked by mean normalised response: ones (1/4), ones on half the pixels (1/(2 sqrt 8)), minus ones (-1/4, the odd
    # channel out, dropped); MSE(ones, half ones) = 1/2
    half = torch.cat([torch.ones(2, 4), torch.zeros(2, 4)])
    three = torch.stack([-torch.ones(4, 4), half, torch.ones(4, 4)]).unsqueeze(0)
    assert internal_feature_distillation([three]).item() == pytest.approx(0.5)
    two = torch.stack([-torch.ones(4, 4), torch.ones(4, 4)]).unsqueeze(0)
    assert internal_feature_distillation([two]).item() == pytest.approx(4.0)  # (1 - (-1))^2


def test_total_is_weighted_sum_of_terms():
    torch.manual_seed(0)
    feats = {"e": torch.randn(1, 4, 2, 2), "d": torch.randn(1, 2, 4, 4)}
    logits = torch.randn(1, 1, 4, 4)
    loss = FeatureDistillationLoss()
    torch.manual_seed(1)
    terms = loss.terms(_output(feats, logits), TARGET)
    torch.manual_seed(1)
    total = loss(_output(feats, logits), TARGET)
    expected = 0.015 * terms["cfd"] + 0.015 * terms["ifd"] + 0.3 * terms["bce"] + 0.7 * terms["dice"]
    assert total.item() == pytest.approx(expected.item())
    assert terms["bce"].item() == pytest.approx(BCEDiceLoss(1.0, 0.0)(logits, TARGET).item())


@pytest.mark.parametrize(("kwargs", "absent"), [({"cross_weight": 0.0}, "cfd"), ({"internal_weight": 0.0}, "ifd")])
def test_zero_weight_switches_a_term_off(kwargs, absent):
    feats = {"e": torch.randn(1, 4, 2, 2), "d": torch.randn(1, 2, 4, 4)}
    terms = FeatureDistillationLoss(**kwargs).terms(_output(feats), TARGET)
    assert absent not in terms and {"bce", "dice"} <= set(terms)


def test_no_distillation_equals_bce_dice_and_needs_no_features():
    logits = torch.randn(1, 1, 4, 4)
    loss = FeatureDistillationLoss(cross_weight=0.0, internal_weight=0.0)
    assert loss(_output({}, logits), TARGET).item() == pytest.approx(BCEDiceLoss(0.3, 0.7)(logits, TARGET).item())
    with pytest.raises(ValueError, match="feature maps"):
        FeatureDistillationLoss()(_output({}, logits), TARGET)


def test_channel_selection_uses_torch_rng_only():
    feats = [torch.randn(2, 8, 4, 4)]
    teacher = torch.randn(2, 2, 4, 4)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    torch.manual_seed(3)
    a = cross_feature_distillation(feats, teacher)
    torch.manual_seed(3)
    b = cross_feature_distillation(feats, teacher)
    c = cross_feature_distillation(feats, teacher, generator=torch.Generator().manual_seed(3))
    assert a.item() == b.item() == c.item()
    draws = {cross_feature_distillation(feats, teacher).item() for _ in range(8)}
    assert len(draws) > 1  # a new selection at every call
    assert (np.random.get_state()[1] == np_state).all() and random.getstate() == py_state


def test_gradients_match_the_hand_computation():
    """d/dF of 0.5 CFD + 0.25 IFD + BCE, worked out by hand, for a block whose channel order is fixed by its values and
    a teacher whose two channels are the same map (so the random channel choice cannot matter)."""
    strong = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # positive mean normalised response: ranked first
    weak = torch.tensor([[-1.0, 0.0], [0.0, -2.0]])
    block = torch.stack([weak, strong]).unsqueeze(0).requires_grad_(True)  # stored weak first: the ranking must swap
    t_map = torch.arange(16.0).reshape(4, 4)
    teacher = torch.stack([t_map, t_map]).unsqueeze(0).requires_grad_(True)
    logits = torch.linspace(-2, 2, 16).reshape(1, 1, 4, 4).requires_grad_(True)
    loss = FeatureDistillationLoss(cross_weight=0.5, internal_weight=0.25, bce_weight=1.0, dice_weight=0.0)
    total = loss(_output({"e": block, "d": teacher}, logits), TARGET)
    total.backward()
    pooled = t_map.reshape(2, 2, 2, 2).mean(dim=(1, 3))  # 2x2 block means: [[2.5, 4.5], [10.5, 12.5]]
    cfd = ((block.detach() - pooled) ** 2).mean()
    ifd = ((strong - weak) ** 2).mean()
    p = torch.sigmoid(logits.detach())
    bce = -(TARGET * p.log() + (1 - TARGET) * (1 - p).log()).mean()
    assert total.item() == pytest.approx((0.5 * cfd + 0.25 * ifd + bce).item(), rel=1e-6)
    grad = 0.5 * 2 * (block.detach() - pooled) / 8  # CFD: mean over 2 x 2 x 2 values
    grad[0, 1] += 0.25 * 2 * (strong - weak) / 4  # IFD: mean over the 4 values of a half
    grad[0, 0] -= 0.25 * 2 * (strong - weak) / 4
    torch.testing.assert_close(block.grad, grad)
    torch.testing.assert_close(logits.grad, (p - TARGET) / 16)
    assert teacher.grad is None  # detached in CFD, excluded from IFD (the paper's block lists)


def test_registered_and_invalid_weights():
    loss = build_loss("fd_bce_dice", cross_weight=0.0)
    assert isinstance(loss, FeatureDistillationLoss) and loss.takes_model_output
    with pytest.raises(ValueError, match="internal_weight"):
        FeatureDistillationLoss(internal_weight=-1.0)
    with pytest.raises(ValueError, match="cross_weight"):
        FeatureDistillationLoss(cross_weight=math.nan)


def test_with_model_features():
    torch.manual_seed(0)
    model = create_model("cmssm_unet_s")
    target = (torch.rand(1, 1, 64, 64) > 0.5).float()
    loss = build_loss("fd_bce_dice")(model(torch.randn(1, 3, 64, 64), return_aux=True), target)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.encoder[0].blocks[0].ss2d.in_proj.weight.grad.abs().sum() > 0
