"""Focal, Tversky (and focal Tversky) and Lovasz hinge losses against values worked out by hand, plus gradients."""

from __future__ import annotations

import math

import pytest
import torch

from lesionseg.losses import (
    FocalLoss,
    FocalTverskyLoss,
    LovaszHingeLoss,
    TverskyLoss,
    bce_loss,
    build_loss,
    focal_loss,
    lovasz_hinge_loss,
    soft_dice_loss,
    tversky_loss,
)

LN3 = math.log(3.0)

# Four pixels, probabilities sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4.
FOCAL_LOGITS = torch.tensor([[[[0.0, LN3], [-LN3, 0.0]]]])
FOCAL_TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])


def test_focal_by_hand() -> None:
    # p_t (probability of the true class) per pixel: 1/2, 3/4, 3/4, 1/2; cross-entropy -ln p_t: ln 2, ln 4/3, ln 4/3,
    # ln 2; modulating factor (1 - p_t)^2: 1/4, 1/16, 1/16, 1/4.
    # mean = (2 * ln2 / 4 + 2 * ln(4/3) / 16) / 4 = ln2 / 8 + ln(4/3) / 32
    expected = math.log(2) / 8 + math.log(4 / 3) / 32
    assert focal_loss(FOCAL_LOGITS, FOCAL_TARGET).item() == pytest.approx(expected, rel=1e-6)
    # alpha = 0.25: positives (pixels 1, 2) x 0.25, negatives (3, 4) x 0.75:
    # (0.25 ln2/4 + 0.25 ln(4/3)/16 + 0.75 ln(4/3)/16 + 0.75 ln2/4) / 4 = ln2/16 + ln(4/3)/64
    expected_alpha = math.log(2) / 16 + math.log(4 / 3) / 64
    assert FocalLoss(alpha=0.25)(FOCAL_LOGITS, FOCAL_TARGET).item() == pytest.approx(expected_alpha, rel=1e-6)
    # gamma = 1: factors 1/2, 1/4, 1/4, 1/2 -> (ln2 + ln(4/3)/2) / 4
    assert FocalLoss(gamma=1.0)(FOCAL_LOGITS, FOCAL_TARGET).item() == pytest.approx(
        (math.log(2) + math.log(4 / 3) / 2) / 4, rel=1e-6
    )


def test_focal_gamma_zero_is_bce() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 5, 6, generator=gen) * 3
    target = (torch.rand(2, 1, 5, 6, generator=gen) > 0.6).float()
    assert focal_loss(logits, target, gamma=0.0).item() == pytest.approx(bce_loss(logits, target).item(), rel=1e-6)


# Tversky: logits ln3, -ln3, 0, -ln3 -> p = 3/4, 1/4, 1/2, 1/4; target 1, 1, 0, 0.
# TP = 3/4 + 1/4 = 1; FP = 1/2 + 1/4 = 3/4; FN = 1/4 + 3/4 = 1.
TV_LOGITS = torch.tensor([[[[LN3, -LN3], [0.0, -LN3]]]])
TV_TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])


def test_tversky_by_hand() -> None:
    # alpha 0.3, beta 0.7, smooth 0: TI = 1 / (1 + 0.3 * 0.75 + 0.7 * 1) = 1 / 1.925; loss = 0.925 / 1.925
    assert tversky_loss(TV_LOGITS, TV_TARGET, 0.3, 0.7, smooth=0.0).item() == pytest.approx(0.925 / 1.925, rel=1e-6)
    # smooth 1: TI = (1 + 1) / (1 + 0.225 + 0.7 + 1) = 2 / 2.925; loss = 0.925 / 2.925
    assert TverskyLoss(0.3, 0.7)(TV_LOGITS, TV_TARGET).item() == pytest.approx(0.925 / 2.925, rel=1e-6)
    # focal Tversky, defaults alpha 0.3, beta 0.7, gamma 0.75, smooth 1: (0.925 / 2.925) ** 0.75
    assert FocalTverskyLoss()(TV_LOGITS, TV_TARGET).item() == pytest.approx((0.925 / 2.925) ** 0.75, rel=1e-6)
    # beta > alpha punishes the missed lesion more than alpha > beta: FN (1) > FP (3/4) here
    assert tversky_loss(TV_LOGITS, TV_TARGET, 0.3, 0.7) > tversky_loss(TV_LOGITS, TV_TARGET, 0.7, 0.3)


def test_tversky_half_half_is_dice() -> None:
    # alpha = beta = 1/2: TP / (TP + (FP + FN) / 2) = 2 TP / (2 TP + FP + FN), the Dice ratio (without smoothing)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 4, 4, generator=gen)
    target = (torch.rand(3, 1, 4, 4, generator=gen) > 0.5).float()
    for per_image in (True, False):
        assert tversky_loss(logits, target, smooth=0.0, per_image=per_image).item() == pytest.approx(
            soft_dice_loss(logits, target, smooth=0.0, per_image=per_image).item(), rel=1e-6
        )


