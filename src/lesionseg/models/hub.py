"""Checkpoints as safetensors weights + a typed JSON record, and the pretrained models shipped in the package.

Loading never unpickles and never touches the network.

A checkpoint ``<stem>`` is two files: ``<stem>.safetensors`` (model weights) and ``<stem>.json`` (its
:class:`ModelRecord`: model name and kwargs, input size, normalisation, threshold, post-processing, training config,
provenance, metrics). The resumable training state adds ``<stem>.state.safetensors`` (optimiser tensors, RNG state)
whose non-tensor structure lives in the record. The record is read and written here only: every other module uses its
typed fields.

Every file is written under a temporary name and renamed when whole, the record last; the record names the sha256 of
the weights (and state) it belongs to, so that a checkpoint whose files come from two different saves (a run killed
while writing) or a damaged file is refused by name instead of loaded. Loading validates every record field, the
model name and its options against the model's constructor, and the weights (finite, floating where the model's are).

An ensemble is one more record, ``<stem>.json`` with ``"kind": "ensemble"`` (:class:`EnsembleRecord`), listing member
checkpoints by path relative to it and the sha256 of each member's record; :func:`load_record`, :func:`load_model`,
:func:`resolve_checkpoint` and the shipped tags take it where they take a checkpoint (:func:`save_ensemble` writes
one; :class:`~lesionseg.models.ensemble.EnsembleModel` runs it).

The record, its reading and the shipped models' listing need neither torch nor safetensors' torch bindings (the
onnxruntime predictor reads records without them); the functions that touch weights import torch when called.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..registry import suggest
from ._registry import build_model, check_model_options

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "DataSource",
    "ENSEMBLE_FORMAT_VERSION",
    "EnsembleMember",
    "EnsembleRecord",
    "FileChecksums",
    "MAX_IMAGE_SIDE",
    "ModelRecord",
    "PostProcessing",
    "QualityCurve",
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
    "build_recorded_model",
    "check_weights",
    "load_record",
    "load_ensemble_members",
    "load_model",
    "save_ensemble",
    "write_ensemble_record",
    "load_state",
    "load_weights",
    "checkpoint_stem",
    "pack_state",
    "unpack_state",
    "file_sha256",
]

FORMAT_VERSION = 1

#: Format of an ensemble record (``"kind": "ensemble"``), versioned apart from :data:`FORMAT_VERSION`.
ENSEMBLE_FORMAT_VERSION = 1

#: How an ensemble combines its members' probabilities.
ENSEMBLE_COMBINE = ("mean", "weights")

#: Largest working side a record may name: beyond it a single image would take gigabytes before the model runs.
MAX_IMAGE_SIDE = 4096

_logger = logging.getLogger(__name__)


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
            close = suggest(key, list(keys), n=1)
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
class QualityCurve(_RecordPart):
    """One fitted curve of the per-image quality estimator (see :class:`lesionseg.inference.trust.QualityEstimator`,
    which reads it), for one prediction mode.

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
            raise ValueError(f"b: must be positive, got {self.b}")
        if not 0 < self.low_confidence_below < 1:
            raise ValueError(f"low_confidence_below: must be in (0, 1), got {self.low_confidence_below}")
        if not self.signal_temperature > 0:
            raise ValueError(f"signal_temperature: must be positive, got {self.signal_temperature}")


