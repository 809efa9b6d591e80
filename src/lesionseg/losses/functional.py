"""Stateless loss functions on logits for binary segmentation.

Every function casts half-precision logits to float32 before any arithmetic so that it is safe to call inside
``torch.autocast``: sums over many pixels and the sigmoid near saturation lose too much precision in float16/bfloat16.
The losses added later (focal, Tversky, Lovasz hinge) keep float64 as float64, so that their gradients can be checked
numerically with :func:`torch.autograd.gradcheck`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bce_loss",
    "check_logits_target",
    "focal_loss",
    "lovasz_hinge_loss",
    "soft_dice_loss",
    "tversky_loss",
]


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


def _upcast(logits: Tensor) -> Tensor:
    """float64 stays float64 (gradient checks); every other dtype becomes float32."""
    return logits if logits.dtype == torch.float64 else logits.float()


def _check_non_negative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return float(value)


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: float | None = None) -> Tensor:
    """Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), averaged over all pixels.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` where ``p_t`` is the predicted probability of the true class. The
    factor ``(1 - p_t)^gamma`` shrinks the loss of pixels that are already well classified (most of the background),
    so training concentrates on the hard ones. ``log(p_t)`` is taken as minus the binary cross-entropy on logits,
    which is stable for large logits.

    Args:
        logits: Raw scores, (N, 1, H, W).
        target: Ground truth in {0, 1} (soft labels in [0, 1] also work), same shape as ``logits``.
        gamma: Focusing parameter; 0 gives the (alpha-weighted) binary cross-entropy.
        alpha: Weight of the positive class in [0, 1] (negatives get ``1 - alpha``); None weights both classes 1.
            The paper's detection setting used 0.25 with ``gamma = 2``.

    Returns:
        Scalar loss (float32, or float64 for float64 logits).

    Raises:
        ValueError: If the shapes differ, ``gamma`` is negative or ``alpha`` is outside [0, 1].
    """
    check_logits_target(logits, target)
    gamma = _check_non_negative(gamma, "gamma")
    if alpha is not None and (isinstance(alpha, bool) or not 0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"alpha must be in [0, 1] or None, got {alpha!r}")
    logits = _upcast(logits)
    target = target.to(dtype=logits.dtype, device=logits.device)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-ce)
    loss = (1.0 - p_t).pow(gamma) * ce
    if alpha is not None:
        loss = (alpha * target + (1.0 - alpha) * (1.0 - target)) * loss
    return loss.mean()


def tversky_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    smooth: float = 1.0,
    per_image: bool = True,
) -> Tensor:
    """Tversky loss ``(1 - TI)^gamma`` with ``TI = (TP + smooth) / (TP + alpha FP + beta FN + smooth)``.

    Salehi et al., "Tversky loss function for image segmentation using 3D fully convolutional deep networks" (MLMI
    2017) weigh false positives by ``alpha`` and false negatives by ``beta``; ``beta > alpha`` favours recall, which
    helps small lesions. ``alpha = beta = 0.5`` is the soft Dice loss (up to smoothing). ``gamma != 1`` is the focal
    Tversky loss of Abraham and Khan (ISBI 2019); they write the exponent as ``1 / gamma`` and recommend their
    ``gamma = 4/3``, which is ``gamma = 0.75`` here. TP, FP and FN are soft counts over ``p = sigmoid(logits)``.

    Args:
        logits: Raw scores, (N, 1, H, W).
        target: Ground truth in {0, 1} (soft labels in [0, 1] also work), same shape as ``logits``.
        alpha: Weight of the false positives.
        beta: Weight of the false negatives.
        gamma: Exponent of ``1 - TI`` (1: plain Tversky loss).
        smooth: Added to numerator and denominator; an empty prediction on an empty target scores 0.
        per_image: Average per-image losses (True) or compute one index over all pixels of the batch (False).

    Returns:
        Scalar loss (float32, or float64 for float64 logits).

    Raises:
        ValueError: If the shapes differ, a weight is negative, ``gamma`` is not positive, or all of
            ``alpha``, ``beta`` and ``smooth`` are 0 (the index would be 0/0 on a miss).
    """
    check_logits_target(logits, target)
    alpha = _check_non_negative(alpha, "alpha")
    beta = _check_non_negative(beta, "beta")
    smooth = _check_non_negative(smooth, "smooth")
    if _check_non_negative(gamma, "gamma") == 0:
        raise ValueError("gamma must be positive, got 0")
    if alpha == beta == smooth == 0:
        raise ValueError("alpha, beta and smooth cannot all be 0")
    probs = torch.sigmoid(_upcast(logits))
    target = target.to(dtype=probs.dtype, device=probs.device)
    dims = tuple(range(1, probs.ndim)) if per_image else tuple(range(probs.ndim))
    tp = (probs * target).sum(dim=dims)
    fp = (probs * (1.0 - target)).sum(dim=dims)
    fn = ((1.0 - probs) * target).sum(dim=dims)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    # clamp: rounding can push the index a hair above 1, and a negative base with a fractional exponent is NaN
    return (1.0 - index).clamp_min(0.0).pow(gamma).mean()


def _lovasz_hinge_flat(scores: Tensor, labels: Tensor) -> Tensor:
    """Lovasz hinge of one set of pixels: ``scores`` and ``labels`` {0, 1} flat, same length."""
    if scores.numel() == 0:
        return scores.sum()
    signs = 2.0 * labels - 1.0
    errors = 1.0 - scores * signs
    errors_sorted, order = torch.sort(errors, descending=True)
    gt_sorted = labels[order]
    # Jaccard loss of the prediction that marks the first k sorted pixels wrong, for every k; its increments are the
    # weights of the sorted hinge errors (the gradient of the Lovasz extension, Berman et al., Eq. 9 and Alg. 1).
    positives = gt_sorted.sum()
    intersection = positives - gt_sorted.cumsum(0)
    union = positives + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    weights = torch.cat((jaccard[:1], jaccard[1:] - jaccard[:-1]))
    return torch.dot(F.relu(errors_sorted), weights)


def lovasz_hinge_loss(logits: Tensor, target: Tensor, per_image: bool = True) -> Tensor:
    """Lovasz hinge loss (Berman et al., "The Lovasz-Softmax loss: A tractable surrogate for the optimization of the
    intersection-over-union measure in neural networks", CVPR 2018), a convex surrogate of the Jaccard (IoU) loss.

    The hinge errors ``max(0, 1 - logit * sign)`` (sign +1 for lesion pixels, -1 for background) are sorted in
    decreasing order and weighted by the increments of the Jaccard loss along that order: the tight convex (Lovasz)
    extension of the Jaccard loss of the set of mispredicted pixels, evaluated at the hinge errors. It works on raw
    logits (no sigmoid). On an image without lesion pixels every mistake makes the Jaccard loss 1, so the loss is its
    largest hinge error.

    Args:
        logits: Raw scores, (N, 1, H, W).
        target: Ground truth in {0, 1}, same shape as ``logits``.
        per_image: Average the loss of each image (True, as the paper does for binary segmentation) or compute it
            over all pixels of the batch at once (False).

    Returns:
        Scalar loss (float32, or float64 for float64 logits).

    Raises:
        ValueError: If the shapes differ.
    """
    check_logits_target(logits, target)
    logits = _upcast(logits)
    target = target.to(dtype=logits.dtype, device=logits.device)
    if not per_image:
        return _lovasz_hinge_flat(logits.reshape(-1), target.reshape(-1))
    losses = [_lovasz_hinge_flat(s.reshape(-1), t.reshape(-1)) for s, t in zip(logits, target)]
    return torch.stack(losses).mean()
