"""Focal loss module (Lin et al., ICCV 2017)."""

from __future__ import annotations

from torch import Tensor, nn

from lesionseg.losses.factory import register_loss
from lesionseg.losses.functional import _check_non_negative, focal_loss

__all__ = ["FocalLoss"]


@register_loss("focal")
class FocalLoss(nn.Module):
    """Focal loss on logits; see :func:`lesionseg.losses.functional.focal_loss`.

    Args:
        gamma: Focusing parameter (0: binary cross-entropy).
        alpha: Weight of the positive class in [0, 1]; None weights both classes 1.

    Raises:
        ValueError: If ``gamma`` is negative or ``alpha`` is outside [0, 1].
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__()
        self.gamma = _check_non_negative(gamma, "gamma")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1):
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha!r}")
        self.alpha = None if alpha is None else float(alpha)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            logits: Raw scores, (N, 1, H, W).
            target: Ground truth in {0, 1}, (N, 1, H, W).

        Returns:
            Scalar loss.
        """
        return focal_loss(logits, target, gamma=self.gamma, alpha=self.alpha)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}"
