"""Segmentation losses on logits: a functional core plus ``nn.Module`` wrappers and a name-based factory."""

from __future__ import annotations

from lesionseg.losses.bce import BCELoss
from lesionseg.losses.compound import BCEDiceLoss, CompoundLoss
from lesionseg.losses.deep_supervision import DeepSupervisionLoss
from lesionseg.losses.dice import DiceLoss
from lesionseg.losses.distillation import (
    FeatureDistillationLoss,
    cross_feature_distillation,
    internal_feature_distillation,
)
from lesionseg.losses.edge import BCEDiceEdgeLoss, EdgeLoss, edge_dice_loss, soft_boundary
from lesionseg.losses.factory import available_losses, build_loss, register_loss
from lesionseg.losses.focal import FocalLoss
from lesionseg.losses.functional import (
    bce_loss,
    check_logits_target,
    focal_loss,
    lovasz_hinge_loss,
    soft_dice_loss,
    tversky_loss,
)
from lesionseg.losses.lovasz import LovaszHingeLoss
from lesionseg.losses.tversky import FocalTverskyLoss, TverskyLoss

__all__ = [
    "BCEDiceEdgeLoss",
    "BCEDiceLoss",
    "BCELoss",
    "CompoundLoss",
    "DeepSupervisionLoss",
    "DiceLoss",
    "EdgeLoss",
    "FeatureDistillationLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "LovaszHingeLoss",
    "TverskyLoss",
    "available_losses",
    "bce_loss",
    "build_loss",
    "check_logits_target",
    "cross_feature_distillation",
    "edge_dice_loss",
    "focal_loss",
    "internal_feature_distillation",
    "lovasz_hinge_loss",
    "register_loss",
    "soft_boundary",
    "soft_dice_loss",
    "tversky_loss",
]
