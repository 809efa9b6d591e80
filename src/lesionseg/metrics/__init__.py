"""Binary segmentation metrics: per-image confusion counts first, scores with an explicit reduction second.

Every metric is one entry of :data:`METRICS` (``registry.py``); tables and CSV columns are generated from it.
"""

from __future__ import annotations

from lesionseg.metrics.agreement import BlandAltman, bland_altman, icc
from lesionseg.metrics.calibration import CalibrationStats, ReliabilityDiagram, expected_calibration_error
from lesionseg.metrics.confusion import ConfusionStats, get_stats
from lesionseg.metrics.cumulative import SegmentationMetrics, format_table
from lesionseg.metrics.hd95 import hd95, hd95_batch
from lesionseg.metrics.registry import (
    METRICS,
    REPORT_METRICS,
    SCORE_FUNCTIONS,
    TRAINING_METRICS,
    MetricSpec,
    get_metric,
    training_csv_columns,
)
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
    "CalibrationStats",
    "ReliabilityDiagram",
    "expected_calibration_error",
    "METRICS",
    "REDUCTIONS",
    "REPORT_METRICS",
    "TRAINING_METRICS",
    "MetricSpec",
    "get_metric",
    "training_csv_columns",
    "SCORE_FUNCTIONS",
    "BlandAltman",
    "bland_altman",
    "icc",
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
