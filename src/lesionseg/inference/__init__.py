"""Inference: predictor (eager or onnxruntime; resize back, TTA, post-processing), ONNX export, measurements."""

from __future__ import annotations

from .measure import LesionMeasurements, measure_lesion
from .postprocess import apply_postprocessing, select_postprocessing
from .predictor import BACKENDS, Predictor, autocast_context

__all__ = [
    "BACKENDS",
    "LesionMeasurements",
    "Predictor",
    "apply_postprocessing",
    "autocast_context",
    "measure_lesion",
    "select_postprocessing",
]
