"""Feature-distillation loss of the CM-SSM paper: cross-feature + internal distillation, plus BCE and Dice.

Ke et al., "An Effective Algorithm for Skin Disease Segmentation Combining inter-channel Features and Spatial Feature
Enhancement", section 3.4, which takes the two terms from SelfReg-UNet (Zhu et al., MICCAI 2024;
github.com/ChongQingNoSubway/SelfReg-UNet, ``KDloss``):

- cross-feature distillation (CFD, eq. 8): the last decoder block's features ``F_final`` (D1) supervise every other
  block ``F_m``: ``L_CFD = mean_m || RCS(F_m) - AvgPool(F_final) ||^2``, where average pooling brings ``F_final`` to
  the block's resolution and a random channel selection (RCS) picks as many of the block's channels as ``F_final``
  has;
- internal feature distillation (IFD, eq. 9): within each block, the L2 distance between its "deep" and "shallow"
  channel halves, ``L_IFD = mean_m || F~_m - F-_m ||^2``;
- ``L_total = lambda_1 L_CFD + lambda_2 L_IFD + 0.3 BCE + 0.7 Dice`` with lambda_1 = lambda_2 = 0.015 (eqs. 10, 11).

Where the paper is silent we follow the SelfReg-UNet code: ``||.||^2`` is the mean squared error over batch, channels
and pixels (so the 1/|J| over images is included); the teacher ``F_final`` is detached; the selected channels are in
random order (``randperm``), drawn anew at every call from torch's global RNG (seeded by the trainer) or a given
generator; the side with more pixels is average-pooled to the other's size and, if the teacher had more channels than a
block, a random subset of the teacher's channels is used; for IFD, the channels are sorted by their mean
L2-normalised response (descending) before the halves are taken, so that the strong half and the weak half are
compared, and both halves receive gradients; an odd channel count drops the weakest channel. Both terms run over all
blocks except D1 (the paper's block lists; the code does the same). Dice is per image with smoothing 1, as in the
VM-UNet code that the paper builds on.

Models provide the features through ``forward(x, return_aux=True).features``: an ordered mapping of (N, C, H, W)
block outputs whose last entry is the last decoder block (``vmunet``, ``cmssm_unet``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lesionseg.losses.compound import BCEDiceLoss
from lesionseg.losses.factory import register_loss

if TYPE_CHECKING:  # the losses package does not import the models at run time
    from lesionseg.models.base import ModelOutput

__all__ = ["FeatureDistillationLoss", "cross_feature_distillation", "internal_feature_distillation"]


def _check_features(features: Sequence[Tensor], name: str) -> None:
    for i, f in enumerate(features):
        if f.ndim != 4:
            raise ValueError(f"{name}[{i}] must be (N, C, H, W), got shape {tuple(f.shape)}")


def _random_channels(channels: int, k: int, generator: torch.Generator | None) -> Tensor:
    return torch.randperm(channels, generator=generator)[:k]


def cross_feature_distillation(
    features: Sequence[Tensor], teacher: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Cross-feature distillation: mean over blocks of MSE(random channels of the block, pooled teacher).

    Args:
        features: the students, each (N, C_m, H_m, W_m).
        teacher: the last decoder block's features (N, C_t, H_t, W_t); detached.
        generator: random source of the channel selection; None for torch's global RNG.

    Returns:
        Scalar float32 loss; 0 for no students.

    Raises:
        ValueError: for tensors that are not 4-D or batch sizes that differ.
    """
    _check_features([*features, teacher], "features")
    teacher = teacher.detach().float()
    losses = []
    for f in features:
        if f.shape[0] != teacher.shape[0]:
            raise ValueError(f"batch sizes differ: features {tuple(f.shape)}, teacher {tuple(teacher.shape)}")
        f = f.float()
        t = teacher
        if t.shape[-2] * t.shape[-1] > f.shape[-2] * f.shape[-1]:
            t = F.adaptive_avg_pool2d(t, f.shape[-2:])
        elif t.shape[-2:] != f.shape[-2:]:
            f = F.adaptive_avg_pool2d(f, t.shape[-2:])
        k = min(f.shape[1], t.shape[1])
        f = f[:, _random_channels(f.shape[1], k, generator).to(f.device)]
        if t.shape[1] > k:
            t = t[:, _random_channels(t.shape[1], k, generator).to(t.device)]
        losses.append(F.mse_loss(f, t))
    return torch.stack(losses).mean() if losses else teacher.new_zeros(())


