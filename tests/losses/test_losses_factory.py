from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lesionseg.losses import BCEDiceLoss, BCELoss, DiceLoss, available_losses, build_loss, factory, register_loss


def test_builtin_names() -> None:
    assert {"bce", "dice", "bce_dice"} <= set(available_losses())
    assert isinstance(build_loss("bce"), BCELoss)
    assert isinstance(build_loss("dice", smooth=0.0), DiceLoss)
    loss = build_loss("bce_dice", bce_weight=0.3, dice_weight=0.7)
    assert isinstance(loss, BCEDiceLoss) and loss.weights == (0.3, 0.7)
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert loss(logits, target).item() == pytest.approx(0.3 * math.log(2) + 0.7 * 0.5)


def test_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError, match="unknown loss 'no_such_loss'.*bce, bce_dice, dice"):
        build_loss("no_such_loss")


def test_bad_kwargs_raise_value_error() -> None:
    with pytest.raises(ValueError, match="weight_bce"):
        build_loss("bce_dice", weight_bce=0.5)


def test_register_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "LOSSES", factory.LOSSES.copy())

    @register_loss("zero")
    class ZeroLoss(nn.Module):
        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return logits.sum() * 0

    assert isinstance(build_loss("zero"), ZeroLoss)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("bce")
