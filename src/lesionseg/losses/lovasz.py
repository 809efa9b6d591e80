"""Lovasz hinge loss module (Berman et al., CVPR 2018)."""

from __future__ import annotations

from torch import Tensor, nn

from lesionseg.losses.factory import register_loss
from lesionseg.losses.functional import lovasz_hinge_loss

__all__ = ["LovaszHingeLoss"]


@register_loss("lovasz_hinge")
class LovaszHingeLoss(nn.Module):
    """Lovasz hinge loss on logits, a convex surrogate of the IoU loss; see
    :func:`lesionseg.losses.functional.lovasz_hinge_loss`.

    Args:
        per_image: Average per-image losses (True) or one loss over the batch's pixels (False).
    """

    def __init__(self, per_image: bool = True) -> None:
        super().__init__()
        self.per_image = bool(per_image)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            logits: Raw scores, (N, 1, H, W).
            target: Ground truth in {0, 1}, (N, 1, H, W).

        Returns:
            Scalar loss.
        """
        return lovasz_hinge_loss(logits, target, per_image=self.per_image)

    def extra_repr(self) -> str:
        return f"per_image={self.per_image}"
