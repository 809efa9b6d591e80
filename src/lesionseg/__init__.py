"""lesionseg: medical lesion segmentation in PyTorch.

``create_model`` and ``list_models`` load the model zoo (and torch) on first use, so that importing a part of the
package that needs neither (the onnxruntime predictor, the readers, the measurements) stays quick.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str) -> Any:
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
