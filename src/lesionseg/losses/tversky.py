"""Tversky loss (Salehi et al., MLMI 2017) and focal Tversky loss (Abraham and Khan, ISBI 2019) modules."""

from __future__ import annotations

from torch import Tensor, nn

from lesionseg.losses.factory import register_loss
from lesionseg.losses.functional import _check_non_negative, tversky_loss

__all__ = ["FocalTverskyLoss", "TverskyLoss"]


@register_loss("tversky")
class TverskyLoss(nn.Module):
    """Tversky loss on logits; see :func:`lesionseg.losses.functional.tversky_loss`.

    Args:
        alpha: Weight of the false positives.
        beta: Weight of the false negatives (``beta > alpha`` favours recall).
        gamma: Exponent of ``1 - TI`` (1: plain Tversky; see :class:`FocalTverskyLoss`).
        smooth: Added to numerator and denominator of the index.
        per_image: Per-image (True) or batch-global (False) index.

    Raises:
        ValueError: If a weight is negative, ``gamma`` is not positive, or ``alpha``, ``beta`` and ``smooth`` are
            all 0.
    """

    def __init__(
        self, alpha: float = 0.5, beta: float = 0.5, gamma: float = 1.0, smooth: float = 1.0, per_image: bool = True
    ) -> None:
        super().__init__()
        self.alpha = _check_non_negative(alpha, "alpha")
        self.beta = _check_non_negative(beta, "beta")
        self.gamma = _check_non_negative(gamma, "gamma")
        self.smooth = _check_non_negative(smooth, "smooth")
        if self.gamma == 0:
            raise ValueError("gamma must be positive, got 0")
        if self.alpha == self.beta == self.smooth == 0:
            raise ValueError("alpha, beta and smooth cannot all be 0")
        self.per_image = bool(per_image)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            logits: Raw scores, (N, 1, H, W).
            target: Ground truth in {0, 1}, (N, 1, H, W).

        Returns:
            Scalar loss.
        """
        return tversky_loss(logits, target, self.alpha, self.beta, self.gamma, self.smooth, self.per_image)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, smooth={self.smooth}, "
            f"per_image={self.per_image}"
        )


@register_loss("focal_tversky")
class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss ``(1 - TI)^gamma`` with Abraham and Khan's defaults: ``alpha = 0.3``, ``beta = 0.7`` and
    their exponent ``1 / gamma_paper`` with ``gamma_paper = 4/3``, i.e. ``gamma = 0.75`` here. The exponent changes how
    the loss weighs images by how well they are already segmented; ``gamma = 1`` is :class:`TverskyLoss`.

    Args:
        alpha: Weight of the false positives.
        beta: Weight of the false negatives.
        gamma: Exponent of ``1 - TI``.
        smooth: Added to numerator and denominator of the index.
        per_image: Per-image (True) or batch-global (False) index.
    """

    def __init__(
        self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, smooth: float = 1.0, per_image: bool = True
    ) -> None:
        super().__init__(alpha, beta, gamma, smooth, per_image)
