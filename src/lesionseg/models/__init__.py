"""Segmentation models behind one registry; every ``forward`` returns logits at the input size.

The package loads lazily (PEP 562): ``lesionseg.models.hub``'s typed record reads without torch, and the first use of
a name below (``create_model``, ``list_models``, ``UNet``, ...) imports every model file, which registers it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EnsembleModel",
    "MODELS",
    "ModelOutput",
    "SegmentationModel",
    "UNet",
    "build_model",
    "check_model_options",
    "create_model",
    "is_model",
    "list_models",
    "model_entrypoint",
    "model_options",
    "model_tags",
    "register_model",
]

_WHERE = {
    "MODELS": "._registry",
    "build_model": "._registry",
    "check_model_options": "._registry",
    "model_options": "._registry",
    "is_model": "._registry",
    "list_models": "._registry",
    "model_entrypoint": "._registry",
    "model_tags": "._registry",
    "register_model": "._registry",
    "ModelOutput": ".base",
    "SegmentationModel": ".base",
    "create_model": ".hub",
    "EnsembleModel": ".ensemble",
    "UNet": ".unet",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from ._registry import load_zoo

        load_zoo()
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
