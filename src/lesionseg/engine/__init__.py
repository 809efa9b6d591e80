"""Training (CPU, CUDA, DDP under torchrun), evaluation and checkpointing."""

from __future__ import annotations

from ..data.splits import select_cases  # public here before it moved to data.splits
from ..models.hub import CheckpointError, ModelRecord, load_model, load_record, save_checkpoint
from ..runtime import resolve_device
from .config import RunConfig, load_config, save_config
from .crossval import CrossValidation, summarize_cv, train_folds, write_oof
from .distributed import DistContext, cleanup_distributed, init_distributed
from .evaluator import Evaluation, evaluate_checkpoint, evaluate_dataset, evaluate_predictions
from .find_best import find_best
from .measurements import MeasurementAgreement
from .optim import build_optimizer, list_optimizers, list_schedulers, register_optimizer, register_scheduler
from .trainer import Trainer, seed_everything

__all__ = [
    "CheckpointError",
    "CrossValidation",
    "find_best",
    "summarize_cv",
    "train_folds",
    "write_oof",
    "DistContext",
    "build_optimizer",
    "cleanup_distributed",
    "init_distributed",
    "list_optimizers",
    "list_schedulers",
    "register_optimizer",
    "register_scheduler",
    "resolve_device",
    "Evaluation",
    "MeasurementAgreement",
    "ModelRecord",
    "RunConfig",
    "Trainer",
    "evaluate_checkpoint",
    "evaluate_dataset",
    "evaluate_predictions",
    "load_config",
    "load_model",
    "load_record",
    "save_checkpoint",
    "save_config",
    "seed_everything",
    "select_cases",
]