@dataclass(frozen=True, kw_only=True)
class QualityFit(_RecordPart):
    """The per-image quality estimator fitted on the validation ids (``quality`` in the JSON), one curve per
    prediction mode: ``single`` for the plain pass alone (the default), ``flip`` for the plain and two flipped passes
    (``tta``). Each is fitted on the signal of its own mode, with its own ``low_confidence`` cut.

    A record written before the modes existed holds one curve at the top level of ``quality``; it was fitted on the
    three passes and reads as the ``flip`` curve.

    Attributes:
        single: the curve of one-pass predictions (None: not fitted).
        flip: the curve of flip-averaged predictions (None: not fitted).
    """

    single: QualityCurve | None = None
    flip: QualityCurve | None = None

    def __post_init__(self) -> None:
        if self.single is None and self.flip is None:
            raise ValueError("quality: no curve (expected 'single', 'flip' or both)")

    @classmethod
    def from_dict(cls, data: Any, source: str = "record", where: str | None = None) -> QualityFit:
        """Read ``quality``; an object with the curve's keys at its top level is a one-curve record (``flip``)."""
        if isinstance(data, Mapping) and "a" in data:
            return cls(flip=QualityCurve.from_dict(data, source, where))
        return super().from_dict(data, source, where)

    def curve(self, mode: str) -> QualityCurve | None:
        """The curve of ``mode`` (``single`` or ``flip``), None when it was not fitted."""
        if mode not in ("single", "flip"):
            raise ValueError(f"quality mode must be 'single' or 'flip', got {mode!r}")
        return self.single if mode == "single" else self.flip


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
class FileChecksums(_RecordPart):
    """The sha256 (hex) of the files a record belongs to (``sha256`` in the JSON), written by :func:`save_checkpoint`.

    Keyed by role, not by file name, so that a checkpoint copied under another stem still checks. Records written
    before checksums existed have none and load as before.

    Attributes:
        weights: sha256 of ``<stem>.safetensors``.
        state: sha256 of ``<stem>.state.safetensors`` (resumable checkpoints only).
    """

    weights: str
    state: str | None = None

    def __post_init__(self) -> None:
        for name in ("weights", "state"):
            value = getattr(self, name)
            if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
                raise ValueError(f"{name}: not a sha256 hex digest: {value!r}")


