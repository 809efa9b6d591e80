"""Binary segmentation metrics: per-image confusion counts first, scores with an explicit reduction second."""

from __future__ import annotations

from lesionseg.metrics.confusion import ConfusionStats, get_stats
from lesionseg.metrics.cumulative import SCORE_FUNCTIONS, SegmentationMetrics, format_table
from lesionseg.metrics.hd95 import hd95, hd95_batch
from lesionseg.metrics.scores import (
    REDUCTIONS,
    Reduction,
    accuracy,
    dice,
    f1,
    iou,
    precision,
    sensitivity,
    specificity,
)

__all__ = [
    "REDUCTIONS",
    "SCORE_FUNCTIONS",
    "ConfusionStats",
    "Reduction",
    "SegmentationMetrics",
    "accuracy",
    "dice",
    "f1",
    "format_table",
    "get_stats",
    "hd95",
    "hd95_batch",
    "iou",
    "precision",
    "sensitivity",
    "specificity",
]
