"""Inference: predictor (eager or onnxruntime; resize back, TTA, post-processing), ONNX export, measurements."""

from __future__ import annotations

from .measure import LesionMeasurements, check_pixel_size, lesion_perimeter, measure_lesion
from .postprocess import apply_postprocessing, select_postprocessing
from .predictor import BACKENDS, Predictor

__all__ = [
    "BACKENDS",
    "LesionMeasurements",
    "Predictor",
    "apply_postprocessing",
    "check_pixel_size",
    "lesion_perimeter",
    "measure_lesion",
    "select_postprocessing",
]