def _check_input(record: ModelRecord | EnsembleRecord, finite: bool) -> None:
    """The working size and normalisation a record (model or ensemble) feeds its network, checked alike."""
    if len(record.image_size) != 2 or any(not 8 <= s <= MAX_IMAGE_SIDE for s in record.image_size):
        raise ValueError(
            f"image_size: expected two sizes (H, W) between 8 and {MAX_IMAGE_SIDE}, got {list(record.image_size)}"
        )
    for name in ("mean", "std"):
        values = getattr(record, name)
        if len(values) != record.in_channels and not (record.in_channels == 1 and values):
            raise ValueError(f"{name}: {len(values)} values for {record.in_channels} input channels")
        if finite and not all(math.isfinite(v) for v in values):
            raise ValueError(f"{name}: must be finite numbers, got {list(values)}")
    if any(s <= 0 for s in record.std):
        raise ValueError(f"std: must be positive (it divides the image), got {list(record.std)}")


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
        sha256: checksums of the weights and state files this record belongs to (None in older records).
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
    sha256: FileChecksums | None = None

    _meta_keys: ClassVar[tuple[str, ...]] = ("format_version",)
    # ``format_version`` goes where save_checkpoint has always put it: before what is added to a saved record.
    _VERSION_BEFORE: ClassVar[tuple[str, ...]] = ("state", "postprocess", "pretrained", "sha256")

    def __post_init__(self) -> None:
        # Sequences given as lists (a config's values) are kept as tuples: the record is immutable.
        for name in ("image_size", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.model:
            raise ValueError("model: empty model name")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels: must be 1 (grayscale) or 3 (RGB), got {self.in_channels}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes: must be at least 1, got {self.num_classes}")
        _check_input(self, finite=True)
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold: must be in (0, 1), got {self.threshold}")
        for name in ("epoch", "step"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}: must be >= 0, got {value}")
        if self.elapsed_seconds is not None and not (math.isfinite(self.elapsed_seconds) and self.elapsed_seconds >= 0):
            raise ValueError(f"elapsed_seconds: must be a finite number >= 0, got {self.elapsed_seconds}")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
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


@dataclass(frozen=True, kw_only=True)
class EnsembleMember(_RecordPart):
    """One member of an ensemble record (``members[i]`` in the JSON).

    Attributes:
        path: the member checkpoint's stem, relative to the ensemble record's folder (POSIX separators).
        sha256: sha256 of the member's record file (``<stem>.json``), which itself names its weights' checksum: a
            member retrained or replaced since the ensemble was made is refused.
        weight: its weight in the combination (``combine: weights``; None with ``mean``).
    """

    path: str
    sha256: str
    weight: float | None = None

    def __post_init__(self) -> None:
        if not self.path or Path(self.path).is_absolute():
            raise ValueError(f"path: must be relative to the ensemble record, got {self.path!r}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"sha256: not a sha256 hex digest: {self.sha256!r}")
        if self.weight is not None and not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"weight: must be a finite number >= 0, got {self.weight}")


@dataclass(frozen=True, kw_only=True)
class EnsembleRecord(_RecordPart):
    """An ensemble of checkpoints used as one model: ``<stem>.json`` with ``"kind": "ensemble"`` and no weights file
    of its own (the members' are theirs). Accepted wherever a checkpoint is (:func:`load_record`,
    :func:`load_model`, :func:`resolve_checkpoint`, shipped tags); :class:`lesionseg.models.ensemble.EnsembleModel`
    runs it.

    The ensemble's input is an image at its own working size normalised with its own ``mean``/``std``; each member
    sees it resized to its own size and normalised its own way, and its probability is resized back and combined.
    The ensemble's settings (threshold, post-processing, temperature, quality curves) are its own, fitted on the
    combined probabilities (:mod:`lesionseg.inference.ensemble_fit`), like a :class:`ModelRecord`'s.

    Attributes:
        members: the member checkpoints (at least two), ensembles not allowed.
        combine: ``mean`` (equal weights) or ``weights`` (each member's ``weight``, normalised to sum 1).
        image_size: working size (H, W) of the combined probability.
        mean: normalisation mean of the ensemble's input, [0, 1] units.
        std: normalisation std of the ensemble's input.
        in_channels: input channels (every member's).
        num_classes: output channels (1).
        threshold, postprocess, temperature, quality, image_description, trust_validation, metrics, dataset,
            pretrained: as in :class:`ModelRecord`, for the combined probability.
        oof: how the settings were fitted (OOF files, case count), None before fitting.
    """

    members: tuple[EnsembleMember, ...]
    combine: str = "mean"
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_channels: int = 3
    num_classes: int = 1
    threshold: float = 0.5
    dataset: DataSource | None = None
    metrics: dict[str, Any] | None = None
    postprocess: PostProcessing | None = None
    temperature: float | None = None
    quality: QualityFit | None = None
    image_description: TrainingImages | None = None
    trust_validation: dict[str, Any] | None = None
    oof: dict[str, Any] | None = None
    pretrained: ShippedInfo | None = None

    _meta_keys: ClassVar[tuple[str, ...]] = ("kind", "format_version")

    # What a ModelRecord has and an ensemble has not, read the same way by code that takes either.
    model: ClassVar[str] = "ensemble"
    model_kwargs: ClassVar[dict[str, Any]] = {}
    config: ClassVar[dict[str, Any] | None] = None
    state: ClassVar[dict[str, Any] | None] = None
    sha256: ClassVar[FileChecksums | None] = None

    def __post_init__(self) -> None:
        for name in ("members", "image_size", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.members) < 2:
            raise ValueError(f"members: an ensemble needs at least two members, got {len(self.members)}")
        if self.combine not in ENSEMBLE_COMBINE:
            raise ValueError(f"combine: must be one of {ENSEMBLE_COMBINE}, got {self.combine!r}")
        weights = [m.weight for m in self.members]
        if self.combine == "weights" and (None in weights or not sum(w for w in weights if w) > 0):
            raise ValueError("combine 'weights': every member needs a weight, and they must not all be 0")
        if self.combine == "mean" and any(w is not None for w in weights):
            raise ValueError("combine 'mean': members must not carry weights (use combine 'weights')")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels: must be 1 (grayscale) or 3 (RGB), got {self.in_channels}")
        if self.num_classes != 1:
            raise ValueError(f"num_classes: ensembles combine one foreground probability, got {self.num_classes}")
        _check_input(self, finite=False)
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold: must be in (0, 1), got {self.threshold}")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature: must be positive, got {self.temperature}")

    def member_weights(self) -> tuple[float, ...]:
        """Each member's weight in the combination, summing to 1."""
        raw = [1.0 if self.combine == "mean" else float(m.weight or 0.0) for m in self.members]
        total = sum(raw)
        return tuple(w / total for w in raw)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, ``kind`` and ``format_version`` first."""
        return {"kind": "ensemble", "format_version": ENSEMBLE_FORMAT_VERSION, **super().to_dict()}

    @classmethod
    def from_dict(cls, data: Any, source: str = "record", where: str | None = None) -> EnsembleRecord:
        """Read an ensemble record's JSON object; ``kind`` must be ``ensemble`` and the format one this reads.

        Raises:
            CheckpointError: unknown or missing keys, bad values, or a format newer than
                :data:`ENSEMBLE_FORMAT_VERSION`.
        """
        if isinstance(data, Mapping):
            if data.get("kind", "ensemble") != "ensemble":
                raise CheckpointError(f"{source}: kind {data['kind']!r} is not 'ensemble'")
            version = data.get("format_version", 1)
            if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= ENSEMBLE_FORMAT_VERSION:
                raise CheckpointError(
                    f"{source}: ensemble format_version {version!r} is not one this lesionseg reads (1 to "
                    f"{ENSEMBLE_FORMAT_VERSION}); a newer lesionseg wrote it"
                )
        return super().from_dict(data, source, where)

    def to_json(self) -> str:
        """The record's file text (indent 1, one trailing newline)."""
        return json.dumps(self.to_dict(), indent=1) + "\n"


