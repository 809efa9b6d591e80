"""Edge (boundary) loss and the joint BCE + Dice + edge loss, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lesionseg.losses import (
    BCEDiceEdgeLoss,
    BCEDiceLoss,
    EdgeLoss,
    available_losses,
    build_loss,
    edge_dice_loss,
    soft_boundary,
)

BIG = 30.0  # sigmoid(30) = 1 - 9e-14: hard predictions


def square(size: int = 10, top: int = 3, left: int = 3, side: int = 4) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., top : top + side, left : left + side] = 1.0
    return mask


def hard_logits(mask: torch.Tensor) -> torch.Tensor:
    return (2 * mask - 1) * BIG


def test_boundary_of_a_square_is_the_inner_and_outer_ring():
    edge = soft_boundary(square())[0, 0]
    # 3x3 dilation: the 6x6 block at rows/cols 2..7; 3x3 erosion: the 2x2 core at 4..5. Band = 36 - 4 = 32 = 8 * side.
    expected = torch.zeros(10, 10)
    expected[2:8, 2:8] = 1.0
    expected[4:6, 4:6] = 0.0
    assert torch.equal(edge, expected)


def test_wider_kernel_gives_a_wider_band():
    # 5x5: dilation is the 8x8 block at 1..8, erosion of a 4x4 square is empty, so the band is all 64 pixels.
    edge = soft_boundary(square(size=12, top=3, left=3), kernel_size=5)[0, 0]
    expected = torch.zeros(12, 12)
    expected[1:9, 1:9] = 1.0
    assert torch.equal(edge, expected)


def test_image_border_and_constant_maps_have_no_boundary():
    assert soft_boundary(torch.ones(1, 1, 6, 6)).sum() == 0
    assert soft_boundary(torch.full((1, 1, 6, 6), 0.5)).sum() == 0


def test_perfect_prediction_scores_zero():
    target = square()
    assert edge_dice_loss(hard_logits(target), target).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("logit", [-BIG, 0.0])
def test_prediction_without_edges_scores_32_over_33(logit):
    # No predicted boundary: Dice = smooth / (32 + smooth) with smooth 1, loss = 32/33 (all-background or constant 0.5).
    target = square()
    loss = edge_dice_loss(torch.full_like(target, logit), target)
    assert loss.item() == pytest.approx(32 / 33, abs=1e-6)


def test_square_shifted_by_one_pixel():
    # Predicted square one column to the right: both bands have 32 pixels; they share the 6x5 block at rows 2..7,
    # cols 3..7 minus the union of the two cores (rows 4..5, cols 4..6: 6 pixels) = 24. Loss = 1 - 49/65 = 16/65.
    target = square()
    pred = square(left=4)
    assert edge_dice_loss(hard_logits(pred), target).item() == pytest.approx(16 / 65, abs=1e-6)


def test_empty_target_and_empty_prediction_score_zero():
    target = torch.zeros(1, 1, 8, 8)
    assert edge_dice_loss(torch.full_like(target, -BIG), target).item() == pytest.approx(0.0, abs=1e-6)


def test_per_image_and_global_reductions():
    target = torch.cat([square(), square()])
    logits = torch.cat([hard_logits(square()), torch.full((1, 1, 10, 10), -BIG)])
    assert edge_dice_loss(logits, target, per_image=True).item() == pytest.approx((0 + 32 / 33) / 2, abs=1e-6)
    # Global: intersection 32, sums 32 + 64 -> 1 - 65/97.
    assert edge_dice_loss(logits, target, per_image=False).item() == pytest.approx(1 - 65 / 97, abs=1e-6)


def test_gradient_reaches_the_logits_near_the_contour():
    target = square()
    logits = torch.zeros_like(target).normal_(generator=torch.Generator().manual_seed(0)).requires_grad_()
    EdgeLoss()(logits, target).backward()
    grad = logits.grad[0, 0]
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_half_precision_logits_give_a_float32_loss():
    target = square()
    loss = EdgeLoss()(hard_logits(target).to(torch.bfloat16), target)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(0.0, abs=1e-6)


def test_joint_loss_is_the_weighted_sum():
    assert {"edge", "edge_bce_dice"} <= set(available_losses())
    target = square()
    logits = torch.zeros_like(target)  # BCE = ln 2; Dice = 1 - (16 + 1) / (50 + 16 + 1) = 50/67; edge = 32/33
    loss = build_loss("edge_bce_dice", bce_weight=0.5, dice_weight=1.0, edge_weight=2.0)
    assert isinstance(loss, BCEDiceEdgeLoss) and loss.weights == (0.5, 1.0, 2.0)
    expected = 0.5 * math.log(2) + 50 / 67 + 2 * 32 / 33
    assert loss(logits, target).item() == pytest.approx(expected, abs=1e-6)
    assert [v.item() for v in loss.components(logits, target)] == pytest.approx([math.log(2), 50 / 67, 32 / 33])
    assert BCEDiceEdgeLoss().weights == (0.5, 1.0, 1.0)  # UNeXt's 0.5 BCE + Dice, plus the edge term
    assert not getattr(loss, "takes_model_output", False)


def test_zero_edge_weight_is_bce_dice():
    loss = build_loss("edge_bce_dice", bce_weight=0.5, dice_weight=1.0, edge_weight=0.0)
    assert len(loss.losses) == 2
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=gen)
    target = (torch.rand(2, 1, 8, 8, generator=gen) > 0.5).float()
    reference = BCEDiceLoss(bce_weight=0.5, dice_weight=1.0)(logits, target)
    assert loss(logits, target).item() == pytest.approx(reference.item())


def test_invalid_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        EdgeLoss(kernel_size=4)
    with pytest.raises(ValueError, match="kernel_size"):
        BCEDiceEdgeLoss(edge_weight=0.0, edge_kernel_size=1)
    with pytest.raises(ValueError, match="edge_weight"):
        BCEDiceEdgeLoss(edge_weight=-1.0)
    with pytest.raises(ValueError, match="smooth"):
        EdgeLoss(smooth=-1.0)
    with pytest.raises(ValueError, match="shape"):
        edge_dice_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
