"""ONNX export of a segmentation model, with its record alongside, and an onnxruntime session over it.

``export_onnx`` writes ``OUT.onnx`` (input ``image`` (N, C, H, W) float32 normalised, output ``logits``
(N, 1, H, W); the batch axis dynamic) and ``OUT.json`` (the checkpoint record: working size, normalisation, threshold,
post-processing, temperature and the trust parts), so the exported file is usable without the package. The graph
outputs logits at T = 1; the record's ``temperature`` is applied after it (``sigmoid(logits / temperature)``), as
:class:`~lesionseg.inference.Predictor` does on both backends, so that one exported file serves both the calibrated
probabilities and the unchanged mask (``sigmoid(logits) > threshold``). onnx, onnxruntime and onnxscript are the
optional ``onnx`` extra.

Exporting needs torch (imported by the functions that export); opening a session and finding a checkpoint's cached
graph do not, so that the onnxruntime predictor runs without torch.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import platform
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..models.hub import EnsembleRecord, ModelRecord

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "OnnxExportError",
    "cached_onnx_for_checkpoint",
    "cached_onnx_path",
    "compact_float16",
    "export_onnx",
    "onnx_session",
    "shipped_onnx_path",
]

_logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class OnnxExportError(RuntimeError):
    """A model that the exporters could not turn into ONNX; the message carries each exporter's reason."""


def _export(model: nn.Module, example: torch.Tensor, path: Path, opset: int, exporter: str) -> None:
    """One exporter's try; the dynamo exporter prints its progress, which a library keeps off the terminal."""
    import torch

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
    record: ModelRecord | EnsembleRecord | None = None,
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
    import torch

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
    # The record without its training state and the checksums of the checkpoint files, then how to feed the file.
    if isinstance(record, ModelRecord):
        meta = replace(record, state=None, sha256=None).to_dict()
    else:  # an ensemble's record (its members' paths mean nothing beside the graph, which holds them all)
        meta = record.to_dict() if record is not None else {}
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


def compact_float16(path: str | Path) -> tuple[int, int]:
    """Store every float32 initializer of the graph at ``path`` whose values float16 holds exactly as float16, with a
    ``Cast`` back to float32 in front of its users: the same numbers, half the bytes (weights shipped as float16 and
    cast back, as the package's are). Initializers that are not exact (a batch norm folded into a convolution by the
    exporter) stay float32, so the graph computes exactly what it computed before; onnxruntime folds the casts when
    it opens the graph.

    Returns:
        The file's size in bytes before and after.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    before = path.stat().st_size
    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    casts = []
    inputs = {i.name for i in graph.input}  # an initializer that is also a graph input can be fed: kept as it is
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name in inputs:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if values.size < 16 or not np.array_equal(half.astype(np.float32), values):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, name=f"{name}__float16"))
        casts.append(helper.make_node("Cast", [f"{name}__float16"], [name], to=onnx.TensorProto.FLOAT))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.checker.check_model(graph_model)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(graph_model, str(tmp))
    os.replace(tmp, path)
    return before, path.stat().st_size


def _default_threads() -> int:
    """torch's intra-op thread count when torch is loaded (``torch.set_num_threads`` governs both backends), else
    ``OMP_NUM_THREADS``, else the CPUs this process may run on."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def onnx_session(path: str | Path, threads: int | None = None, reuse_optimized: bool = True):
    """An onnxruntime CPU session over ``path`` using ``threads`` intra-op threads (default: see
    :func:`_default_threads`).

    onnxruntime optimises a graph when it opens it (fusions, the CPU's blocked memory layouts): 0.15-0.2 s of a quick
    command's start for the shipped skin model. With ``reuse_optimized`` the optimised graph is saved into the user
    cache the first time (keyed by the graph's bytes, the onnxruntime version and this CPU's instruction sets, since
    the blocked layouts depend on them) and opened as it is afterwards, with the same outputs. A cache that cannot be
    written or read only costs the optimisation again.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:  # the optional extra
        raise ImportError("onnxruntime is not installed: pip install 'lesionseg[onnx]'") from err

    def options(optimized_to: Path | None = None, optimize: bool = True):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or _default_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # Spinning workers would keep the cores busy after each run and slow the resizing and measuring around it.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if optimized_to is not None:
            opts.optimized_model_filepath = str(optimized_to)
        return opts

    def session(graph: Path, opts):
        return ort.InferenceSession(str(graph), sess_options=opts, providers=["CPUExecutionProvider"])

    path = Path(path)
    saved = _optimized_path(path, ort.__version__) if reuse_optimized else None
    if saved is not None and saved.is_file():
        try:
            return session(saved, options(optimize=False))
        except Exception:  # a damaged cache entry: optimised again below, and replaced
            _logger.debug("optimised graph %s unusable", saved, exc_info=True)
    if saved is None:
        return session(path, options())
    tmp = saved.with_name(f"{saved.name}.{os.getpid()}.tmp")
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        opened = session(path, options(optimized_to=tmp))
        os.replace(tmp, saved)
        return opened
    except OSError:  # an unwritable cache
        tmp.unlink(missing_ok=True)
        return session(path, options())


def _optimized_path(path: Path, ort_version: str) -> Path | None:
    """Where the cache keeps ``path``'s graph as onnxruntime optimised it on this CPU (None: no readable graph)."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return None
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    cpu = hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:8]
    return _cache_dir() / "optimized" / f"{path.stem}-{digest}-ort{ort_version}-cpu{cpu}.onnx"


def _cache_dir() -> Path:
    root = os.environ.get("LESIONSEG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lesionseg"
    )
    return Path(root) / "onnx"


def shipped_onnx_path(stem: str | Path) -> Path | None:
    """The ONNX graph the package ships beside a shipped model's weights (``models/weights/<tag>.onnx``), or None.

    Only the package's own folder counts: a ``.onnx`` beside a training run's checkpoint may be older than weights
    trained since, whereas the cache below is keyed by the weights themselves.
    """
    from ..models.hub import WEIGHTS_DIR

    path = Path(str(stem) + ".onnx")
    return path if path.parent.resolve() == WEIGHTS_DIR and path.is_file() else None


def cached_onnx_path(stem: str | Path, record: ModelRecord | EnsembleRecord) -> Path:
    """Where the user cache keeps a checkpoint's exported graph: ``$LESIONSEG_CACHE`` (or ``~/.cache/lesionseg``)
    ``/onnx/<model>-<SHA-256 of the weights file>.onnx``, so that changed weights are exported anew. An ensemble's
    key is its record's text, which names every member record's checksum (and they their weights')."""
    if isinstance(record, EnsembleRecord):
        key = Path(str(stem) + ".json").read_bytes()
    else:
        key = Path(str(stem) + ".safetensors").read_bytes()
    digest = hashlib.sha256(key).hexdigest()[:16]
    return _cache_dir() / f"{record.model}-{digest}.onnx"


def cached_onnx_for_checkpoint(
    stem: str | Path, record: ModelRecord | EnsembleRecord, model: nn.Module | None = None
) -> Path:
    """The ONNX graph of a checkpoint: the one the package ships for it, else the user cache's, exported there once
    (from ``model``, or the checkpoint's weights when None) and reused while the weights file is unchanged."""
    shipped = shipped_onnx_path(stem)
    if shipped is not None:
        return shipped
    path = cached_onnx_path(stem, record)
    if not path.is_file():
        if model is None:
            from ..models.hub import load_model

            model, _ = load_model(stem)
        _logger.info("exporting %s to %s (once)", stem, path)
        export_onnx(model, path, record.image_size, record.in_channels, record=record)
    return path
