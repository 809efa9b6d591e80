"""Typed run configuration: dataclasses loaded from YAML, ``--set key=value`` overrides, saved resolved."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.splits import SplitDrawConfig
from ..data.transforms import AugmentConfig
from ..models import check_model_options
from ..registry import suggest
from ..runtime import PRECISIONS
from .optim import check_scheduler_kwargs, list_optimizers

__all__ = [
    "DataConfig",
    "SplitDrawConfig",
    "ModelConfig",
    "LossConfig",
    "OptimConfig",
    "TrainConfig",
    "RunConfig",
    "load_config",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "save_config",
]


@dataclass
class DataConfig:
    """Where the data is and how samples are made.

    Attributes:
        layout: dataset layout name (``ph2``, ``kvasir_seg``, ``isic2018``, ``folder``, ...); None detects it.
        root: data root in that layout (required: there is no default location).
        split: shipped split name (``ph2``) or a split JSON path.
        draw_split: when ``split`` is a JSON path that does not exist yet, draw it this way, store it there and say
            so (the papers' configs set it); None = a missing split file is an error naming ``lesionseg data split``.
        image_size: working size (H, W) for training and the default evaluation.
        in_channels: 3 (RGB) or 1 (grayscale).
        mean: normalisation mean in [0, 1] units.
        std: normalisation std in [0, 1] units.
        batch_size: the **global** training batch size: the images of one optimiser step summed over all processes.
            Under ``torchrun --nproc_per_node=N`` each process loads ``batch_size / N`` (N must divide it), so a
            recipe trains the same on 1 GPU or 8 and its learning rate stays right.
        num_workers: DataLoader worker processes per training process; -1 = automatic (0 on CPU, where cached
            datasets need none; up to 4 per GPU process on CUDA, which also pins host memory).
        cache: keep decoded, resized images in memory.
        cache_dir: on-disk cache of decoded, resized images shared by every run and process on the machine
            (:mod:`lesionseg.data.cache`), so only the first run on a data root and working size pays the decoding:
            None or ``""`` = none, ``auto`` = ``$LESIONSEG_CACHE_DIR`` or ``~/.cache/lesionseg/cases``, or a folder.
            Entries live under one subfolder per data root and working size; an entry whose source files changed
            (path, size, mtime) is recomputed. Deleting the folder clears the cache.
        augment: training augmentation.
        skip_bad: leave out cases with unusable files (recorded in the run folder's ``skipped.json``) instead of
            refusing to start; ``lesionseg data check ROOT`` lists them.
    """

    layout: str | None = None
    root: str = ""
    split: str = "ph2"
    draw_split: SplitDrawConfig | None = None
    image_size: tuple[int, int] = (256, 256)
    in_channels: int = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    batch_size: int = 8
    num_workers: int = -1
    cache: bool = True
    cache_dir: str | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    skip_bad: bool = False


@dataclass
class ModelConfig:
    """A registered model and its constructor options (module switches, widths)."""

    name: str = "unet_small"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """A registered loss and its options; ``deep_supervision`` weights (main first) wrap it for side outputs."""

    name: str = "bce_dice"
    kwargs: dict[str, Any] = field(default_factory=dict)
    deep_supervision: tuple[float, ...] | None = None


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        name: a registered optimiser (:mod:`lesionseg.engine.optim`: ``adam``, ``adamw``, ``sgd``).
        lr: peak learning rate.
        weight_decay: weight decay (decoupled for AdamW).
        betas: Adam betas.
        momentum: SGD momentum.
        scheduler: a registered schedule (:mod:`lesionseg.engine.optim`): ``cosine`` (to ``min_lr`` over the run,
            by steps or by wall-clock when a budget is set), ``poly``, ``constant``, ``cosine_annealing`` (torch's
            CosineAnnealingLR per epoch, the VM-UNet family's ``T_max`` 50), ``cosine_restarts`` (SGDR) or ``step``
            (MGMFNet's halving every 12 epochs).
        scheduler_kwargs: the schedule's options, e.g. ``{t_max_epochs: 50}`` or ``{step_epochs: 12, gamma: 0.5}``.
        min_lr: the lowest learning rate of the cosine schedules (and the floor of ``poly``).
        warmup_epochs: linear warm-up length.
        grad_clip: max gradient norm; 0 disables clipping.
    """

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    scheduler: str = "cosine"
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    min_lr: float = 1e-5
    warmup_epochs: float = 0.0
    grad_clip: float = 0.0


@dataclass
class TrainConfig:
    """Length, precision, checkpointing.

    Attributes:
        epochs: maximum number of epochs.
        time_budget_min: wall-clock budget in minutes (training stops at the first epoch end past it and the
            schedule is stretched over it); None for epochs only.
        seed: seed of torch, numpy and Python.
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; under torchrun ``auto`` and
            ``cuda`` give each process the GPU of its ``LOCAL_RANK``.
        precision: ``fp32``, ``bf16`` (autocast; on CPU bf16 halves the step time of our models) or ``fp16``
            (autocast with a gradient scaler; CUDA only).
        deterministic: deterministic kernels (no cuDNN autotuning; torch's deterministic algorithms), slower on GPU.
        sync_bn: under DDP on CUDA, synchronise BatchNorm statistics over all processes (SyncBatchNorm).
        channels_last: use the channels-last memory format.
        threads: torch intra-op threads; 0 keeps torch's default.
        val_every: validate every this many epochs.
        checkpoint_every: write the resumable ``last`` checkpoint every this many epochs.
        threshold: probability threshold for the binary mask.
        monitor: validation score that selects the best checkpoint (``dice_per_image`` or ``dice_global``).
        postprocess: at the end of training choose the mask post-processing (largest component, fill holes) that
            raises the monitored validation Dice, nnU-Net style, and store it in the best checkpoint's record.
        trust: at the end of training also fit the calibration temperature and the per-image quality estimator on
            the validation ids and describe the training images for out-of-distribution checks
            (:mod:`lesionseg.inference.trust`), stored in the best checkpoint's record; needs 3 validation ids.
        out_dir: parent folder of run folders.
        name: run folder name; empty = config file stem.
        loggers: where each epoch's row goes (:mod:`lesionseg.engine.loggers`): ``csv`` (``metrics.csv`` and
            ``curves.png``), ``tensorboard`` (event files in ``<run>/tensorboard/``; the ``tensorboard`` extra).
        log_images_every: every this many epochs (and at the last) give the loggers an overlay figure of the first
            validation images with the current masks; 0 = never.
    """

    epochs: int = 100
    time_budget_min: float | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    deterministic: bool = False
    sync_bn: bool = False
    channels_last: bool = False
    threads: int = 0
    val_every: int = 1
    checkpoint_every: int = 1
    threshold: float = 0.5
    monitor: str = "dice_per_image"
    postprocess: bool = True
    trust: bool = True
    out_dir: str = "runs"
    name: str = ""
    loggers: tuple[str, ...] = ("csv",)
    log_images_every: int = 0


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check_ranges(self)
        if self.train.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.train.precision!r}")
        device = self.train.device.strip().lower()
        if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.train.device!r}")
        if self.optim.name not in list_optimizers():
            raise ValueError(f"optim.name must be one of {', '.join(list_optimizers())}, got {self.optim.name!r}")
        check_scheduler_kwargs(self.optim.scheduler, self.optim.scheduler_kwargs)
        if self.data.num_workers < -1:
            raise ValueError(f"data.num_workers must be >= 0 or -1 (automatic), got {self.data.num_workers}")
        if self.train.monitor not in ("dice_per_image", "dice_global"):
            raise ValueError(f"train.monitor must be dice_per_image or dice_global, got {self.train.monitor!r}")
        from .loggers import list_loggers

        unknown = [n for n in self.train.loggers if n not in list_loggers()]
        if unknown or len(set(self.train.loggers)) != len(self.train.loggers):
            raise ValueError(
                f"train.loggers: {list(self.train.loggers)} must be distinct names of {', '.join(list_loggers())}"
            )
        if self.train.log_images_every < 0:
            raise ValueError(f"train.log_images_every must be >= 0 (0 = never), got {self.train.log_images_every}")


