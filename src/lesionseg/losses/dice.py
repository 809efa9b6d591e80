"""Soft Dice loss module."""

from __future__ import annotations

import math

from torch import Tensor, nn

from lesionseg.losses.functional import soft_dice_loss

__all__ = ["DiceLoss"]


class DiceLoss(nn.Module):
    """Soft Dice loss on logits; see :func:`lesionseg.losses.functional.soft_dice_loss`.

    Args:
        smooth: Added to numerator and denominator of the Dice ratio.
        per_image: Average per-image Dice losses (True) or use one Dice over the whole batch (False).

    Raises:
        ValueError: If ``smooth`` is negative or not finite.
    """

    def __init__(self, smooth: float = 1.0, per_image: bool = True) -> None:
        super().__init__()
        if not math.isfinite(smooth) or smooth < 0:
            raise ValueError(f"smooth must be a finite non-negative number, got {smooth!r}")
        self.smooth = float(smooth)
        self.per_image = bool(per_image)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            logits: Raw scores, (N, 1, H, W).
            target: Ground truth in {0, 1}, (N, 1, H, W).

        Returns:
            Scalar float32 loss.
        """
        return soft_dice_loss(logits, target, smooth=self.smooth, per_image=self.per_image)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}, per_image={self.per_image}"
