"""Inference: predictor (resize back, TTA)."""

from __future__ import annotations

from .predictor import Predictor, autocast_context

__all__ = ["Predictor", "autocast_context"]
