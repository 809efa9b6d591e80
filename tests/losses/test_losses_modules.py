from __future__ import annotations

import math

import pytest
import torch

from lesionseg.losses import BCEDiceLoss, BCELoss, CompoundLoss, DiceLoss, bce_loss, soft_dice_loss

LOGITS = torch.zeros(1, 1, 2, 2)
TARGET = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # BCE = ln 2, Dice loss (smooth 1) = 1/2


def test_modules_wrap_functional() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 5, 5, generator=gen)
    target = (torch.rand(2, 1, 5, 5, generator=gen) > 0.5).float()
    assert DiceLoss(smooth=0.5, per_image=False)(logits, target).item() == pytest.approx(
        soft_dice_loss(logits, target, smooth=0.5, per_image=False).item()
    )
    assert BCELoss(pos_weight=2.0)(logits, target).item() == pytest.approx(
        bce_loss(logits, target, pos_weight=2.0).item()
    )
    assert "pos_weight" in dict(BCELoss(pos_weight=2.0).named_buffers())


def test_compound_weights() -> None:
    loss = CompoundLoss([(BCELoss(), 0.3), (DiceLoss(), 0.7)])
    assert loss(LOGITS, TARGET).item() == pytest.approx(0.3 * math.log(2) + 0.7 * 0.5)
    assert [v.item() for v in loss.components(LOGITS, TARGET)] == pytest.approx([math.log(2), 0.5])
    assert BCEDiceLoss()(LOGITS, TARGET).item() == pytest.approx(0.5 * math.log(2) + 0.25)
    assert BCEDiceLoss(bce_weight=1.0, dice_weight=0.0)(LOGITS, TARGET).item() == pytest.approx(math.log(2))


def test_compound_gradients_flow() -> None:
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    target = (torch.rand(2, 1, 4, 4) > 0.5).float()
    BCEDiceLoss()(logits, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        CompoundLoss([])
    with pytest.raises(ValueError, match=r"terms\[0\] weight"):
        CompoundLoss([(BCELoss(), -1.0)])
    with pytest.raises(ValueError, match="nn.Module"):
        CompoundLoss([(lambda x, y: x, 1.0)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="dice_weight"):
        BCEDiceLoss(dice_weight=float("nan"))
    with pytest.raises(ValueError, match="smooth"):
        DiceLoss(smooth=-0.1)
    with pytest.raises(ValueError, match="pos_weight"):
        BCELoss(pos_weight=-2.0)
