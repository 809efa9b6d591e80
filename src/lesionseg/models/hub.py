"""Checkpoints as safetensors weights + a typed JSON record, and the pretrained models shipped in the package.

Loading never unpickles and never touches the network.

A checkpoint ``<stem>`` is two files: ``<stem>.safetensors`` (model weights) and ``<stem>.json`` (its
:class:`ModelRecord`: model name and kwargs, input size, normalisation, threshold, post-processing, training config,
provenance, metrics). The resumable training state adds ``<stem>.state.safetensors`` (optimiser tensors, RNG state)
whose non-tensor structure lives in the record. The record is read and written here only: every other module uses its
typed fields.

The record, its reading and the shipped models' listing need neither torch nor safetensors' torch bindings (the
onnxruntime predictor reads records without them); the functions that touch weights import torch when called.
"""

from __future__ import annotations

import difflib
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ._registry import build_model

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "DataSource",
    "ModelRecord",
    "PostProcessing",
    "QualityFit",
    "ShippedInfo",
    "TrainingImages",
    "TrainedOn",
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


# ------------------------------------------------------------------------------------------------ the record
class _RecordPart:
    """JSON object <-> frozen dataclass, field by field, for :class:`ModelRecord` and its parts.

    A field without a default is a required key. A field whose default is None is optional: left out of the JSON
    while None, None when the key is absent. A field may name its JSON key (``metadata={"key": ...}``). Values keep
    their JSON types (an ``int`` threshold stays an ``int``) so that a record read and written back is the same text.
    Adding a field is all a new feature needs; older records without the key still read.
    """

    # Required keys that are no field (the record's format_version, checked by the subclass).
    _meta_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _keys(cls) -> dict[str, Field[Any]]:
        """The fields by JSON key."""
        return {f.metadata.get("key", f.name): f for f in fields(cls)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (keys in field order; optional fields that are None left out)."""
        out: dict[str, Any] = {}
        for key, f in self._keys().items():
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            out[key] = _to_json(value)
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "record", where: str | None = None):
        """Read a JSON object; unknown and missing keys are refused by name.

        Args:
            data: the parsed JSON object.
            source: what the object came from (a file name), first in every error message.
            where: the key path of a nested part (None for the record itself).

        Raises:
            CheckpointError: not an object, unknown or missing keys, or a value of the wrong type or range.
        """
        place = f"{source}: {where}" if where else source
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{place}: expected a JSON object, got {type(data).__name__}")
        keys = cls._keys()
        problems = []
        for key in sorted(set(data) - set(keys) - set(cls._meta_keys)):
            close = difflib.get_close_matches(key, list(keys), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {key!r}{hint}")
        missing = [
            k for k, f in keys.items() if k not in data and f.default is MISSING and f.default_factory is MISSING
        ]
        missing += [k for k in cls._meta_keys if k not in data]
        if missing:
            problems.append(
                "missing required key" + ("s " if len(missing) > 1 else " ") + ", ".join(map(repr, missing))
            )
        if problems:
            what = f"in {where!r}" if where else "in the record"
            raise CheckpointError(f"{source}: {'; '.join(problems)} {what}")
        hints = typing.get_type_hints(cls)
        values = {}
        for key, f in keys.items():
            if key in data:
                path = f"{where}.{key}" if where else key
                values[f.name] = _from_json(data[key], hints[f.name], source, path)
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{place}: {err}") from err


def _to_json(value: Any) -> Any:
    if isinstance(value, _RecordPart):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any, hint: Any, source: str, path: str) -> Any:
    """``value`` checked against the type ``hint`` (lists become tuples, objects become record parts)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, _RecordPart):
        return hint.from_dict(value, source, path)
    expected = origin or hint
    if expected is tuple:
        if not isinstance(value, list) or (Ellipsis not in args and len(value) != len(args)):
            size = "a list" if Ellipsis in args else f"a list of {len(args)}"
            raise CheckpointError(f"{source}: {path}: expected {size}, got {json.dumps(value)}")
        item_hints = [args[0]] * len(value) if Ellipsis in args else list(args)
        return tuple(_from_json(v, h, source, f"{path}[{i}]") for i, (v, h) in enumerate(zip(value, item_hints)))
    accepted = {float: (int, float), dict: (dict,)}.get(expected, (expected,))
    if not isinstance(value, accepted) or (isinstance(value, bool) and expected is not bool):
        raise CheckpointError(f"{source}: {path}: expected {expected.__name__}, got {json.dumps(value)}")
    return dict(value) if expected is dict else value