def _parse_record(text: str, source: str) -> ModelRecord | EnsembleRecord:
    """A checkpoint record's text: an :class:`EnsembleRecord` when it says ``"kind": "ensemble"``, else a
    :class:`ModelRecord`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{source}: corrupt checkpoint record ({err})") from err
    if isinstance(data, Mapping) and "kind" in data:
        if data["kind"] != "ensemble":
            raise CheckpointError(f"{source}: unknown record kind {data['kind']!r} (expected 'ensemble' or none)")
        return EnsembleRecord.from_dict(data, source)
    return ModelRecord.from_dict(data, source)


def checkpoint_stem(path: str | Path) -> Path:
    """``runs/x/best`` from ``runs/x/best``, ``best.json`` or ``best.safetensors``; a run folder means its best.

    A folder with a record of its name beside it and no ``best`` inside (a shipped ensemble ``weights/<tag>.json``,
    its members in ``weights/<tag>/``) is that record's stem.
    """
    path = Path(path)
    if path.is_dir():
        inside = (path / "best").with_suffix(".json").is_file()
        path = path if not inside and path.with_name(path.name + ".json").is_file() else path / "best"
    for suffix in (".state.safetensors", ".safetensors", ".json"):
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_tmp(path: Path, write) -> Path:
    """``write`` to a temporary name beside ``path`` (same folder, so the rename is atomic); the temporary file is
    removed if writing fails (a full disk), and the error names ``path``.

    Raises:
        OSError: the file could not be written; nothing partial is left.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        reason = str(err).strip() or type(err).__name__
        raise OSError(f"{path}: could not write ({reason}); nothing partial was left") from err
    return tmp


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

    Each file is written under a temporary name and renamed when whole; the record goes last and names the sha256 of
    the weights (and state) it was written with, so that files of two saves (a kill between two renames) are told
    apart on load.

    Args:
        stem: path without suffix.
        model: the model whose ``state_dict`` is saved.
        record: the model's record (its ``state`` is replaced by the packed ``state``, its ``sha256`` by the new
            files' checksums).
        state: resumable training state (optimiser state dict, counters, RNG), tensors allowed anywhere.

    Returns:
        The stem.

    Raises:
        OSError: a file could not be written (a full disk); the message names it and no temporary file is left.
    """
    from safetensors.torch import save_file

    if not isinstance(record, ModelRecord):
        raise TypeError(f"save_checkpoint needs a ModelRecord, got {type(record).__name__}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    written: list[tuple[Path, Path]] = []
    try:
        state_sha = None
        if state is not None:
            tensors: dict[str, torch.Tensor] = {}
            record = replace(record, state=pack_state(state, "state", tensors))
            path = stem.with_name(stem.name + ".state.safetensors")
            tmp = _write_tmp(path, lambda p: save_file(tensors, str(p)))
            written.append((tmp, path))
            state_sha = file_sha256(tmp)
        path = stem.with_name(stem.name + ".safetensors")
        tmp = _write_tmp(path, lambda p: save_file(weights, str(p)))
        written.append((tmp, path))
        record = replace(record, sha256=FileChecksums(weights=file_sha256(tmp), state=state_sha))
        text = record.to_json()
        path = stem.with_name(stem.name + ".json")
        written.append((_write_tmp(path, lambda p: p.write_text(text)), path))
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    # Every file is whole on disk: rename, the record last. A kill in between leaves a record whose checksums do
    # not match the renamed files, which loading refuses.
    for tmp, path in written:
        os.replace(tmp, path)
    return stem


def load_record(path: str | Path) -> ModelRecord | EnsembleRecord:
    """The record of a checkpoint (training state left packed), or of an ensemble (``"kind": "ensemble"``).

    Raises:
        CheckpointError: no record, or one that is corrupt or invalid (the message names the file and the keys).
    """
    stem = checkpoint_stem(path)
    rec_path = stem.with_name(stem.name + ".json")
    if not rec_path.is_file():
        raise CheckpointError(f"{rec_path}: no checkpoint record (expected <stem>.json beside <stem>.safetensors)")
    try:
        text = rec_path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{rec_path}: unreadable checkpoint record ({err})") from err
    return _parse_record(text, str(rec_path))


def _read_tensors(path: Path, expected_sha: str | None, record_path: Path, device: str = "cpu") -> dict[str, Any]:
    """The tensors of a safetensors file, refused by name when missing, damaged or not the record's."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: file missing (the record {record_path.name} needs it)")
    if expected_sha is not None:
        actual = file_sha256(path)
        if actual != expected_sha:
            raise CheckpointError(
                f"{path}: does not belong to {record_path.name} (sha256 {actual[:12]}..., the record names "
                f"{expected_sha[:12]}...): the file was changed or damaged, or comes from another save (a run killed "
                "while writing its checkpoint)"
            )
    try:
        return load_file(str(path), device=device)
    except Exception as err:  # safetensors raises its own error type for every malformed file
        reason = str(err).strip() or type(err).__name__
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({reason})") from err


