"""ONNX export of a segmentation model, with its record alongside, and an onnxruntime session over it.

``export_onnx`` writes ``OUT.onnx`` (input ``image`` (N, C, H, W) float32 normalised, output ``logits``
(N, 1, H, W); the batch axis dynamic) and ``OUT.json`` (the checkpoint record: working size, normalisation, threshold,
post-processing, temperature and the trust parts), so the exported file is usable without the package. The graph
outputs logits at T = 1; the record's ``temperature`` is applied after it (``sigmoid(logits / temperature)``), as
:class:`~lesionseg.inference.Predictor` does on both backends, so that one exported file serves both the calibrated
probabilities and the unchanged mask (``sigmoid(logits) > threshold``). onnx, onnxruntime and onnxscript are the
optional ``onnx`` extra.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..models.hub import ModelRecord

__all__ = ["export_onnx", "onnx_session", "cached_onnx_for_checkpoint", "OnnxExportError"]

_logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class OnnxExportError(RuntimeError):
    """A model that the exporters could not turn into ONNX; the message carries each exporter's reason."""


def _export(model: nn.Module, example: torch.Tensor, path: Path, opset: int, exporter: str) -> None:
    """One exporter's try; the dynamo exporter prints its progress, which a library keeps off the terminal."""
    dynamo = exporter == "dynamo"
    axes = (
        {"dynamic_shapes": ({0: torch.export.Dim.DYNAMIC},), "external_data": False}
        if dynamo
        else {"dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}}
    )
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=max(opset, 18) if dynamo else opset,
            dynamo=dynamo,
            **axes,
        )


def export_onnx(
    model: nn.Module,
    path: str | Path,
    image_size: tuple[int, int] = (256, 256),
    in_channels: int = 3,
    record: ModelRecord | None = None,
    opset: int = 17,
    exporter: str = "auto",
) -> Path:
    """Export ``model`` to ONNX with a dynamic batch axis; write ``record`` (+ export details) as ``<path>.json``.

    Args:
        model: a model returning logits; exported in eval mode (a copy, in fp32, contiguous memory format).
        path: output ``.onnx`` file.
        image_size: working size (H, W) the model runs at.
        in_channels: input channels.
        record: checkpoint record to store beside the file (None writes only the export details).
        opset: ONNX opset of the TorchScript exporter (the dynamo exporter needs >= 18).
        exporter: ``torchscript``, ``dynamo``, or ``auto`` (TorchScript, then dynamo if it fails).

    Raises:
        OnnxExportError: no exporter could export the model; the message has every exporter's reason.
    """
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ValueError(f"exporter must be auto, torchscript or dynamo, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
    example = torch.randn(2, in_channels, int(image_size[0]), int(image_size[1]))
    order = {"auto": ("torchscript", "dynamo"), "torchscript": ("torchscript",), "dynamo": ("dynamo",)}[exporter]
    reasons = []
    used = None
    tmp = path.with_name(path.name + ".tmp")
    for name in order:
        try:
            _export(model, example, tmp, opset, name)
            used = name
            break
        except Exception as err:  # an exporter fails with many exception types; each is reported
            reasons.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            _logger.debug("ONNX export with %s failed", name, exc_info=True)
    if used is None:
        tmp.unlink(missing_ok=True)
        raise OnnxExportError(f"{type(model).__name__} could not be exported to ONNX ({'; '.join(reasons)})")
    os.replace(tmp, path)
    # The record without its training state, then how to feed the file.
    meta = replace(record, state=None).to_dict() if record is not None else {}
    meta["onnx"] = {
        "file": path.name,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "layout": "NCHW float32, normalised with the record's mean/std",
        "dynamic_axes": ["batch"],
        "exporter": used,
        "torch": torch.__version__,
        "calibration": "the output is logits at T = 1: calibrated probability = sigmoid(logits / temperature) "
        "(temperature in this record, 1 when absent); mask = sigmoid(logits) > threshold, whatever the temperature",
    }
    meta.setdefault("image_size", [int(image_size[0]), int(image_size[1])])
    meta.setdefault("in_channels", in_channels)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session over ``path`` using ``threads`` intra-op threads (default: torch's count)."""
    try:
        import onnxruntime as ort
    except ImportError as err:  # the optional extra
        raise ImportError("onnxruntime is not installed: pip install 'lesionseg[onnx]'") from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Spinning workers would keep the cores busy after each run and slow the resizing and measuring around it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _cache_dir() -> Path:
    root = os.environ.get("LESIONSEG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lesionseg"
    )
    return Path(root) / "onnx"


def cached_onnx_for_checkpoint(stem: str | Path, model: nn.Module, record: ModelRecord) -> Path:
    """The ONNX file of a checkpoint, exported once into the user cache (``$LESIONSEG_CACHE`` or
    ``~/.cache/lesionseg``) and reused while the weights file is unchanged (keyed by its SHA-256)."""
    weights = Path(str(stem) + ".safetensors")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    path = _cache_dir() / f"{record.model}-{digest}.onnx"
    if not path.is_file():
        _logger.info("exporting %s to %s (once)", weights, path)
        export_onnx(model, path, record.image_size, record.in_channels, record=record)
    return path