@dataclass(frozen=True, kw_only=True)
class DataSource(_RecordPart):
    """The data a model was trained on (``dataset`` in the JSON).

    Attributes:
        layout: dataset layout (``ph2``, ``kvasir_seg``, ...); None = detected from the root.
        root: data root on the training machine (None in shipped records: a path there means nothing here).
        split: split name or JSON path the run used.
    """

    layout: str | None
    root: str | None
    split: str | None


@dataclass(frozen=True, kw_only=True)
class TrainedOn(_RecordPart):
    """Where and how a model was trained (``trained_on`` in the JSON; records before 2026-11 lack the last two).

    Attributes:
        device: ``cpu`` or ``cuda``.
        processes: DDP process count.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        gpu: GPU name, None on CPU.
        machine: one-line description of the machine.
        lesionseg_commit: git commit of the code that trained it (``-dirty`` for local changes).
    """

    device: str
    processes: int
    precision: str
    gpu: str | None
    machine: str | None = None
    lesionseg_commit: str | None = None


@dataclass(frozen=True, kw_only=True)
class PostProcessing(_RecordPart):
    """The mask post-processing chosen on the validation ids at the end of training (``postprocess`` in the JSON).

    Attributes:
        steps: step names, applied in order (see :mod:`lesionseg.inference.postprocess`).
        reduction: the validation Dice reduction that decided (``per_image`` or ``global``).
        val_dice: validation Dice of no step (``none``) and of each tried step (``+step``).
    """

    steps: tuple[str, ...]
    reduction: str | None = None
    val_dice: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))


@dataclass(frozen=True, kw_only=True)
class QualityFit(_RecordPart):
    """The per-image quality estimator fitted on the validation ids (``quality`` in the JSON; see
    :class:`lesionseg.inference.trust.QualityEstimator`, which reads it).

    Attributes:
        a: intercept of ``logit(dice) = a + b logit(signal)``.
        b: its slope (> 0).
        low_confidence_below: predicted Dice under which a mask is ``low_confidence``.
        rule: how that cut was chosen (``youden`` or ``dice_0.8``).
        n_fit: validation images fitted on.
        dice_cut: the true Dice below which an image counts as poor.
        signal_temperature: the temperature the quality signal reads the logits at.
    """

    a: float
    b: float
    low_confidence_below: float
    rule: str
    n_fit: int
    dice_cut: float
    signal_temperature: float

    def __post_init__(self) -> None:
        if not self.b > 0:
            raise ValueError(f"quality.b: must be positive, got {self.b}")
        if not 0 < self.low_confidence_below < 1:
            raise ValueError(f"quality.low_confidence_below: must be in (0, 1), got {self.low_confidence_below}")
        if not self.signal_temperature > 0:
            raise ValueError(f"quality.signal_temperature: must be positive, got {self.signal_temperature}")


@dataclass(frozen=True, kw_only=True)
class TrainingImages(_RecordPart):
    """What the training images look like, for out-of-distribution checks (``image_description`` in the JSON; see
    :class:`lesionseg.inference.trust.ImageDescription`, which reads it).

    Attributes:
        features: names of the image statistics.
        center: their mean over the training images.
        scale: their standard deviation.
        precision: inverse shrinkage covariance of the standardised statistics, row by row.
        shrinkage: the Ledoit-Wolf intensity.
        threshold: Mahalanobis distance above which an image is flagged (None: not set).
        n_train: training images described.
        n_val: validation images the threshold was set on.
    """

    features: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    precision: tuple[tuple[float, ...], ...]
    shrinkage: float
    threshold: float | None = None
    n_train: int
    n_val: int

    def __post_init__(self) -> None:
        for name in ("features", "center", "scale", "precision"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "precision", tuple(tuple(row) for row in self.precision))
        k = len(self.features)
        if len(self.center) != k or len(self.scale) != k or len(self.precision) != k:
            raise ValueError(f"image_description: {k} features but center/scale/precision of other lengths")
        if any(len(row) != k for row in self.precision):
            raise ValueError("image_description.precision: not a square matrix")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError(f"image_description.threshold: must be positive, got {self.threshold}")


