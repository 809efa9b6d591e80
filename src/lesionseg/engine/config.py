"""Typed run configuration: dataclasses loaded from YAML, ``--set key=value`` overrides, saved resolved."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.transforms import AugmentConfig
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
class SplitDrawConfig:
    """How to draw ``data.split`` on first use when that JSON file does not exist yet (then it is stored and read back).

    Attributes:
        test_fraction: fraction of the drawn ids held out for test.
        val_fraction: fraction of the drawn ids taken out of the training part for validation.
        seed: seed of the draw.
        subsets: draw only among cases of these official subsets (``[train]`` = ISIC 2018's Task 1 training images,
            as the papers split them; ``[train, val]`` = the ISIC 2017 pool of the VM-UNet family); None = every case
            with a mask.
        stratify: case meta field to stratify by (``diagnosis`` for PH2); None = no stratification.
    """

    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0
    subsets: tuple[str, ...] | None = None
    stratify: str | None = None


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


PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
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
        if self.data.batch_size < 1 or self.train.epochs < 1:
            raise ValueError("data.batch_size and train.epochs must be >= 1")


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


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where or 'config'}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
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
