"""Binary cross-entropy loss module."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lesionseg.losses.functional import bce_loss

__all__ = ["BCELoss"]


class BCELoss(nn.Module):
    """Binary cross-entropy on logits; see :func:`lesionseg.losses.functional.bce_loss`.

    Args:
        pos_weight: Weight of the positive (lesion) term, a positive scalar or tensor; None means 1. Stored as a buffer
            so it follows the module across ``.to(device)``.

    Raises:
        ValueError: If ``pos_weight`` is not finite and positive.
    """

    pos_weight: Tensor | None

    def __init__(self, pos_weight: float | Tensor | None = None) -> None:
        super().__init__()
        weight = None
        if pos_weight is not None:
            weight = torch.as_tensor(pos_weight, dtype=torch.float32).detach().clone()
            if not bool(torch.isfinite(weight).all()) or not bool((weight > 0).all()):
                raise ValueError(f"pos_weight must be finite and positive, got {pos_weight!r}")
        self.register_buffer("pos_weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            logits: Raw scores, (N, 1, H, W).
            target: Ground truth in {0, 1}, (N, 1, H, W).

        Returns:
            Scalar float32 loss.
        """
        return bce_loss(logits, target, pos_weight=self.pos_weight)