def internal_feature_distillation(features: Sequence[Tensor]) -> Tensor:
    """Internal distillation: mean over blocks of MSE between the strong and the weak half of the channels.

    Channels are ranked by the batch and spatial mean of their per-sample L2-normalised maps, descending; the first
    ``C // 2`` are compared with the next ``C // 2``. Blocks with fewer than 2 channels are skipped.

    Args:
        features: block outputs, each (N, C_m, H_m, W_m).

    Returns:
        Scalar float32 loss; 0 when no block has 2 channels.

    Raises:
        ValueError: for tensors that are not 4-D.
    """
    _check_features(features, "features")
    losses = []
    for f in features:
        half = f.shape[1] // 2
        if half == 0:
            continue
        f = f.float()
        with torch.no_grad():
            order = F.normalize(f, p=2, dim=(2, 3)).mean(dim=(0, 2, 3)).argsort(descending=True)
        f = f[:, order]
        losses.append(F.mse_loss(f[:, :half], f[:, half : 2 * half]))
    return torch.stack(losses).mean() if losses else features[0].new_zeros((), dtype=torch.float32)


def _weight(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return float(value)


@register_loss("fd_bce_dice")
class FeatureDistillationLoss(nn.Module):
    """``cross_weight * CFD + internal_weight * IFD + bce_weight * BCE + dice_weight * Dice``, the paper's L_total.

    Takes the model's :class:`~lesionseg.models.base.ModelOutput` (``takes_model_output``): the logits for BCE and
    Dice, ``features`` for the two distillation terms (the last entry is the teacher). A zero weight switches a term
    off without computing it (the loss ablation, Table 5 of the paper).

    Args:
        cross_weight: lambda_1, weight of the cross-feature distillation (0.015 in the paper).
        internal_weight: lambda_2, weight of the internal feature distillation (0.015 in the paper).
        bce_weight: weight of binary cross-entropy (0.3 in the paper).
        dice_weight: weight of the soft Dice loss (0.7 in the paper).
        pos_weight: positive-class weight of BCE.
        smooth: Dice smoothing.
        per_image: per-image (True) or batch-global Dice.

    Raises:
        ValueError: for a negative or non-finite weight.
    """

    takes_model_output = True

    def __init__(
        self,
        cross_weight: float = 0.015,
        internal_weight: float = 0.015,
        bce_weight: float = 0.3,
        dice_weight: float = 0.7,
        *,
        pos_weight: float | None = None,
        smooth: float = 1.0,
        per_image: bool = True,
    ) -> None:
        super().__init__()
        self.cross_weight = _weight(cross_weight, "cross_weight")
        self.internal_weight = _weight(internal_weight, "internal_weight")
        self.segmentation = BCEDiceLoss(
            _weight(bce_weight, "bce_weight"),
            _weight(dice_weight, "dice_weight"),
            pos_weight=pos_weight,
            smooth=smooth,
            per_image=per_image,
        )

    def terms(self, output: ModelOutput, target: Tensor) -> dict[str, Tensor]:
        """Each unweighted term whose weight is non-zero, by name (``cfd``, ``ifd``, ``bce``, ``dice``), e.g. to log.

        Args:
            output: the model's output with ``features``.
            target: ground truth in {0, 1}, (N, 1, H, W).

        Raises:
            ValueError: when a distillation term is on and the model returned too few features.
        """
        if not hasattr(output, "features") or not hasattr(output, "logits"):
            raise ValueError(f"fd_bce_dice needs the model's ModelOutput, got {type(output).__name__}")
        features = list(output.features.values())
        out: dict[str, Tensor] = {}
        if self.cross_weight > 0:
            if len(features) < 2:
                raise ValueError(
                    f"cross-feature distillation needs at least 2 feature maps (blocks and the last decoder block), "
                    f"the model returned {len(features)}; use a model that returns features, e.g. cmssm_unet"
                )
            out["cfd"] = cross_feature_distillation(features[:-1], features[-1])
        if self.internal_weight > 0:
            if len(features) < 2:
                raise ValueError(
                    f"internal feature distillation needs at least 2 feature maps, the model returned {len(features)}"
                )
            out["ifd"] = internal_feature_distillation(features[:-1])
        bce, dice = self.segmentation.components(output.logits, target)
        out["bce"], out["dice"] = bce, dice
        return out

    def forward(self, output: ModelOutput, target: Tensor) -> Tensor:
        """Computes the weighted total.

        Args:
            output: the model's output (logits (N, 1, H, W) and ``features``).
            target: ground truth in {0, 1}, (N, 1, H, W).

        Returns:
            Scalar float32 loss.
        """
        terms = self.terms(output, target)
        bce_weight, dice_weight = self.segmentation.weights
        total = bce_weight * terms["bce"] + dice_weight * terms["dice"]
        if "cfd" in terms:
            total = total + self.cross_weight * terms["cfd"]
        if "ifd" in terms:
            total = total + self.internal_weight * terms["ifd"]
        return total

    def extra_repr(self) -> str:
        return f"cross_weight={self.cross_weight}, internal_weight={self.internal_weight}"
