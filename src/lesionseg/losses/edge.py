"""Edge (boundary) loss and the SC-UNeXt joint loss BCE + Dice + edge.

SC-UNeXt ("Lesion image segmentation based on UNeXt with multi-scale feature fusion and attention") uses "a joint
loss function to improve the sensitivity of the network model to edge features" that "increases the proportion of
edge features", and does not define the edge term or the weights. Our reading: the edge term compares the boundary
of the predicted probability map with the boundary of the target mask. Boundaries are morphological gradients
(dilation minus erosion with a k x k square, by max-pooling), which are differentiable almost everywhere on soft
probabilities and give, on a binary mask, the band of pixels whose k x k neighbourhood holds both classes (for
k = 3 the one-pixel rings just inside and just outside the contour). Image borders are not boundaries (the pooling
ignores the outside). The two boundary maps are compared with soft Dice, because boundary pixels are a tiny fraction
of the image and per-pixel BCE on them would be dominated by the empty background.

The joint loss weights are not given either. SC-UNeXt reuses UNeXt's training set-up word for word, and UNeXt's code
trains with ``0.5 * BCE + Dice``; our defaults add the edge term to that with weight 1: ``0.5 BCE + Dice + edge``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lesionseg.losses.bce import BCELoss
from lesionseg.losses.compound import CompoundLoss, _check_weight
from lesionseg.losses.dice import DiceLoss
from lesionseg.losses.factory import register_loss
from lesionseg.losses.functional import check_logits_target

__all__ = ["BCEDiceEdgeLoss", "EdgeLoss", "edge_dice_loss", "soft_boundary"]


def _check_kernel(kernel_size: int) -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
    return kernel_size


def soft_boundary(x: Tensor, kernel_size: int = 3) -> Tensor:
    """Morphological gradient ``dilate(x) - erode(x)`` with a ``kernel_size`` square, for maps in [0, 1].

    Args:
        x: masks or probabilities, (N, C, H, W).
        kernel_size: odd side of the square structuring element; the band is ``kernel_size - 1`` pixels wide.

    Returns:
        Boundary map in [0, 1], same shape; 1 on a binary mask's boundary band, 0 elsewhere.
    """
    _check_kernel(kernel_size)
    pad = kernel_size // 2
    dilated = F.max_pool2d(x, kernel_size, stride=1, padding=pad)
    eroded = -F.max_pool2d(-x, kernel_size, stride=1, padding=pad)
    return dilated - eroded


def edge_dice_loss(
    logits: Tensor, target: Tensor, kernel_size: int = 3, smooth: float = 1.0, per_image: bool = True
) -> Tensor:
    """Soft Dice loss between the boundary of ``sigmoid(logits)`` and the boundary of ``target``.

    Args:
        logits: raw scores, (N, 1, H, W).
        target: ground truth in {0, 1}, same shape.
        kernel_size: structuring-element size of :func:`soft_boundary`.
        smooth: added to numerator and denominator of the Dice ratio; images whose target and prediction both have
            no boundary score 0.
        per_image: average per-image losses (True) or one Dice over the batch (False).

    Returns:
        Scalar float32 loss in [0, 1].
    """
    check_logits_target(logits, target)
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, C, H, W), got shape {tuple(logits.shape)}")
    if not math.isfinite(smooth) or smooth < 0:
        raise ValueError(f"smooth must be a finite non-negative number, got {smooth!r}")
    # float32 as in the functional core: sums over many pixels lose too much in half precision.
    probs = torch.sigmoid(logits.float())
    target = target.to(dtype=torch.float32, device=probs.device)
    pred_edge = soft_boundary(probs, kernel_size)
    true_edge = soft_boundary(target, kernel_size)
    dims = (1, 2, 3) if per_image else (0, 1, 2, 3)
    intersection = (pred_edge * true_edge).sum(dim=dims)
    denominator = pred_edge.sum(dim=dims) + true_edge.sum(dim=dims)
    return 1.0 - ((2.0 * intersection + smooth) / (denominator + smooth)).mean()


@register_loss("edge")
class EdgeLoss(nn.Module):
    """Boundary Dice loss on logits; see :func:`edge_dice_loss`.

    Args:
        kernel_size: odd size of the square structuring element (3: one-pixel rings inside and outside the contour).
        smooth: Dice smoothing.
        per_image: per-image (True) or batch-global (False) Dice.

    Raises:
        ValueError: If ``kernel_size`` is not odd and >= 3 or ``smooth`` is negative or not finite.
    """

    def __init__(self, kernel_size: int = 3, smooth: float = 1.0, per_image: bool = True) -> None:
        super().__init__()
        if not math.isfinite(smooth) or smooth < 0:
            raise ValueError(f"smooth must be a finite non-negative number, got {smooth!r}")
        self.kernel_size = _check_kernel(kernel_size)
        self.smooth = float(smooth)
        self.per_image = bool(per_image)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Computes the loss.

        Args:
            logits: raw scores, (N, 1, H, W).
            target: ground truth in {0, 1}, (N, 1, H, W).

        Returns:
            Scalar float32 loss.
        """
        return edge_dice_loss(logits, target, self.kernel_size, self.smooth, self.per_image)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, smooth={self.smooth}, per_image={self.per_image}"


@register_loss("edge_bce_dice")
class BCEDiceEdgeLoss(CompoundLoss):
    """SC-UNeXt's joint loss ``bce_weight * BCE + dice_weight * Dice + edge_weight * edge`` (0.5, 1, 1 by default).

    With ``edge_weight=0`` the edge term is left out (not computed), so the loss equals ``bce_dice`` with the same
    weights; the ablation configs switch the edge term off that way.

    Args:
        bce_weight: weight of the binary cross-entropy.
        dice_weight: weight of the soft Dice loss on the masks.
        edge_weight: weight of the boundary Dice loss (:class:`EdgeLoss`).
        pos_weight: positive-class weight of the BCE.
        smooth: smoothing of both Dice terms.
        per_image: per-image (True) or batch-global (False) Dice, for both Dice terms.
        edge_kernel_size: structuring-element size of the boundaries.

    Raises:
        ValueError: If a weight or option is invalid.
    """

    def __init__(
        self,
        bce_weight: float = 0.5,
        dice_weight: float = 1.0,
        edge_weight: float = 1.0,
        *,
        pos_weight: float | Tensor | None = None,
        smooth: float = 1.0,
        per_image: bool = True,
        edge_kernel_size: int = 3,
    ) -> None:
        terms: list[tuple[nn.Module, float]] = [
            (BCELoss(pos_weight=pos_weight), _check_weight(bce_weight, "bce_weight")),
            (DiceLoss(smooth=smooth, per_image=per_image), _check_weight(dice_weight, "dice_weight")),
        ]
        if _check_weight(edge_weight, "edge_weight") > 0:
            terms.append((EdgeLoss(edge_kernel_size, smooth, per_image), float(edge_weight)))
        else:
            _check_kernel(edge_kernel_size)
        super().__init__(terms)
