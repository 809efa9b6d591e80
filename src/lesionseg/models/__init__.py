"""Segmentation models behind one registry; every ``forward`` returns logits at the input size."""

from __future__ import annotations

from . import unet as _unet  # noqa: F401  (registers the factories)
from ._registry import create_model, is_model, list_models, model_entrypoint, register_model
from .base import ModelOutput, SegmentationModel
from .unet import UNet

__all__ = [
    "ModelOutput",
    "SegmentationModel",
    "UNet",
    "create_model",
    "is_model",
    "list_models",
    "model_entrypoint",
    "register_model",
]
