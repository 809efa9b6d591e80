"""Checkpoints as safetensors weights + a JSON record, and the pretrained models shipped in the package.

Loading never unpickles and never touches the network.

A checkpoint ``<stem>`` is two files: ``<stem>.safetensors`` (model weights) and ``<stem>.json`` (model name and
kwargs, input size, normalisation, threshold, training config, metrics). The resumable training state adds
``<stem>.state.safetensors`` (optimiser tensors, RNG state) whose non-tensor structure lives in the JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ._registry import build_model

__all__ = [
    "CheckpointError",
    "PretrainedInfo",
    "list_pretrained",
    "pretrained_stem",
    "load_pretrained",
    "create_model",
    "model_card",
    "resolve_checkpoint",
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
    model = build_model(
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


# ------------------------------------------------------------------------------------------------ shipped weights
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class PretrainedInfo:
    """One shipped model: ``<tag>.safetensors`` + ``<tag>.json`` (record) + ``<tag>.md`` (model card).

    Attributes:
        tag: the name users pass (``skin``, ``polyp``).
        model: registered model name the weights belong to.
        title: one line saying what it segments.
        dataset: training data and split.
        metrics: headline test metrics from the record (``{"native": {...}, "working": {...}}``).
        stem: checkpoint stem inside the package.
    """

    tag: str
    model: str
    title: str
    dataset: str
    metrics: dict[str, Any]
    stem: Path

    @property
    def card_path(self) -> Path:
        return self.stem.with_suffix(".md")


def list_pretrained() -> dict[str, PretrainedInfo]:
    """The shipped pretrained models by tag (read from the package's ``weights/`` folder)."""
    out: dict[str, PretrainedInfo] = {}
    for rec_path in sorted(WEIGHTS_DIR.glob("*.json")):
        record = load_record(rec_path)
        info = record.get("pretrained", {})
        tag = info.get("tag", rec_path.stem)
        out[tag] = PretrainedInfo(
            tag=tag,
            model=record["model"],
            title=info.get("title", ""),
            dataset=info.get("dataset", ""),
            metrics=info.get("test_metrics", {}),
            stem=rec_path.with_suffix(""),
        )
    return out


def pretrained_stem(tag: str) -> Path:
    """Checkpoint stem of a shipped model.

    Raises:
        ValueError: unknown tag; the message lists the shipped ones.
    """
    shipped = list_pretrained()
    if tag not in shipped:
        known = ", ".join(sorted(shipped)) or "none"
        raise ValueError(f"no pretrained model {tag!r}; shipped: {known}")
    return shipped[tag].stem


def load_pretrained(tag: str, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A shipped model (eval mode) and its record."""
    return load_model(pretrained_stem(tag), map_location=map_location)


def create_model(
    name: str, in_channels: int = 3, num_classes: int = 1, pretrained: str | None = None, **kwargs: Any
) -> nn.Module:
    """Build a registered model by name, optionally with shipped weights (``lesionseg.create_model``).

    Args:
        name: registered factory name (see ``list_models()``).
        in_channels: input image channels (3 for RGB, 1 for grayscale).
        num_classes: output logit channels (1 for binary lesion segmentation).
        pretrained: tag of shipped weights for this model (``"skin"``, ``"polyp"``; see :func:`list_pretrained`); the
            architecture options come from the weights' record and ``kwargs`` must not contradict them. Nothing is
            downloaded.
        **kwargs: architecture options forwarded to the factory (module switches, widths).

    Raises:
        ValueError: for an unknown name (the message lists the known ones), an unknown tag, or weights that belong
            to another model or another input/output shape.
    """
    if pretrained is None:
        return build_model(name, in_channels=in_channels, num_classes=num_classes, **kwargs)
    model, record = load_pretrained(pretrained)
    expected = {
        "model": (record["model"], name),
        "in_channels": (record.get("in_channels", 3), in_channels),
        "num_classes": (record.get("num_classes", 1), num_classes),
    }
    expected.update({k: (record["model_kwargs"].get(k), v) for k, v in kwargs.items()})
    clashes = [f"{k}={want!r} (weights: {have!r})" for k, (have, want) in expected.items() if have != want]
    if clashes:
        raise ValueError(f"pretrained {pretrained!r} does not fit {name}: {', '.join(clashes)}")
    return model.train()


def model_card(tag: str) -> str:
    """The model card (Markdown) of a shipped model."""
    path = pretrained_stem(tag).with_suffix(".md")
    return path.read_text() if path.is_file() else f"(no model card for {tag!r})\n"


def resolve_checkpoint(name: str | Path) -> Path:
    """Checkpoint stem of a shipped tag (``skin``) or of a checkpoint path (stem, file or run folder).

    A path that exists wins over a tag of the same name.
    """
    path = Path(name)
    if path.exists() or path.with_name(path.name + ".json").exists():
        return checkpoint_stem(path)
    if str(name) in list_pretrained():
        return pretrained_stem(str(name))
    raise ValueError(
        f"{name}: neither a checkpoint (stem, .json, .safetensors or run folder) nor a shipped model "
        f"({', '.join(sorted(list_pretrained())) or 'none shipped'})"
    )
