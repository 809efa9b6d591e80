"""Web page and JSON API over the shipped models (FastAPI + uvicorn; the ``serve`` extra).

``lesionseg serve`` runs :func:`create_app` under uvicorn. Nothing in the package imports this one.
"""

from __future__ import annotations

from .app import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MODEL,
    DEFAULT_WORK_PIXELS,
    PROBA_MAX_SIDE,
    SegmentResult,
    create_app,
)
from .decode import ACCEPTED_FORMATS, DecodedUpload, UploadError, decode_upload
from .models import describe_model, load_models, model_id

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_MODEL",
    "DEFAULT_WORK_PIXELS",
    "DecodedUpload",
    "PROBA_MAX_SIDE",
    "SegmentResult",
    "UploadError",
    "create_app",
    "decode_upload",
    "describe_model",
    "load_models",
    "model_id",
]
