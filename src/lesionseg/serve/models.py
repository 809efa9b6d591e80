"""The models a server holds: loaded once at start, described for ``GET /api/models``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..inference import Predictor
from ..models.hub import ModelRecord, list_pretrained

__all__ = ["load_models", "model_id", "describe_model"]

_logger = logging.getLogger(__name__)


def model_id(spec: str | Path, record: ModelRecord | None) -> str:
    """Short id of a served model: its shipped tag, else the run folder of a ``best``/``last`` checkpoint, else the
    checkpoint's stem name (``runs/skin/best`` -> ``skin``)."""
    if record is not None and record.pretrained is not None:
        return record.pretrained.tag
    path = Path(str(spec))
    if path.name.endswith((".json", ".safetensors")):
        path = path.with_name(path.name.split(".")[0])
    if path.is_dir():
        return path.name
    return path.parent.name if path.name in ("best", "last") and path.parent.name else path.name


def load_models(
    specs: Sequence[str | Path] | None = None, device: str = "cpu", backend: str = "auto", threads: int | None = None
) -> dict[str, Predictor]:
    """Load each model once, keyed by :func:`model_id`.

    Args:
        specs: shipped tags (``skin``, ``polyp``) or checkpoints (stem, file or run folder); None serves every shipped
            model.
        device: torch device of the models.
        backend: ``auto`` (onnxruntime where the model has an ONNX graph and the device is the CPU; see
            :func:`~lesionseg.inference.predictor.choose_backend`), ``torch`` or ``onnxruntime``.
        threads: intra-op threads of each onnxruntime call (None: its default).

    Raises:
        ValueError: no model to serve, or a spec that is neither a shipped tag nor a checkpoint.
    """
    if specs is None:
        specs = list(list_pretrained())
        if not specs:
            raise ValueError("no shipped models in this installation; give checkpoints to serve (--model PATH)")
    out: dict[str, Predictor] = {}
    for spec in specs:
        predictor = Predictor.from_checkpoint(spec, backend=backend, device=device, threads=threads)
        mid = base = model_id(spec, predictor.record)
        n = 2
        while mid in out:  # two checkpoints from folders of the same name
            mid, n = f"{base}-{n}", n + 1
        out[mid] = predictor
        arch = predictor.record.model if predictor.record else "?"
        _logger.info("loaded model %s from %s (%s, %s)", mid, spec, arch, predictor.backend)
    if not out:
        raise ValueError("no model to serve")
    return out


def describe_model(mid: str, predictor: Predictor) -> dict[str, Any]:
    """JSON description of a served model (what ``GET /api/models`` lists)."""
    record = predictor.record
    shipped = record.pretrained if record else None
    trained = record.dataset if record else None
    dataset = (shipped.dataset if shipped else "") or (trained.layout if trained else "")
    if record is not None:
        arch = record.model
    else:
        arch = type(predictor.model).__name__ if predictor.model is not None else "onnx"
    return {
        "id": mid,
        "model": arch,
        "title": (shipped.title if shipped else "") or f"{arch} checkpoint" + (f" ({dataset})" if dataset else ""),
        "dataset": dataset,
        "shipped": shipped is not None,
        "threshold": predictor.prob_threshold,
        "temperature": predictor.temperature,
        "quality_estimate": predictor.quality is not None,
        "out_of_distribution_check": predictor.description is not None,
        "postprocess": list(predictor.postprocess),
        "image_size": list(predictor.image_size),
        "in_channels": predictor.in_channels,
        "test_metrics": shipped.test_metrics if shipped else {},
    }
