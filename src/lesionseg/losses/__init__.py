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
from lesionseg.losses.functional import bce_loss, check_logits_target, soft_dice_loss

__all__ = [
    "BCEDiceEdgeLoss",
    "BCEDiceLoss",
    "BCELoss",
    "CompoundLoss",
    "DeepSupervisionLoss",
    "DiceLoss",
    "EdgeLoss",
    "FeatureDistillationLoss",
    "available_losses",
    "bce_loss",
    "build_loss",
    "check_logits_target",
    "cross_feature_distillation",
    "edge_dice_loss",
    "internal_feature_distillation",
    "register_loss",
    "soft_boundary",
    "soft_dice_loss",
]
