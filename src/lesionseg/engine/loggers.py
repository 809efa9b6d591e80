"""Where a training run reports its epochs: ``train.loggers`` names them (``csv``, ``tensorboard``).

Every logger sees each epoch's row (the columns of ``metrics.csv``) and, every ``train.log_images_every`` epochs, an
overlay figure of a few validation images; only rank 0 of a run makes loggers. A logger is a small class registered
in :data:`LOGGERS`; ``tensorboard`` needs the ``tensorboard`` extra (``pip install 'lesionseg[tensorboard]'``).

* ``csv``: ``metrics.csv`` (one row per epoch; rows past a resumed epoch dropped) and ``curves.png`` redrawn.
* ``tensorboard``: an event file in ``<run folder>/tensorboard/`` with every number of the row as a scalar (loss,
  learning rate, validation scores per metric and reduction, epoch time) at the epoch as step, and the overlay figure
  as an image; a resumed run purges the events written after its checkpoint.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import Registry

__all__ = ["LOGGERS", "CSVLogger", "RunLogger", "TensorBoardLogger", "build_loggers", "list_loggers"]

LOGGERS: Registry[type[RunLogger]] = Registry("train.loggers entry")


class RunLogger:
    """One destination of a run's epoch rows.

    Args:
        run_dir: the run folder.
        fields: the row's columns, in order.
        resume_epoch: the epoch a resumed run continues after (0 for a fresh run): anything logged past it came from
            epochs the checkpoint does not hold and is dropped.
    """

    def __init__(self, run_dir: Path, fields: Sequence[str], resume_epoch: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.fields = tuple(fields)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """One epoch's row (``epoch``, ``train_loss``, ``lr``, validation scores when it validated, times)."""

    def log_image(self, tag: str, image: np.ndarray, epoch: int) -> None:
        """A figure (H, W, 3) uint8 at an epoch."""

    def close(self) -> None:
        """Flush and release files."""


@LOGGERS.register("csv")
class CSVLogger(RunLogger):
    """``metrics.csv`` and ``curves.png`` in the run folder."""

    def __init__(self, run_dir: Path, fields: Sequence[str], resume_epoch: int = 0) -> None:
        super().__init__(run_dir, fields, resume_epoch)
        self.path = self.run_dir / "metrics.csv"
        if not resume_epoch:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():  # rows past the resumed epoch were written after the last checkpoint of a killed run
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= resume_epoch]
            with open(self.path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        from ..viz.curves import plot_training_curves

        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        plot_training_curves(self.path, self.run_dir / "curves.png")


@LOGGERS.register("tensorboard")
class TensorBoardLogger(RunLogger):
    """TensorBoard event files in ``<run folder>/tensorboard/`` (``tensorboard --logdir runs/``)."""

    def __init__(self, run_dir: Path, fields: Sequence[str], resume_epoch: int = 0) -> None:
        super().__init__(run_dir, fields, resume_epoch)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ValueError(
                f"train.loggers: tensorboard needs the tensorboard package ({err}): "
                "pip install 'lesionseg[tensorboard]'"
            ) from None
        # purge_step: events past the resumed checkpoint (or of an earlier run, when fresh) are dropped.
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_epoch + 1)

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        epoch = int(row["epoch"])
        for key in self.fields:
            value = row.get(key)
            if key in ("epoch", "step") or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(_tag(key), float(value), epoch)
        self.writer.flush()

    def log_image(self, tag: str, image: np.ndarray, epoch: int) -> None:
        self.writer.add_image(tag, np.asarray(image), epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _tag(key: str) -> str:
    """``val_dice_per_image`` -> ``val/dice_per_image``: TensorBoard groups scalars by the part before the slash."""
    for prefix in ("val_", "train_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix) :]}"
    return f"time/{key}" if key.endswith("seconds") else f"train/{key}"


def list_loggers() -> list[str]:
    return LOGGERS.names()


def build_loggers(names: Sequence[str], run_dir: Path, fields: Sequence[str], resume_epoch: int = 0) -> list[RunLogger]:
    """The loggers ``names`` (``train.loggers``) for a run folder; an unknown name raises listing the known ones."""
    return [LOGGERS.get(name)(run_dir, fields, resume_epoch) for name in names]
