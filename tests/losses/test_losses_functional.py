from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lesionseg.losses import bce_loss, soft_dice_loss

# Tiny 2x2 example: logits 0 -> p = 0.5 everywhere; target has one lesion pixel.
# sum(p t) = 0.5, sum(p) = 2, sum(t) = 1.
LOGITS = torch.zeros(1, 1, 2, 2)
TARGET = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])


def test_soft_dice_hand_value() -> None:
    # smooth=1: 1 - (2*0.5 + 1) / (2 + 1 + 1) = 1 - 2/4 = 1/2
    assert soft_dice_loss(LOGITS, TARGET).item() == pytest.approx(0.5)
    # smooth=0: 1 - 1/3 = 2/3
    assert soft_dice_loss(LOGITS, TARGET, smooth=0.0).item() == pytest.approx(2 / 3)


def test_soft_dice_perfect_prediction_is_zero() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:5] = 1  # image 1 stays empty: the smooth term must make it perfect as well
    logits = 50.0 * (2 * target - 1)
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(logits, target, per_image=False).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_per_image_vs_global() -> None:
    # Image 0: the tiny example, dice 2*0.5 / (2 + 1) = 1/3 with smooth 0. Image 1: p = 0.5 on an all-lesion
    # target: 2*2 / (2 + 4) = 2/3. Per image: 1 - (1/3 + 2/3)/2 = 1/2. Global: 2*(0.5+2) / (4 + 5) = 5/9 -> 4/9.
    logits = torch.zeros(2, 1, 2, 2)
    target = torch.cat([TARGET, torch.ones(1, 1, 2, 2)])
    assert soft_dice_loss(logits, target, smooth=0.0, per_image=True).item() == pytest.approx(1 / 2)
    assert soft_dice_loss(logits, target, smooth=0.0, per_image=False).item() == pytest.approx(4 / 9)


def test_bce_matches_torch_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(2, 1, 6, 6, generator=gen)
    target = (torch.rand(2, 1, 6, 6, generator=gen) > 0.5).float()
    expected = F.binary_cross_entropy_with_logits(logits, target)
    assert bce_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    weighted = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(3.0))
    assert bce_loss(logits, target, pos_weight=3.0).item() == pytest.approx(weighted.item(), rel=1e-6)
    assert bce_loss(LOGITS, TARGET).item() == pytest.approx(math.log(2))


def test_half_precision_logits_give_float32_loss() -> None:
    logits = torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16)
    assert soft_dice_loss(logits, TARGET).dtype == torch.float32
    assert bce_loss(logits, TARGET).dtype == torch.float32


def test_gradients_flow() -> None:
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    (soft_dice_loss(logits, TARGET) + bce_loss(logits, TARGET)).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # The lesion pixel must be pushed up and background pixels down.
    assert logits.grad[0, 0, 0, 0] < 0 and (logits.grad.flatten()[1:] > 0).all()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="does not match"):
        soft_dice_loss(LOGITS, TARGET[0])
    with pytest.raises(ValueError, match="smooth"):
        soft_dice_loss(LOGITS, TARGET, smooth=-1.0)
    with pytest.raises(ValueError, match="pos_weight"):
        bce_loss(LOGITS, TARGET, pos_weight=0.0)
