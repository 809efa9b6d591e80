"""Stateless loss functions on logits for binary segmentation.

Both functions cast logits to float32 before any arithmetic so that they are safe to call inside ``torch.autocast``:
sums over many pixels and the sigmoid near saturation lose too much precision in float16/bfloat16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bce_loss", "check_logits_target", "soft_dice_loss"]


def check_logits_target(logits: Tensor, target: Tensor) -> None:
    """Validates a logits/target pair for binary segmentation losses.

    Args:
        logits: Raw scores, (N, 1, H, W).
        target: Ground truth with the same shape.

    Raises:
        ValueError: If either is not a tensor, the shapes differ, or there is no batch dimension.
    """
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise ValueError(f"logits and target must be tensors, got {type(logits).__name__} and {type(target).__name__}")
    if logits.shape != target.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} does not match target shape {tuple(target.shape)}")
    if logits.ndim < 2:
        raise ValueError(f"logits must have a batch dimension, e.g. (N, 1, H, W), got shape {tuple(logits.shape)}")


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0, per_image: bool = True) -> Tensor:
    """Soft Dice loss ``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` with ``p = sigmoid(logits)``.

    Args:
        logits: Raw scores, (N, 1, H, W).
        target: Ground truth in {0, 1} (soft labels in [0, 1] also work), same shape as ``logits``.
        smooth: Added to numerator and denominator; keeps empty images from producing 0/0 and makes an empty
            prediction on an empty target score a loss of 0.
        per_image: If True, compute Dice per image and average the losses over the batch, so small lesions weigh as
            much as large ones; if False, compute one Dice over all pixels of the batch.

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If the shapes differ or ``smooth`` is negative or not finite.
    """
    check_logits_target(logits, target)
    if not math.isfinite(smooth) or smooth < 0:
        raise ValueError(f"smooth must be a finite non-negative number, got {smooth!r}")
    probs = torch.sigmoid(logits.float())
    target = target.to(dtype=torch.float32, device=probs.device)
    dims = tuple(range(1, probs.ndim)) if per_image else tuple(range(probs.ndim))
    intersection = (probs * target).sum(dim=dims)
    denominator = probs.sum(dim=dims) + target.sum(dim=dims)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    return 1.0 - dice.mean()


def bce_loss(logits: Tensor, target: Tensor, pos_weight: float | Tensor | None = None) -> Tensor:
    """Binary cross-entropy on logits, averaged over all pixels.

    Uses :func:`torch.nn.functional.binary_cross_entropy_with_logits`, which is stable for large logits (no
    ``log(0)``) unlike applying a sigmoid first.

    Args:
        logits: Raw scores, (N, 1, H, W).
        target: Ground truth in {0, 1} (soft labels in [0, 1] also work), same shape as ``logits``.
        pos_weight: Weight of the positive (lesion) term, a positive scalar or tensor broadcastable to the channel
            dimension; > 1 counteracts foreground/background imbalance. None means 1.

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: If the shapes differ or ``pos_weight`` is not positive.
    """
    check_logits_target(logits, target)
    logits = logits.float()
    target = target.to(dtype=torch.float32, device=logits.device)
    weight: Tensor | None = None
    if pos_weight is not None:
        weight = torch.as_tensor(pos_weight, dtype=torch.float32, device=logits.device)
        if not bool(torch.isfinite(weight).all()) or not bool((weight > 0).all()):
            raise ValueError(f"pos_weight must be finite and positive, got {pos_weight!r}")
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)