def load_state(path: str | Path, record: ModelRecord) -> dict[str, Any]:
    """The resumable training state of a checkpoint written with ``state``.

    Raises:
        CheckpointError: no state, a missing or damaged state file, or one that is not the record's (checksum).
    """
    stem = checkpoint_stem(path)
    state_path = stem.with_name(stem.name + ".state.safetensors")
    rec_path = stem.with_name(stem.name + ".json")
    if record.state is None or not state_path.is_file():
        raise CheckpointError(f"{stem}: no training state to resume from")
    tensors = _read_tensors(state_path, record.sha256.state if record.sha256 else None, rec_path)
    try:
        return unpack_state(record.state, tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{rec_path}: state: does not match {state_path.name} ({err!r})") from err


def check_weights(weights: Mapping[str, torch.Tensor], model: nn.Module, source: str | Path) -> None:
    """Refuse weights that would load but predict nonsense: non-floating tensors where the model's are floating
    (integer-cast weights), and NaN or infinite values.

    Raises:
        CheckpointError: the message names ``source`` and the first bad tensor.
    """
    import torch

    expected = model.state_dict()
    for key, value in weights.items():
        want = expected.get(key)
        if want is None or not want.is_floating_point():
            continue
        if not value.is_floating_point():
            raise CheckpointError(f"{source}: tensor {key!r} is {value.dtype}, the model's is {want.dtype}")
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{source}: tensor {key!r} holds NaN or infinite values")


def build_recorded_model(record: ModelRecord, source: str | Path = "record") -> nn.Module:
    """The (untrained) model a record describes; an unknown model or option is refused naming ``source``.

    Raises:
        CheckpointError: unknown model name, unknown option, or options the constructor refuses.
    """
    try:
        problem = check_model_options(record.model, record.model_kwargs)
    except ValueError as err:
        raise CheckpointError(f"{source}: model: {err}") from err
    if problem:
        raise CheckpointError(f"{source}: model_kwargs: {problem}")
    try:
        return build_model(
            record.model, in_channels=record.in_channels, num_classes=record.num_classes, **record.model_kwargs
        )
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{source}: model_kwargs: model {record.model!r} refuses them ({err})") from err


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, ModelRecord | EnsembleRecord]:
    """Rebuild the model of a checkpoint from its record and load its weights (eval mode); an ensemble record gives
    an :class:`~lesionseg.models.ensemble.EnsembleModel` over its members, each checked as a checkpoint is.

    Raises:
        CheckpointError: a file is missing, damaged or not the record's (checksum), the record is invalid (unknown
            model or options), or the weights do not fit the recorded model or are not finite floating tensors.
    """
    stem = checkpoint_stem(path)
    record = load_record(stem)
    if isinstance(record, EnsembleRecord):
        from .ensemble import EnsembleModel

        found = load_ensemble_members(stem, record)
        members = [load_model(m_stem, map_location)[0] for m_stem, _ in found]
        return EnsembleModel.from_records(members, [r for _, r in found], record).eval(), record
    weights_path = stem.with_name(stem.name + ".safetensors")
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file missing")
    model = build_recorded_model(record, stem.with_name(stem.name + ".json"))
    load_weights(stem, record, model, map_location)
    return model.eval(), record