#: Largest working side a config may ask for (the checkpoint record's limit, so that what trains also loads).
MAX_IMAGE_SIDE = 4096


def _check(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key} must be {rule}, got {value!r}")


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _check_ranges(cfg: RunConfig) -> None:
    """Every numeric field in its range, the model known and its options its constructor's: checked when the config
    is loaded, before any data is read, with the key named.

    Raises:
        ValueError: the first field out of range (``data.image_size must be ...``).
    """
    d, o, t, a = cfg.data, cfg.optim, cfg.train, cfg.data.augment
    _check(
        len(d.image_size) == 2 and all(16 <= s <= MAX_IMAGE_SIDE for s in d.image_size),
        "data.image_size",
        f"two sizes (H, W) between 16 and {MAX_IMAGE_SIDE}",
        list(d.image_size),
    )
    _check(d.in_channels in (1, 3), "data.in_channels", "1 (grayscale) or 3 (RGB)", d.in_channels)
    for name in ("mean", "std"):
        values = getattr(d, name)
        _check(
            len(values) == d.in_channels or (d.in_channels == 1 and len(values) > 0),
            f"data.{name}",
            f"{d.in_channels} value(s), one per input channel",
            list(values),
        )
        _check(all(_finite(v) for v in values), f"data.{name}", "finite numbers", list(values))
    _check(all(v > 0 for v in d.std), "data.std", "positive (it divides the image)", list(d.std))
    _check(d.batch_size >= 1, "data.batch_size", ">= 1", d.batch_size)
    if d.draw_split is not None:
        s = d.draw_split
        _check(0 < s.test_fraction < 1, "data.draw_split.test_fraction", "in (0, 1)", s.test_fraction)
        _check(0 <= s.val_fraction < 1, "data.draw_split.val_fraction", "in [0, 1)", s.val_fraction)
        total = s.test_fraction + s.val_fraction
        _check(total < 1, "data.draw_split.test_fraction + val_fraction", "< 1 (some ids must train)", total)
    for name in ("hflip", "vflip", "rotate90", "affine", "color"):
        _check(0 <= getattr(a, name) <= 1, f"data.augment.{name}", "a probability in [0, 1]", getattr(a, name))
    _check(0 <= a.degrees <= 180, "data.augment.degrees", "in [0, 180]", a.degrees)
    _check(
        0 < a.scale[0] <= a.scale[1] and all(_finite(v) for v in a.scale),
        "data.augment.scale",
        "(low, high) with 0 < low <= high",
        list(a.scale),
    )
    for name in ("brightness", "contrast", "saturation"):
        _check(0 <= getattr(a, name) <= 1, f"data.augment.{name}", "in [0, 1]", getattr(a, name))
    _check(0 <= a.hue <= 0.5, "data.augment.hue", "in [0, 0.5]", a.hue)
    if cfg.loss.deep_supervision is not None:
        w = cfg.loss.deep_supervision
        _check(
            len(w) > 0 and all(_finite(v) and v >= 0 for v in w) and w[0] > 0,
            "loss.deep_supervision",
            "weights >= 0, the main output's (first) > 0",
            list(w),
        )
    _check(_finite(o.lr) and o.lr > 0, "optim.lr", "a positive number", o.lr)
    _check(_finite(o.min_lr) and 0 <= o.min_lr <= o.lr, "optim.min_lr", f"in [0, optim.lr={o.lr}]", o.min_lr)
    _check(_finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", ">= 0", o.weight_decay)
    _check(all(0 <= b < 1 for b in o.betas), "optim.betas", "two numbers in [0, 1)", list(o.betas))
    _check(0 <= o.momentum < 1, "optim.momentum", "in [0, 1)", o.momentum)
    _check(_finite(o.warmup_epochs) and o.warmup_epochs >= 0, "optim.warmup_epochs", ">= 0", o.warmup_epochs)
    _check(_finite(o.grad_clip) and o.grad_clip >= 0, "optim.grad_clip", ">= 0 (0 = no clipping)", o.grad_clip)
    _check(t.epochs >= 1, "train.epochs", ">= 1", t.epochs)
    if t.time_budget_min is not None:
        _check(
            _finite(t.time_budget_min) and t.time_budget_min > 0,
            "train.time_budget_min",
            "a positive number of minutes (or null for none)",
            t.time_budget_min,
        )
    _check(t.seed >= 0, "train.seed", ">= 0", t.seed)
    _check(t.threads >= 0, "train.threads", ">= 0 (0 = torch's default)", t.threads)
    _check(t.val_every >= 1, "train.val_every", ">= 1", t.val_every)
    _check(t.checkpoint_every >= 1, "train.checkpoint_every", ">= 1", t.checkpoint_every)
    _check(0 < t.threshold < 1, "train.threshold", "in (0, 1)", t.threshold)
    try:
        problem = check_model_options(cfg.model.name, cfg.model.kwargs)
    except ValueError as err:
        raise ValueError(f"model.name: {err}") from None
    if problem:
        raise ValueError(f"model.kwargs: {problem}")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(f"{where}: {value!r} fits none of {tp}: {'; '.join(errors)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _section_type(tp: Any) -> type | None:
    """The dataclass a field's type names (``X`` or ``X | None``), None for a plain value."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _unknown_key(where: str, key: str, value: Any, hints: dict[str, Any]) -> str:
    """``unknown key 'trian.epochs' (did you mean 'train.epochs'?)``: the key as the user wrote it (down to the value
    of a one-key section, as ``--set a.b=v`` makes), the closest known key in the same form."""
    full = f"{where}.{key}" if where else key
    close = suggest(key, sorted(hints), n=1)
    if not close:
        return f"unknown key {full!r}"
    guess = f"{where}.{close[0]}" if where else close[0]
    section = _section_type(hints[close[0]])
    if section is not None and isinstance(value, dict) and len(value) == 1:
        (sub,) = value
        full += f".{sub}"
        sub_close = suggest(str(sub), [f.name for f in dataclasses.fields(section)], n=1)
        if sub_close:
            guess += f".{sub_close[0]}"
    return f"unknown key {full!r} (did you mean {guess!r}?)"


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        known = {k: v for k, v in hints.items() if k in names}
        problems = "; ".join(_unknown_key(where, k, data[k], known) for k in sorted(unknown))
        raise ValueError(f"{where or 'config'}: {problems}; known: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig`, checking every key and type; unknown keys raise ``ValueError``."""
    return _from_dict(RunConfig, data or {}, "")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data form (tuples as lists) fit for YAML/JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a config mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def read_yaml_mapping(path: Path, what: str = "config") -> dict[str, Any]:
    """A YAML file's top-level mapping; a missing file, bad YAML or a non-mapping raises naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {what} must be a mapping at the top level")
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (None = defaults), apply overrides, validate, and fill ``train.name``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        data = read_yaml_mapping(path)
    apply_overrides(data, overrides or [])
    cfg = config_from_dict(data)
    if not cfg.train.name:
        cfg.train.name = path.stem if path is not None else cfg.model.name
    return cfg


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
