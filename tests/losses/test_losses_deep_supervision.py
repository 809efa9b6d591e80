from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lesionseg.losses import BCELoss, DeepSupervisionLoss, DiceLoss


def perfect_logits(target: torch.Tensor) -> torch.Tensor:
    return 50.0 * (2 * target - 1)


def test_lower_resolution_aux_is_upsampled() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    main = perfect_logits(target)
    # Constant zero logits stay zero after bilinear upsampling, so each aux BCE is exactly ln 2.
    aux = [torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 2, 2)]
    loss = DeepSupervisionLoss(BCELoss(), weights=[1.0, 0.5, 0.25])
    assert loss(main, aux, target).item() == pytest.approx((0.5 + 0.25) * math.log(2), abs=1e-6)


def test_matches_explicit_bilinear_upsampling() -> None:
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(1, 1, 8, 8, generator=gen) > 0.5).float()
    main = torch.randn(1, 1, 8, 8, generator=gen)
    aux = torch.randn(1, 1, 4, 4, generator=gen)
    base = DiceLoss()
    up = F.interpolate(aux, size=(8, 8), mode="bilinear", align_corners=False)
    expected = 0.6 * base(main, target) + 0.4 * base(up, target)
    assert DeepSupervisionLoss(base, [0.6, 0.4])(main, [aux], target).item() == pytest.approx(expected.item())


def test_gradients_reach_aux_logits() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., :4, :] = 1
    main = torch.zeros(1, 1, 8, 8, requires_grad=True)
    aux = torch.zeros(1, 1, 4, 4, requires_grad=True)
    DeepSupervisionLoss(BCELoss(), [1.0, 1.0])(main, [aux], target).backward()
    assert main.grad is not None and aux.grad is not None
    assert aux.grad.abs().sum() > 0


def test_count_mismatch_and_bad_weights() -> None:
    target = torch.zeros(1, 1, 4, 4)
    loss = DeepSupervisionLoss(BCELoss(), [1.0, 0.5])
    with pytest.raises(ValueError, match="2 weights"):
        loss(target, [], target)
    with pytest.raises(ValueError, match="aux_logits\\[0\\]"):
        loss(target, [torch.zeros(1, 2, 2, 2)], target)
    with pytest.raises(ValueError, match="empty"):
        DeepSupervisionLoss(BCELoss(), [])
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        DeepSupervisionLoss(BCELoss(), [1.0, -0.5])