def load_ensemble_members(path: str | Path, record: EnsembleRecord) -> list[tuple[Path, ModelRecord]]:
    """Each member's checkpoint stem and record, checked against the ensemble record.

    Raises:
        CheckpointError: a member whose record is missing, not the one the ensemble was made with (checksum),
            itself an ensemble, or unlike the ensemble (input channels); the message names the ensemble record.
    """
    stem = checkpoint_stem(path)
    rec_path = stem.with_name(stem.name + ".json")
    out = []
    for i, member in enumerate(record.members):
        m_stem = checkpoint_stem(rec_path.parent / member.path)
        m_json = m_stem.with_name(m_stem.name + ".json")
        if not m_json.is_file():
            raise CheckpointError(f"{rec_path}: members[{i}]: missing member {member.path!r} (no {m_json})")
        actual = file_sha256(m_json)
        if actual != member.sha256:
            raise CheckpointError(
                f"{rec_path}: members[{i}]: {m_json} is not the record the ensemble was made with (sha256 "
                f"{actual[:12]}..., the ensemble names {member.sha256[:12]}...): the member was retrained or replaced"
            )
        m_record = load_record(m_stem)
        if isinstance(m_record, EnsembleRecord):
            raise CheckpointError(f"{rec_path}: members[{i}]: {m_json} is itself an ensemble (not allowed)")
        if m_record.in_channels != record.in_channels:
            raise CheckpointError(
                f"{rec_path}: members[{i}]: {m_json} takes {m_record.in_channels} input channels, the ensemble "
                f"{record.in_channels}"
            )
        out.append((m_stem, m_record))
    return out


