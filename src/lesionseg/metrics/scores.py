"""Scores computed from confusion counts, with an explicit reduction over images.

Every function takes the per-image counts ``(tp, fp, fn, tn)`` (each of shape (N,), e.g. from
:func:`lesionseg.metrics.get_stats`) and a ``reduction``:

* ``"global"``: sum the counts over all images, then score once. This is one confusion matrix over every test pixel,
  the figure most lesion-segmentation papers report.
* ``"per_image"``: score each image, then take the mean over images.
* ``"none"``: return the per-image scores, shape (N,).

Empty-case convention (applies per image, and to the summed counts for ``"global"``): when a score's denominator is
0, the score is 1.0 if the image has no errors (``fp == fn == 0``) and 0.0 otherwise. Concretely, Dice/IoU/F1 of an
empty prediction on an empty target is 1 (and 0 as soon as there is any false positive, which already follows from the
formula); precision with an empty prediction is 1 only if the target is empty too; sensitivity with an empty target is 1
only if there are no false positives. Specificity with no negatives in the target is 1 (there is no negative to get
wrong), and so is accuracy of an image with zero pixels.

All results are float64 so that sums over millions of pixels keep their exact ratios.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = [
    "REDUCTIONS",
    "Reduction",
    "accuracy",
    "dice",
    "f1",
    "iou",
    "precision",
    "sensitivity",
    "specificity",
]

Reduction = Literal["global", "per_image", "none"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)


def _prepare(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, reduction: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    counts = []
    for name, value in (("tp", tp), ("fp", fp), ("fn", fn), ("tn", tn)):
        value = torch.as_tensor(value)
        if value.ndim != 1:
            raise ValueError(f"{name} must be 1-D of shape (N,), got shape {tuple(value.shape)}")
        counts.append(value.to(torch.float64))
    shapes = {tuple(c.shape) for c in counts}
    if len(shapes) != 1:
        raise ValueError(f"tp/fp/fn/tn must share one shape, got shapes {sorted(shapes)}")
    if counts[0].shape[0] == 0 and reduction != "none":
        raise ValueError(f"cannot apply reduction {reduction!r} to zero images")
    if any(bool((c < 0).any()) for c in counts):
        raise ValueError("confusion counts must be non-negative")
    if reduction == "global":
        counts = [c.sum().reshape(1) for c in counts]
    return counts[0], counts[1], counts[2], counts[3]


def _ratio(num: Tensor, den: Tensor, if_empty: Tensor) -> Tensor:
    # torch.where evaluates both branches, so divide by a safe denominator to keep NaNs out of the graph.
    safe_den = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe_den, if_empty)


def _no_errors(fp: Tensor, fn: Tensor) -> Tensor:
    return ((fp + fn) == 0).to(torch.float64)


def _reduce(per_image: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_image
    # "global" already collapsed the counts to one entry, so a mean is correct for both remaining reductions.
    return per_image.mean()


def dice(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, reduction: Reduction) -> Tensor:
    """Dice coefficient ``2 TP / (2 TP + FP + FN)``.

    Args:
        tp: True positives per image, shape (N,).
        fp: False positives per image, shape (N,).
        fn: False negatives per image, shape (N,).
        tn: True negatives per image, shape (N,); unused by the formula, accepted for a uniform signature.
        reduction: ``"global"``, ``"per_image"`` or ``"none"`` (see the module docstring).

    Returns:
        A 0-d float64 tensor, or shape (N,) for ``"none"``. Empty prediction on empty target scores 1.

    Raises:
        ValueError: If ``reduction`` is unknown or the counts are malformed.
    """
    tp, fp, fn, _ = _prepare(tp, fp, fn, tn, reduction)
    return _reduce(_ratio(2 * tp, 2 * tp + fp + fn, _no_errors(fp, fn)), reduction)


def iou(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, reduction: Reduction) -> Tensor:
    """Intersection over union (Jaccard index) ``TP / (TP + FP + FN)``.

    Args:
        tp: True positives per image, shape (N,).
        fp: False positives per image, shape (N,).
        fn: False negatives per image, shape (N,).
        tn: True negatives per image, shape (N,); unused by the formula.
        reduction: ``"global"``, ``"per_image"`` or ``"none"``.

    Returns:
        A 0-d float64 tensor, or shape (N,) for ``"none"``. Empty prediction on empty target scores 1.

    Raises:
        ValueError: If ``reduction`` is unknown or the counts are malformed.
    """
    tp, fp, fn, _ = _prepare(tp, fp, fn, tn, reduction)
    return _reduce(_ratio(tp, tp + fp + fn, _no_errors(fp, fn)), reduction)


def accuracy(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, reduction: Reduction) -> Tensor:
    """Pixel accuracy ``(TP + TN) / (TP + FP + FN + TN)``.

    Args:
        tp: True positives per image, shape (N,).
        fp: False positives per image, shape (N,).
        fn: False negatives per image, shape (N,).
        tn: True negatives per image, shape (N,).
        reduction: ``"global"``, ``"per_image"`` or ``"none"``.

    Returns:
        A 0-d float64 tensor, or shape (N,) for ``"none"``.

    Raises:
        ValueError: If ``reduction`` is unknown or the counts are malformed.
    """
    tp, fp, fn, tn = _prepare(tp, fp, fn, tn, reduction)
    return _reduce(_ratio(tp + tn, tp + fp + fn + tn, _no_errors(fp, fn)), reduction)


def sensitivity(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, reduction: Reduction) -> Tensor:
    """Sensitivity (recall, true positive rate) ``TP / (TP + FN)``.

    Args:
        tp: True positives per image, shape (N,).
        fp: False positives per image, shape (N,).
        fn: False negatives per image, shape (N,).
        tn: True negatives per image, shape (N,); unused by the formula.
        reduction: ``"global"``, ``"per_image"`` or ``"none"``.

    Returns:
        A 0-d float64 tensor, or shape (N,) for ``"none"``. With an empty target the score is 1 if there are no false
        positives, else 0.

    Raises:
        ValueError: If ``reduction`` is unknown or the counts are malformed.
    """
    tp, fp, fn, _ = _prepare(tp, fp, fn, tn, reduction)
    return _reduce(_ratio(tp, tp + fn, _no_errors(fp, fn)), reduction)


def specificity(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, reduction: Reduction) -> Tensor:
    """Specificity (true negative rate) ``TN / (TN + FP)``.

    Args:
        tp: True positives per image, shape (N,); unused by the formula.
        fp: False positives per image, shape (N,).
        fn: False negatives per image, shape (N,); unused by the formula.
        tn: True negatives per image, shape (N,).
        reduction: ``"global"``, ``"per_image"`` or ``"none"``.

    Returns:
        A 0-d float64 tensor, or shape (N,) for ``"none"``. An image without negatives scores 1.

    Raises:
        ValueError: If ``reduction`` is unknown or the counts are malformed.
    """
    _, fp, _, tn = _prepare(tp, fp, fn, tn, reduction)
    # No negatives means FP == 0 as well, so there is nothing to get wrong: 1 regardless of FN.
    return _reduce(_ratio(tn, tn + fp, torch.ones_like(tn)), reduction)


def precision(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, reduction: Reduction) -> Tensor:
    """Precision (positive predictive value) ``TP / (TP + FP)``.

    Args:
        tp: True positives per image, shape (N,).
        fp: False positives per image, shape (N,).
        fn: False negatives per image, shape (N,); used only for the empty-prediction convention.
        tn: True negatives per image, shape (N,); unused by the formula.
        reduction: ``"global"``, ``"per_image"`` or ``"none"``.

    Returns:
        A 0-d float64 tensor, or shape (N,) for ``"none"``. An empty prediction scores 1 if the target is empty too,
        else 0.

    Raises:
        ValueError: If ``reduction`` is unknown or the counts are malformed.
    """
    tp, fp, fn, _ = _prepare(tp, fp, fn, tn, reduction)
    return _reduce(_ratio(tp, tp + fp, _no_errors(fp, fn)), reduction)


def f1(tp: Tensor, fp: Tensor, fn: Tensor, tn: Tensor, reduction: Reduction) -> Tensor:
    """F1 score, the harmonic mean ``2 P R / (P + R)`` of precision and sensitivity.

    For binary masks this equals :func:`dice` (up to rounding); it is computed from precision and recall on purpose
    so that the identity is checked rather than assumed. For ``"global"`` precision and recall come from the summed
    counts; for ``"per_image"`` F1 is computed per image and then averaged.

    Args:
        tp: True positives per image, shape (N,).
        fp: False positives per image, shape (N,).
        fn: False negatives per image, shape (N,).
        tn: True negatives per image, shape (N,); unused by the formula.
        reduction: ``"global"``, ``"per_image"`` or ``"none"``.

    Returns:
        A 0-d float64 tensor, or shape (N,) for ``"none"``. Precision and recall follow their own empty-case
        conventions; ``P + R == 0`` gives 0.

    Raises:
        ValueError: If ``reduction`` is unknown or the counts are malformed.
    """
    # Score per entry first ("none" on pre-summed counts for "global") so that global F1 uses P and R of the sums.
    tp, fp, fn, tn = _prepare(tp, fp, fn, tn, reduction)
    p = precision(tp, fp, fn, tn, "none")
    r = sensitivity(tp, fp, fn, tn, "none")
    return _reduce(_ratio(2 * p * r, p + r, torch.zeros_like(p)), reduction)
