"""95th-percentile Hausdorff distance (HD95) between 2-D binary masks.

Convention (the MedPy ``hd95`` one): extract the boundary of each mask, collect the distance from every boundary pixel
of the prediction to the nearest boundary pixel of the target *and* from every boundary pixel of the target to the
nearest boundary pixel of the prediction, pool both sets, and take their 95th percentile (NumPy's default linear
interpolation). MONAI's ``compute_hausdorff_distance(..., percentile=95)`` instead takes the maximum of the two directed
95th percentiles, which is never smaller than the pooled value, so numbers are only comparable with papers using the
same convention.

Boundary: ``mask XOR binary_erosion(mask)`` with the 4-connected (cross) structuring element, and pixels outside the
image treated as background, so foreground touching the image border counts as boundary there.

Empty masks: both empty gives 0.0 (perfect agreement); exactly one empty gives NaN because the distance is undefined.
Aggregators must average with a NaN-aware mean and report how many images were undefined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage
from torch import Tensor

__all__ = ["hd95", "hd95_batch"]

_CROSS = ndimage.generate_binary_structure(2, 1)


def _to_bool_array(mask: Tensor | NDArray, name: str) -> NDArray[np.bool_]:
    if isinstance(mask, Tensor):
        # Binarise in torch: dtypes such as bfloat16 have no numpy equivalent.
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name} must contain only 0 and 1 (threshold before calling)")
        return (mask.detach() != 0).cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(mask).__name__}")
    if mask.dtype == np.bool_:
        return mask
    if not np.isin(mask, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1 (threshold before calling)")
    return mask != 0


def _check_spacing(spacing: float | Sequence[float] | None) -> tuple[float, float] | None:
    if spacing is None:
        return None
    values = (float(spacing), float(spacing)) if isinstance(spacing, Real) else tuple(float(s) for s in spacing)
    if len(values) != 2 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be a positive number or a (row, col) pair of positive numbers, got {spacing!r}")
    return values[0], values[1]


def _boundary(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    return mask ^ ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def _hd95_arrays(pred: NDArray[np.bool_], target: NDArray[np.bool_], spacing: tuple[float, float] | None) -> float:
    pred_any, target_any = bool(pred.any()), bool(target.any())
    if not pred_any and not target_any:
        return 0.0
    if pred_any != target_any:
        return math.nan
    pred_border, target_border = _boundary(pred), _boundary(target)
    # One EDT per mask gives the distance of every pixel to the other mask's boundary in O(H * W).
    dist_to_target = ndimage.distance_transform_edt(~target_border, sampling=spacing)
    dist_to_pred = ndimage.distance_transform_edt(~pred_border, sampling=spacing)
    pooled = np.concatenate([dist_to_target[pred_border], dist_to_pred[target_border]])
    return float(np.percentile(pooled, 95))


def hd95(
    pred: Tensor | NDArray,
    target: Tensor | NDArray,
    spacing: float | Sequence[float] | None = None,
) -> float:
    """Computes the pooled symmetric 95th-percentile Hausdorff distance of one mask pair.

    Args:
        pred: Binary prediction, (H, W), values in {0, 1}.
        target: Binary ground truth, (H, W).
        spacing: Physical pixel size, a scalar or a (row, col) pair; None means 1 (distances in pixels).

    Returns:
        HD95 in units of ``spacing``; 0.0 if both masks are empty, NaN if exactly one is empty.

    Raises:
        ValueError: If the masks are not 2-D, differ in shape, are not binary, or ``spacing`` is invalid.
    """
    p = _to_bool_array(pred, "pred")
    t = _to_bool_array(target, "target")
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"pred and target must both be (H, W) of the same shape, got {p.shape} and {t.shape}")
    return _hd95_arrays(p, t, _check_spacing(spacing))


def hd95_batch(
    pred: Tensor | NDArray,
    target: Tensor | NDArray,
    spacing: float | Sequence[float] | None = None,
) -> Tensor:
    """Computes :func:`hd95` for every image of a batch.

    Args:
        pred: Binary predictions, (N, 1, H, W) or (N, H, W).
        target: Binary ground truth with the same shape as ``pred``.
        spacing: Physical pixel size, a scalar or a (row, col) pair; None means 1.

    Returns:
        Float64 tensor of shape (N,) on the CPU, NaN where exactly one mask of the pair is empty.

    Raises:
        ValueError: If the shapes differ or are not (N, 1, H, W) / (N, H, W), or the masks are not binary.
    """
    p = _to_bool_array(pred, "pred")
    t = _to_bool_array(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} does not match target shape {t.shape}")
    if p.ndim == 4 and p.shape[1] == 1:
        p, t = p[:, 0], t[:, 0]
    elif p.ndim != 3:
        raise ValueError(f"masks must be (N, 1, H, W) or (N, H, W), got shape {p.shape}")
    checked_spacing = _check_spacing(spacing)
    values = [_hd95_arrays(p[i], t[i], checked_spacing) for i in range(p.shape[0])]
    return torch.tensor(values, dtype=torch.float64)
