"""Weighted sums of losses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import torch
from torch import Tensor, nn

from lesionseg.losses.bce import BCELoss
from lesionseg.losses.dice import DiceLoss

__all__ = ["BCEDiceLoss", "CompoundLoss"]


def _check_weight(weight: float, name: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, Real) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {weight!r}")
    return float(weight)


class CompoundLoss(nn.Module):
    """Weighted sum ``sum_i w_i * loss_i(logits, target)`` of losses sharing one call signature.

    Weights are used as given (not normalised).

    Args:
        terms: ``(loss_module, weight)`` pairs; at least one, weights finite and non-negative.

    Raises:
        ValueError: If ``terms`` is empty, an entry is not an ``nn.Module``, or a weight is invalid.
    """

    def __init__(self, terms: Sequence[tuple[nn.Module, float]]) -> None:
        super().__init__()
        if len(terms) == 0:
            raise ValueError("terms must contain at least one (loss, weight) pair, got an empty sequence")
        modules: list[nn.Module] = []
        weights: list[float] = []
        for i, term in enumerate(terms):
            if len(term) != 2 or not isinstance(term[0], nn.Module):
                raise ValueError(f"terms[{i}] must be a (nn.Module, weight) pair, got {term!r}")
            modules.append(term[0])
            weights.append(_check_weight(term[1], f"terms[{i}] weight"))
        self.losses = nn.ModuleList(modules)
        self.weights: tuple[float, ...] = tuple(weights)

    def components(self, logits: Tensor, target: Tensor) -> list[Tensor]:
        """Returns each term's unweighted loss, in the order given, e.g. for logging.

        Args:
            logits: Raw scores, (N, 1, H, W).
            target: Ground truth in {0, 1}, (N, 1, H, W).

        Returns:
            One scalar tensor per term.
        """
        return [loss(logits, target) for loss in self.losses]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Computes the weighted sum.

        Args:
            logits: Raw scores, (N, 1, H, W).
            target: Ground truth in {0, 1}, (N, 1, H, W).

        Returns:
            Scalar loss.
        """
        total: Tensor | None = None
        for weight, value in zip(self.weights, self.components(logits, target)):
            total = weight * value if total is None else total + weight * value
        assert total is not None  # guaranteed by the non-empty check in __init__
        return total

    def extra_repr(self) -> str:
        return f"weights={list(self.weights)}"


class BCEDiceLoss(CompoundLoss):
    """``bce_weight * BCE + dice_weight * soft Dice``, the usual lesion-segmentation baseline loss.

    Args:
        bce_weight: Weight of the binary cross-entropy term.
        dice_weight: Weight of the soft Dice term.
        pos_weight: Positive-class weight passed to :class:`BCELoss`.
        smooth: Smoothing constant passed to :class:`DiceLoss`.
        per_image: Per-image (True) or batch-global (False) Dice, passed to :class:`DiceLoss`.

    Raises:
        ValueError: If a weight or option is invalid.
    """

    def __init__(
        self,
        bce_weight: float = 0.5,
        dice_weight: float = 0.5,
        *,
        pos_weight: float | torch.Tensor | None = None,
        smooth: float = 1.0,
        per_image: bool = True,
    ) -> None:
        super().__init__(
            [
                (BCELoss(pos_weight=pos_weight), _check_weight(bce_weight, "bce_weight")),
                (DiceLoss(smooth=smooth, per_image=per_image), _check_weight(dice_weight, "dice_weight")),
            ]
        )