def test_tversky_perfect_and_empty() -> None:
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    confident = (target * 2 - 1) * 50
    assert tversky_loss(confident, target).item() == pytest.approx(0.0, abs=1e-6)
    # an empty prediction on an empty target scores 0 thanks to the smoothing, for every gamma
    assert FocalTverskyLoss()(torch.full((1, 1, 2, 2), -50.0), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(0.0)


# Lovasz hinge: logits 2, -1, 0.5, -3; target 1, 1, 0, 0; signs +1, +1, -1, -1.
# hinge errors 1 - logit * sign: -1, 2, 1.5, -2. Sorted descending: 2 (lesion), 1.5 (bg), -1 (lesion), -2 (bg).
# With P = 2 lesion pixels, the Jaccard loss after marking the first k sorted pixels wrong is
# 1 - (P - lesions among them) / (P + background among them): k=1: 1 - 1/2 = 1/2; k=2: 1 - 1/3 = 2/3; k=3: 1; k=4: 1.
# Weights (increments): 1/2, 1/6, 1/3, 0. Loss = 2 * 1/2 + 1.5 * 1/6 + 0 + 0 = 1.25.
LV_LOGITS = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
LV_TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])


def test_lovasz_by_hand() -> None:
    logits = LV_LOGITS.clone().requires_grad_(True)
    loss = lovasz_hinge_loss(logits, LV_TARGET)
    assert loss.item() == pytest.approx(1.25, rel=1e-6)
    loss.backward()
    # d loss / d logit = weight * d error / d logit = weight * (-sign) for the pixels with a positive error:
    # pixel 2 (lesion, weight 1/2): -1/2; pixel 3 (background, weight 1/6): +1/6; the others 0.
    assert logits.grad is not None
    assert logits.grad.flatten().tolist() == pytest.approx([0.0, -0.5, 1 / 6, 0.0], abs=1e-6)


def test_lovasz_per_image_and_empty_image() -> None:
    # a second image without lesion: every mistake makes its Jaccard loss 1, so its loss is its largest hinge error,
    # here 1 - (-1) * 0.5 = 1.5 for the logit 0.5 (and 1 - 2 = -1 -> 0 for the others)
    empty_logits = torch.tensor([[[[0.5, -2.0], [-3.0, -4.0]]]])
    logits = torch.cat((LV_LOGITS, empty_logits))
    target = torch.cat((LV_TARGET, torch.zeros(1, 1, 2, 2)))
    assert lovasz_hinge_loss(logits, target).item() == pytest.approx((1.25 + 1.5) / 2, rel=1e-6)
    assert LovaszHingeLoss(per_image=False)(logits, target).item() == pytest.approx(
        lovasz_hinge_loss(logits.reshape(1, 1, 4, 2), target.reshape(1, 1, 4, 2)).item(), rel=1e-6
    )
    # all pixels right with margin >= 1: zero loss
    assert lovasz_hinge_loss(LV_TARGET * 4 - 2, LV_TARGET).item() == 0.0


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, t: focal_loss(x, t, gamma=2.0, alpha=0.25),
        lambda x, t: focal_loss(x, t, gamma=0.5),
        lambda x, t: tversky_loss(x, t, 0.3, 0.7),
        lambda x, t: tversky_loss(x, t, 0.3, 0.7, gamma=0.75, per_image=False),
        lovasz_hinge_loss,
    ],
    ids=["focal", "focal_gamma_half", "tversky", "focal_tversky_global", "lovasz_hinge"],
)
def test_gradcheck(fn) -> None:
    gen = torch.Generator().manual_seed(3)
    # distinct values far from the Lovasz hinge's kinks (ties in the sort order, errors of exactly 0)
    logits = (torch.randperm(2 * 3 * 4, generator=gen).double().reshape(2, 1, 3, 4) / 7 - 1.6).requires_grad_(True)
    target = (torch.rand(2, 1, 3, 4, generator=gen) > 0.5).double()
    assert torch.autograd.gradcheck(lambda x: fn(x, target), (logits,), eps=1e-6, atol=1e-5)


def test_half_precision_inputs_give_float32() -> None:
    logits = FOCAL_LOGITS.to(torch.bfloat16)
    for fn in (focal_loss, tversky_loss, lovasz_hinge_loss):
        assert fn(logits, FOCAL_TARGET).dtype == torch.float32


def test_registry_builds_them() -> None:
    assert isinstance(build_loss("focal", gamma=1.0, alpha=0.5), FocalLoss)
    assert isinstance(build_loss("tversky", alpha=0.3, beta=0.7), TverskyLoss)
    assert isinstance(build_loss("focal_tversky"), FocalTverskyLoss)
    assert isinstance(build_loss("lovasz_hinge", per_image=False), LovaszHingeLoss)
    assert build_loss("focal_tversky")(TV_LOGITS, TV_TARGET).item() == pytest.approx((0.925 / 2.925) ** 0.75, rel=1e-6)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="beta"):
        TverskyLoss(beta=-0.1)
    with pytest.raises(ValueError, match="gamma must be positive"):
        TverskyLoss(gamma=0.0)
    with pytest.raises(ValueError, match="cannot all be 0"):
        tversky_loss(TV_LOGITS, TV_TARGET, 0.0, 0.0, smooth=0.0)
    with pytest.raises(ValueError, match="does not match"):
        lovasz_hinge_loss(TV_LOGITS, TV_TARGET[..., :1])
