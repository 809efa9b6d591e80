"""Per-image confusion counts for binary segmentation masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ConfusionStats", "get_stats"]


@dataclass(frozen=True)
class ConfusionStats:
    """Per-image pixel counts of a binary confusion matrix.

    Attributes:
        tp: True positives per image, int64 of shape (N,).
        fp: False positives per image, int64 of shape (N,).
        fn: False negatives per image, int64 of shape (N,).
        tn: True negatives per image, int64 of shape (N,).
    """

    tp: Tensor
    fp: Tensor
    fn: Tensor
    tn: Tensor

    def __post_init__(self) -> None:
        shapes = {name: tuple(getattr(self, name).shape) for name in ("tp", "fp", "fn", "tn")}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"tp/fp/fn/tn must share one shape, got {shapes}")
        if len(shapes["tp"]) != 1:
            raise ValueError(f"counts must be 1-D of shape (N,), got shape {shapes['tp']}")

    def __len__(self) -> int:
        return int(self.tp.shape[0])

    def __add__(self, other: ConfusionStats) -> ConfusionStats:
        """Adds counts element-wise (same images, e.g. summing over tiles or classes).

        Use :meth:`cat` to append more images instead.
        """
        if not isinstance(other, ConfusionStats):
            return NotImplemented
        if len(self) != len(other):
            raise ValueError(f"cannot add stats of {len(self)} and {len(other)} images; use ConfusionStats.cat")
        return ConfusionStats(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    def as_tuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns the counts as ``(tp, fp, fn, tn)`` so they can be splatted into the score functions."""
        return self.tp, self.fp, self.fn, self.tn

    def total(self) -> ConfusionStats:
        """Returns counts summed over all images, as a single-image ConfusionStats of shape (1,)."""
        return ConfusionStats(*(c.sum().reshape(1) for c in self.as_tuple()))

    def to(self, device: torch.device | str) -> ConfusionStats:
        """Returns a copy with every count tensor moved to ``device``."""
        return ConfusionStats(*(c.to(device) for c in self.as_tuple()))

    @classmethod
    def empty(cls) -> ConfusionStats:
        """Returns stats holding zero images."""
        zero = torch.zeros(0, dtype=torch.int64)
        return cls(zero, zero.clone(), zero.clone(), zero.clone())

    @classmethod
    def cat(cls, stats: Sequence[ConfusionStats]) -> ConfusionStats:
        """Concatenates stats of several batches along the image dimension.

        Args:
            stats: Stats to join; may be empty.

        Returns:
            Stats covering every image of every input, in order.
        """
        if len(stats) == 0:
            return cls.empty()
        return cls(*(torch.cat([getattr(s, name) for s in stats]) for name in ("tp", "fp", "fn", "tn")))


def _as_binary(mask: Tensor, name: str) -> Tensor:
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        # Silent thresholding would hide a caller passing probabilities or logits by mistake.
        raise ValueError(f"{name} must contain only 0 and 1 (threshold before calling), got values outside {{0, 1}}")
    return mask != 0


def _check_mask_shape(mask: Tensor, name: str) -> None:
    if mask.ndim == 4 and mask.shape[1] != 1:
        raise ValueError(f"{name} must be (N, 1, H, W) for binary segmentation, got shape {tuple(mask.shape)}")
    if mask.ndim not in (3, 4):
        raise ValueError(f"{name} must be (N, 1, H, W) or (N, H, W), got shape {tuple(mask.shape)}")


def get_stats(pred: Tensor, target: Tensor) -> ConfusionStats:
    """Counts per-image true/false positives/negatives of binary masks.

    Args:
        pred: Binary prediction, (N, 1, H, W) or (N, H, W), values in {0, 1} (bool, integer or float). The caller is
            responsible for thresholding probabilities or logits.
        target: Binary ground truth with exactly the same shape as ``pred``.

    Returns:
        Per-image counts, each an int64 tensor of shape (N,) on the device of ``pred``.

    Raises:
        ValueError: If the shapes differ, are not (N, 1, H, W) / (N, H, W), or the values are not in {0, 1}.
    """
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise ValueError(f"pred and target must be tensors, got {type(pred).__name__} and {type(target).__name__}")
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
    _check_mask_shape(pred, "pred")
    p = _as_binary(pred, "pred").reshape(pred.shape[0], -1)
    t = _as_binary(target, "target").reshape(target.shape[0], -1).to(p.device)
    tp = (p & t).sum(dim=1, dtype=torch.int64)
    fp = (p & ~t).sum(dim=1, dtype=torch.int64)
    fn = (~p & t).sum(dim=1, dtype=torch.int64)
    tn = p.shape[1] - tp - fp - fn
    return ConfusionStats(tp=tp, fp=fp, fn=fn, tn=tn)