def save_ensemble(
    path: str | Path,
    members: Sequence[str | Path],
    weights: Sequence[float] | None = None,
    image_size: Sequence[int] | None = None,
    **settings: Any,
) -> Path:
    """Write an ensemble record ``<stem>.json`` over member checkpoints (paths stored relative to it).

    Args:
        path: the ensemble's stem or ``.json`` path.
        members: member checkpoints (stems, records or run folders; shipped tags too); at least two.
        weights: one weight per member (``combine: weights``); None averages them (``mean``).
        image_size: the ensemble's working size (H, W); None takes the largest member's (by pixel count).
        **settings: other :class:`EnsembleRecord` fields (``threshold``, ``postprocess``, ``temperature``, ...).
            ``mean``/``std`` default to the first member's.

    Returns:
        The ensemble's stem.

    Raises:
        CheckpointError: a member that is missing, an ensemble itself, or unlike the others (input channels).
    """
    path = Path(path)
    # Not checkpoint_stem: the record does not exist yet, and its stem may name the folder of its members.
    stem = path.with_name(path.name[: -len(".json")]) if path.name.endswith(".json") else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    if weights is not None and len(weights) != len(members):
        raise ValueError(f"weights: {len(weights)} for {len(members)} members")
    entries, records = [], []
    for i, member in enumerate(members):
        m_stem = resolve_checkpoint(member)
        m_record = load_record(m_stem)
        if isinstance(m_record, EnsembleRecord):
            raise CheckpointError(f"{m_stem}.json: is itself an ensemble; list its members instead")
        records.append(m_record)
        rel = Path(os.path.relpath(m_stem.resolve(), stem.parent.resolve())).as_posix()
        sha = file_sha256(m_stem.with_name(m_stem.name + ".json"))
        entries.append(EnsembleMember(path=rel, sha256=sha, weight=None if weights is None else float(weights[i])))
    channels = {r.in_channels for r in records}
    if len(channels) > 1:
        raise CheckpointError(f"{stem}.json: members take different input channels ({sorted(channels)})")
    if image_size is None:
        image_size = max((r.image_size for r in records), key=lambda s: s[0] * s[1])
    settings.setdefault("mean", records[0].mean)
    settings.setdefault("std", records[0].std)
    settings.setdefault("dataset", records[0].dataset)
    record = EnsembleRecord(
        members=tuple(entries),
        combine="mean" if weights is None else "weights",
        image_size=tuple(int(s) for s in image_size),
        in_channels=records[0].in_channels,
        **settings,
    )
    write_ensemble_record(stem, record)
    return stem


def write_ensemble_record(path: str | Path, record: EnsembleRecord) -> Path:
    """Write (or rewrite, after fitting) an ensemble record ``<stem>.json``, whole or not at all."""
    path = Path(path)
    rec_path = path if path.name.endswith(".json") else path.with_name(path.name + ".json")
    text = record.to_json()
    os.replace(_write_tmp(rec_path, lambda p: p.write_text(text)), rec_path)
    return rec_path.with_name(rec_path.name[: -len(".json")])


def load_weights(path: str | Path, record: ModelRecord, model: nn.Module, map_location: str = "cpu") -> None:
    """Load a checkpoint's weights into ``model``, checked against the record's checksum and the model.

    Raises:
        CheckpointError: the weights file is missing, damaged, not the record's, not finite floating tensors, or
            does not fit ``model``.
    """
    stem = checkpoint_stem(path)
    rec_path = stem.with_name(stem.name + ".json")
    weights_path = stem.with_name(stem.name + ".safetensors")
    weights = _read_tensors(weights_path, record.sha256.weights if record.sha256 else None, rec_path, map_location)
    check_weights(weights, model, weights_path)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{weights_path}: weights do not match model {record.model!r}: {err}") from err