@dataclass(frozen=True, kw_only=True)
class ShippedInfo(_RecordPart):
    """What ``tools/ship_pretrained.py`` adds to the record of a model shipped in the package (``pretrained``).

    Attributes:
        tag: the name users pass (``skin``, ``polyp``).
        title: one line saying what it segments.
        dataset: training data and split, in words.
        test_metrics: test scores by resolution (``{"working": {...}, "native": {...}}``).
        latency_ms: end-to-end milliseconds for one 768x576 image by backend, and the thread count.
        trained_with: the training command.
        date: shipping date (ISO).
        stored_as: weight storage dtype (``float16`` or ``float32``); older records say nothing (float32).
        trust_test: the trust parts measured on the test ids (ECE before/after, quality Spearman/AUROC,
            out-of-distribution rates; ``tools/refit_trust.py``); older records lack it.
    """

    tag: str
    title: str
    dataset: str
    test_metrics: dict[str, Any]
    latency_ms: dict[str, Any] = field(metadata={"key": "latency_ms_768x576"})
    trained_with: str
    date: str
    stored_as: str | None = None
    trust_test: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class ModelRecord(_RecordPart):
    """Everything known about a trained model besides its weights: how to build it, feed it and read its output,
    and where it came from (as timm's ``PretrainedCfg`` describes a pretrained model).

    Read with :meth:`from_json` / :func:`load_record`, written by :func:`save_checkpoint`. The JSON carries a
    ``format_version``; a record of a newer format is refused, older ones are read as they are.

    Attributes:
        model: registered model name.
        model_kwargs: the factory's architecture options.
        in_channels: input channels (3 RGB, 1 grayscale).
        num_classes: output logit channels.
        image_size: working size (H, W) the model was trained at.
        mean: normalisation mean in [0, 1] units, per channel.
        std: normalisation std in [0, 1] units, per channel.
        threshold: probability threshold of the binary mask, in (0, 1).
        dataset: the training data.
        epoch: the epoch the weights are from.
        step: the optimiser step the weights are from.
        metrics: validation scores of that epoch (``{"val": {...}}``).
        trained_on: device, processes, precision, machine and commit of the training run.
        config: the resolved training config.
        finished: whether the run had finished (the resumable ``last`` checkpoint).
        elapsed_seconds: training seconds so far (``last``).
        state: the non-tensor structure of the resumable training state (``last``; see :func:`load_state`).
        postprocess: the post-processing chosen on the validation ids.
        temperature: calibration temperature fitted on the validation ids (logits / T before the sigmoid; the mask
            keeps ``threshold``'s meaning at T = 1); None = 1 (records before 2026-12).
        quality: the per-image quality estimator fitted on the validation ids (None: no ``predicted_dice``).
        image_description: the training images' description and threshold (None: no out-of-distribution check).
        trust_validation: the validation figures of that fit (ECE before/after, Spearman, flag rate).
        pretrained: what shipping added (shipped models only).
    """

    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 3
    num_classes: int = 1
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float = 0.5
    dataset: DataSource | None = None
    epoch: int | None = None
    step: int | None = None
    metrics: dict[str, Any] | None = None
    trained_on: TrainedOn | None = None
    config: dict[str, Any] | None = None
    finished: bool | None = None
    elapsed_seconds: float | None = None
    state: dict[str, Any] | None = None
    postprocess: PostProcessing | None = None
    temperature: float | None = None
    quality: QualityFit | None = None
    image_description: TrainingImages | None = None
    trust_validation: dict[str, Any] | None = None
    pretrained: ShippedInfo | None = None

    _meta_keys: ClassVar[tuple[str, ...]] = ("format_version",)
    # ``format_version`` goes where save_checkpoint has always put it: before what is added to a saved record.
    _VERSION_BEFORE: ClassVar[tuple[str, ...]] = ("state", "postprocess", "pretrained")

    def __post_init__(self) -> None:
        # Sequences given as lists (a config's values) are kept as tuples: the record is immutable.
        for name in ("image_size", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.model:
            raise ValueError("model: empty model name")
        for name in ("in_channels", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if len(self.image_size) != 2 or any(s < 1 for s in self.image_size):
            raise ValueError(f"image_size: expected two positive sizes (H, W), got {list(self.image_size)}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.in_channels and not (self.in_channels == 1 and values):
                raise ValueError(f"{name}: {len(values)} values for {self.in_channels} input channels")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std: must be positive, got {list(self.std)}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold: must be in (0, 1), got {self.threshold}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature: must be positive, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, with ``format_version``."""
        items = list(super().to_dict().items())
        at = next((i for i, (k, _) in enumerate(items) if k in self._VERSION_BEFORE), len(items))
        items.insert(at, ("format_version", FORMAT_VERSION))
        return dict(items)

    @classmethod
    def from_dict(cls, data: Any, source: str = "record", where: str | None = None) -> ModelRecord:
        """Read a record's JSON object (see :meth:`_RecordPart.from_dict`); ``format_version`` is required.

        Raises:
            CheckpointError: unknown or missing keys, bad values, or a format newer than :data:`FORMAT_VERSION`.
        """
        if isinstance(data, Mapping) and "format_version" in data:
            version = data["format_version"]
            if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
                raise CheckpointError(
                    f"{source}: format_version {version!r} is not one this lesionseg reads (1 to {FORMAT_VERSION}); "
                    "a newer lesionseg wrote it"
                )
        return super().from_dict(data, source, where)

    def to_json(self) -> str:
        """The record's file text (indent 1, one trailing newline)."""
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "record") -> ModelRecord:
        """Parse a record's file text; ``source`` (the file) is named in every error.

        Raises:
            CheckpointError: not JSON, or not a valid record.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{source}: corrupt checkpoint record ({err})") from err
        return cls.from_dict(data, source)


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
    import torch

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
    record: ModelRecord,
    state: dict[str, Any] | None = None,
) -> Path:
    """Write ``<stem>.safetensors`` + ``<stem>.json`` (+ ``<stem>.state.safetensors`` when ``state`` is given).

    Args:
        stem: path without suffix.
        model: the model whose ``state_dict`` is saved.
        record: the model's record (its ``state`` is replaced by the packed ``state``).
        state: resumable training state (optimiser state dict, counters, RNG), tensors allowed anywhere.

    Returns:
        The stem.
    """
    from safetensors.torch import save_file

    if not isinstance(record, ModelRecord):
        raise TypeError(f"save_checkpoint needs a ModelRecord, got {type(record).__name__}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if state is not None:
        tensors: dict[str, torch.Tensor] = {}
        record = replace(record, state=pack_state(state, "state", tensors))
        _atomic_write(stem.with_name(stem.name + ".state.safetensors"), lambda p: save_file(tensors, str(p)))
    _atomic_write(stem.with_name(stem.name + ".safetensors"), lambda p: save_file(weights, str(p)))
    # The record goes last: a record on disk means its weights are complete.
    text = record.to_json()
    _atomic_write(stem.with_name(stem.name + ".json"), lambda p: p.write_text(text))
    return stem


def load_record(path: str | Path) -> ModelRecord:
    """The record of a checkpoint (training state left packed).

    Raises:
        CheckpointError: no record, or one that is corrupt or invalid (the message names the file and the keys).
    """
    stem = checkpoint_stem(path)
    rec_path = stem.with_name(stem.name + ".json")
    if not rec_path.is_file():
        raise CheckpointError(f"{rec_path}: no checkpoint record (expected <stem>.json beside <stem>.safetensors)")
    return ModelRecord.from_json(rec_path.read_text(), str(rec_path))


def load_state(path: str | Path, record: ModelRecord) -> dict[str, Any]:
    """The resumable training state of a checkpoint written with ``state``."""
    from safetensors.torch import load_file

    stem = checkpoint_stem(path)
    state_path = stem.with_name(stem.name + ".state.safetensors")
    if record.state is None or not state_path.is_file():
        raise CheckpointError(f"{stem}: no training state to resume from")
    return unpack_state(record.state, load_file(str(state_path)))


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, ModelRecord]:
    """Rebuild the model of a checkpoint from its record and load its weights (eval mode).

    Raises:
        CheckpointError: a file is missing, the record is invalid, or the weights do not fit the recorded model.
    """
    from safetensors.torch import load_file

    stem = checkpoint_stem(path)
    record = load_record(stem)
    weights_path = stem.with_name(stem.name + ".safetensors")
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file missing")
    model = build_model(
        record.model, in_channels=record.in_channels, num_classes=record.num_classes, **record.model_kwargs
    )
    try:
        model.load_state_dict(load_file(str(weights_path), device=map_location))
    except RuntimeError as err:
        raise CheckpointError(f"{weights_path}: weights do not match model {record.model!r}: {err}") from err
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
        info = record.pretrained
        tag = info.tag if info else rec_path.stem
        out[tag] = PretrainedInfo(
            tag=tag,
            model=record.model,
            title=info.title if info else "",
            dataset=info.dataset if info else "",
            metrics=info.test_metrics if info else {},
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


def load_pretrained(tag: str, map_location: str = "cpu") -> tuple[nn.Module, ModelRecord]:
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
        "model": (record.model, name),
        "in_channels": (record.in_channels, in_channels),
        "num_classes": (record.num_classes, num_classes),
    }
    expected.update({k: (record.model_kwargs.get(k), v) for k, v in kwargs.items()})
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
