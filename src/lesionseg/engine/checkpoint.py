"""Checkpoints as safetensors weights + a JSON record; loading never unpickles.

A checkpoint ``<stem>`` is two files: ``<stem>.safetensors`` (model weights) and ``<stem>.json`` (model name and
kwargs, input size, normalisation, threshold, training config, metrics). The resumable training state adds
``<stem>.state.safetensors`` (optimiser tensors, RNG state) whose non-tensor structure lives in the JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..models import create_model

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_record",
    "load_model",
    "load_state",
    "checkpoint_stem",
    "pack_state",
    "unpack_state",
]

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or inconsistent; the message names the file."""


def checkpoint_stem(path: str | Path) -> Path:
    """``runs/x/best`` from ``runs/x/best``, ``best.json`` or ``best.safetensors``; a run folder means its best."""
    path = Path(path)
    if path.is_dir():
        path = path / "best"
    for suffix in (".state.safetensors", ".safetensors", ".json"):
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def pack_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able structure of ``obj`` with every tensor moved into ``tensors`` under a path key."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__items__": [[k, pack_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        packed = [pack_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": packed} if isinstance(obj, tuple) else packed
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def unpack_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack_state`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: unpack_state(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(unpack_state(v, tensors) for v in obj["__tuple__"])
        return {k: unpack_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack_state(v, tensors) for v in obj]
    return obj


def save_checkpoint(
    stem: str | Path,
    model: nn.Module,
    record: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> Path:
    """Write ``<stem>.safetensors`` + ``<stem>.json`` (+ ``<stem>.state.safetensors`` when ``state`` is given).

    Args:
        stem: path without suffix.
        model: the model whose ``state_dict`` is saved.
        record: JSON-able description: must hold ``model`` (name) and ``model_kwargs``.
        state: resumable training state (optimiser state dict, counters, RNG), tensors allowed anywhere.

    Returns:
        The stem.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    for key in ("model", "model_kwargs"):
        if key not in record:
            raise ValueError(f"checkpoint record needs {key!r}")
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    record = {**record, "format_version": FORMAT_VERSION}
    if state is not None:
        tensors: dict[str, torch.Tensor] = {}
        record["state"] = pack_state(state, "state", tensors)
        _atomic_write(stem.with_name(stem.name + ".state.safetensors"), lambda p: save_file(tensors, str(p)))
    _atomic_write(stem.with_name(stem.name + ".safetensors"), lambda p: save_file(weights, str(p)))
    # The record goes last: a record on disk means its weights are complete.
    _atomic_write(stem.with_name(stem.name + ".json"), lambda p: p.write_text(json.dumps(record, indent=1) + "\n"))
    return stem


def load_record(path: str | Path) -> dict[str, Any]:
    """The JSON record of a checkpoint (training state left packed)."""
    stem = checkpoint_stem(path)
    rec_path = stem.with_name(stem.name + ".json")
    if not rec_path.is_file():
        raise CheckpointError(f"{rec_path}: no checkpoint record (expected <stem>.json beside <stem>.safetensors)")
    try:
        return json.loads(rec_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{rec_path}: corrupt checkpoint record ({err})") from err


def load_state(path: str | Path, record: dict[str, Any]) -> dict[str, Any]:
    """The resumable training state of a checkpoint written with ``state``."""
    stem = checkpoint_stem(path)
    state_path = stem.with_name(stem.name + ".state.safetensors")
    if "state" not in record or not state_path.is_file():
        raise CheckpointError(f"{stem}: no training state to resume from")
    return unpack_state(record["state"], load_file(str(state_path)))


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint from its record and load its weights (eval mode).

    Raises:
        CheckpointError: a file is missing or the weights do not fit the recorded model.
    """
    stem = checkpoint_stem(path)
    record = load_record(stem)
    weights_path = stem.with_name(stem.name + ".safetensors")
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file missing")
    model = create_model(
        record["model"],
        in_channels=record.get("in_channels", 3),
        num_classes=record.get("num_classes", 1),
        **record["model_kwargs"],
    )
    try:
        model.load_state_dict(load_file(str(weights_path), device=map_location))
    except RuntimeError as err:
        raise CheckpointError(f"{weights_path}: weights do not match model {record['model']!r}: {err}") from err
    return model.eval(), record
