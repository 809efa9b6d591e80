"""Deep supervision: one loss applied to the main output and to auxiliary (decoder-stage) outputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DeepSupervisionLoss"]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of a base loss over the main logits and every auxiliary logits map.

    Auxiliary logits whose spatial size differs from the target are resized to the target size with bilinear
    interpolation (``align_corners=False``) before the base loss is applied. Upsampling the logits, rather than
    nearest-downsampling the target, keeps the full-resolution ground truth (thin lesion borders are not aliased away)
    and keeps the target binary.

    Args:
        loss: Base loss called as ``loss(logits, target)``.
        weights: ``weights[0]`` multiplies the main loss, ``weights[1:]`` the auxiliary losses in order; used as given
            (not normalised), finite and non-negative.

    Raises:
        ValueError: If ``loss`` is not an ``nn.Module`` or ``weights`` is empty or contains an invalid value.
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise ValueError(f"loss must be an nn.Module, got {type(loss).__name__}")
        if len(weights) == 0:
            raise ValueError("weights must contain at least the main-output weight, got an empty sequence")
        for i, w in enumerate(weights):
            if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(w) or w < 0:
                raise ValueError(f"weights[{i}] must be a finite non-negative number, got {w!r}")
        self.loss = loss
        self.weights: tuple[float, ...] = tuple(float(w) for w in weights)

    def forward(self, main_logits: Tensor, aux_logits: Sequence[Tensor], target: Tensor) -> Tensor:
        """Computes the weighted deep-supervision loss.

        Args:
            main_logits: Full-resolution logits, (N, 1, H, W).
            aux_logits: Auxiliary logits, each (N, 1, h, w) with any spatial size.
            target: Ground truth in {0, 1}, (N, 1, H, W).

        Returns:
            Scalar loss.

        Raises:
            ValueError: If ``1 + len(aux_logits)`` differs from the number of weights, or an auxiliary map is not
                4-D with the target's batch and channel sizes.
        """
        if 1 + len(aux_logits) != len(self.weights):
            raise ValueError(
                f"got 1 main + {len(aux_logits)} auxiliary logits but {len(self.weights)} weights; "
                "weights[0] is for the main output and weights[1:] for the auxiliary outputs"
            )
        if target.ndim != 4:
            raise ValueError(f"target must be (N, 1, H, W), got shape {tuple(target.shape)}")
        total = self.weights[0] * self.loss(main_logits, target)
        size = tuple(target.shape[-2:])
        for i, (weight, aux) in enumerate(zip(self.weights[1:], aux_logits)):
            if aux.ndim != 4 or aux.shape[:2] != target.shape[:2]:
                raise ValueError(
                    f"aux_logits[{i}] must be (N, C, h, w) with (N, C) = {tuple(target.shape[:2])}, "
                    f"got shape {tuple(aux.shape)}"
                )
            if tuple(aux.shape[-2:]) != size:
                # float32 first: bilinear interpolation of half-precision logits under autocast loses precision.
                aux = F.interpolate(aux.float(), size=size, mode="bilinear", align_corners=False)
            total = total + weight * self.loss(aux, target)
        return total

    def extra_repr(self) -> str:
        return f"weights={list(self.weights)}"
