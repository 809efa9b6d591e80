"""Training, evaluation and checkpointing."""

from __future__ import annotations

from ..models.hub import CheckpointError, load_model, load_record, save_checkpoint
from .config import RunConfig, load_config, save_config
from .evaluator import Evaluation, evaluate_checkpoint, evaluate_dataset, evaluate_native, select_cases
from .trainer import Trainer, seed_everything

__all__ = [
    "CheckpointError",
    "Evaluation",
    "RunConfig",
    "Trainer",
    "evaluate_checkpoint",
    "evaluate_dataset",
    "evaluate_native",
    "load_config",
    "load_model",
    "load_record",
    "save_checkpoint",
    "save_config",
    "seed_everything",
    "select_cases",
]