# ------------------------------------------------------------------------------------------------ shipped weights
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class PretrainedInfo:
    """One shipped model: ``<tag>.safetensors`` + ``<tag>.json`` (record) + ``<tag>.md`` (model card); or a shipped
    ensemble: ``<tag>.json`` (its record) + ``<tag>.md``, its members' checkpoints in ``<tag>/``.

    Attributes:
        tag: the name users pass (``skin``, ``polyp``).
        model: registered model name the weights belong to.
        title: one line saying what it segments.
        dataset: training data and split.
        metrics: headline test metrics from the record (``{"native": {...}, "working": {...}}``).
        stem: checkpoint stem inside the package.
        members: an ensemble's members as ``model (path)``; empty for one model.
    """

    tag: str
    model: str
    title: str
    dataset: str
    metrics: dict[str, Any]
    stem: Path
    members: tuple[str, ...] = ()

    @property
    def card_path(self) -> Path:
        return self.stem.with_suffix(".md")


def list_pretrained() -> dict[str, PretrainedInfo]:
    """The shipped pretrained models by tag (read from the package's ``weights/`` folder; an ensemble tag's members
    are in ``weights/<tag>/``)."""
    out: dict[str, PretrainedInfo] = {}
    for rec_path in sorted(WEIGHTS_DIR.glob("*.json")):
        record = load_record(rec_path)
        info = record.pretrained
        tag = info.tag if info else rec_path.stem
        members: tuple[str, ...] = ()
        if isinstance(record, EnsembleRecord):
            found = load_ensemble_members(rec_path, record)
            members = tuple(f"{r.model} ({m.path})" for m, (_, r) in zip(record.members, found))
        out[tag] = PretrainedInfo(
            tag=tag,
            model=record.model,
            title=info.title if info else "",
            dataset=info.dataset if info else "",
            metrics=info.test_metrics if info else {},
            stem=rec_path.with_suffix(""),
            members=members,
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


def load_pretrained(tag: str, map_location: str = "cpu") -> tuple[nn.Module, ModelRecord | EnsembleRecord]:
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


def _complete_checkpoint(stem: Path) -> bool:
    """A record with its weights (an ensemble record: with the kind that says it has none of its own)."""
    rec_path = stem.with_name(stem.name + ".json")
    if not rec_path.is_file():
        return False
    if stem.with_name(stem.name + ".safetensors").is_file():
        return True
    try:
        return isinstance(load_record(stem), EnsembleRecord)
    except CheckpointError:
        return False


def resolve_checkpoint(name: str | Path) -> Path:
    """Checkpoint stem of a shipped tag (``skin``) or of a checkpoint path (stem, file or run folder).

    A bare tag always means the shipped model, whatever the working folder holds: ``lesionseg export --onnx
    skin.onnx --model skin`` leaves a ``skin.json`` there, and the same command must mean the same model in every
    folder. A local checkpoint of that name is used when written as a path (``./skin``, ``skin.json``); when one
    exists, a warning names both.
    """
    tag = str(name)
    shipped = list_pretrained()
    if tag in shipped:
        local = Path(tag)
        if _complete_checkpoint(local) or (local.is_dir() and _complete_checkpoint(local / "best")):
            _logger.warning(
                "%r is the shipped model %s; the checkpoint %s in this folder is not used (write ./%s to use it)",
                tag,
                shipped[tag].stem,
                local,
                tag,
            )
        return shipped[tag].stem
    path = Path(name)
    if path.exists() or path.with_name(path.name + ".json").exists():
        return checkpoint_stem(path)
    names = sorted(shipped)
    close = suggest(tag, names)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    raise ValueError(
        f"{name}: neither a checkpoint (stem, .json, .safetensors or run folder) nor a shipped model{hint}; shipped: "
        f"{', '.join(names) or 'none'}"
    )
