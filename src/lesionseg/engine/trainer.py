"""Trainer with nnU-Net-style hooks: ``train_step``, ``validate``, ``on_epoch_end``, overridable ``_build_*``.

A run writes to ``<out_dir>/<name>/``: ``config.yaml`` (resolved), ``metrics.csv``, ``curves.png``,
``best.{safetensors,json}`` (selected on the validation ids, never on test) and ``last.{safetensors,json,
state.safetensors}`` (resumable, written every ``checkpoint_every`` epochs, so a killed run loses at most that).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.base import Case, DataProblem, SegmentationDataset, scan_cases
from ..data.check import screen_cases
from ..data.splits import Split, load_split
from ..data.transforms import build_train_transform
from ..inference.predictor import autocast_context
from ..losses import DeepSupervisionLoss, build_loss
from ..models import ModelOutput, create_model
from ..viz.curves import plot_training_curves
from .checkpoint import load_model, load_record, load_state, save_checkpoint
from .config import RunConfig, config_to_dict, load_config, save_config
from .evaluator import evaluate_dataset

__all__ = ["Trainer", "seed_everything", "split_cases"]

logger = logging.getLogger(__name__)

_CSV_FIELDS = (
    "epoch",
    "step",
    "lr",
    "train_loss",
    "val_dice_per_image",
    "val_dice_global",
    "val_iou_per_image",
    "val_iou_global",
    "epoch_seconds",
    "elapsed_seconds",
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def split_cases(cases: list[Case], split: Split) -> dict[str, list[Case]]:
    """Train/val/test cases of a split; ids the split lists but the root lacks are an error."""
    by_id = {c.id: c for c in cases}
    out = {}
    for part in ("train", "val", "test"):
        ids = split.subset(part)
        missing = [i for i in ids if i not in by_id]
        if missing and part != "test":
            raise ValueError(f"split {part} ids missing from the data root, e.g. {missing[:3]}")
        out[part] = [by_id[i] for i in ids if i in by_id]
    return out


class Trainer:
    """Train a registered model on a split of a dataset, as described by a :class:`RunConfig`.

    Args:
        cfg: the run configuration.
        run_dir: output folder; default ``<train.out_dir>/<train.name>``.
        progress: show progress bars.
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir else Path(cfg.train.out_dir) / cfg.train.name
        self.progress = progress
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed)
        self.model = self._build_model()
        self.loss_fn = self._build_loss()
        self.optimizer = self._build_optimizer()
        self.train_set, self.val_set = self._build_datasets()
        self.generator = torch.Generator().manual_seed(cfg.train.seed)
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=cfg.data.batch_size,
            shuffle=True,
            drop_last=len(self.train_set) > cfg.data.batch_size,
            num_workers=cfg.data.num_workers,
            generator=self.generator,
            persistent_workers=cfg.data.num_workers > 0,
        )
        self.epoch = 0
        self.step = 0
        self.elapsed = 0.0
        self.best_score = -math.inf
        self.best_epoch = -1

    # ----------------------------------------------------------------------------------------------------- building
    def _build_model(self) -> nn.Module:
        cfg = self.cfg
        model = create_model(cfg.model.name, cfg.data.in_channels, 1, **cfg.model.kwargs)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _build_loss(self) -> nn.Module:
        loss = build_loss(self.cfg.loss.name, **self.cfg.loss.kwargs)
        if self.cfg.loss.deep_supervision:
            loss = DeepSupervisionLoss(loss, self.cfg.loss.deep_supervision)
        return loss

    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        if o.name == "adam":
            return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        if o.name == "adamw":
            return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)

    def _build_datasets(self) -> tuple[SegmentationDataset, SegmentationDataset]:
        d = self.cfg.data
        if not d.root:
            raise ValueError(
                "data.root is not set: give the data root in the config (data: {root: PATH}) or with "
                "--set data.root=PATH"
            )
        split = load_split(d.split)
        # Every train/val case is read once before the first epoch, so that a bad file stops the run now (with the
        # whole list) rather than mid-epoch, or is left out and recorded with data.skip_bad.
        cases, skipped = screen_cases(
            scan_cases(d.root, d.layout),
            set(split.train) | set(split.val),
            skip_bad=d.skip_bad,
            channels=d.in_channels,
            progress=self.progress,
            what=f"among the train/val ids of split {d.split}",
        )
        self._record_skipped(skipped)
        if skipped:
            split = split.without({p.case_id for p in skipped if p.case_id is not None})
        parts = split_cases(cases, split)
        common = {"size": d.image_size, "mean": d.mean, "std": d.std, "in_channels": d.in_channels, "cache": d.cache}
        train = SegmentationDataset(parts["train"], transform=build_train_transform(d.augment), **common)
        val = SegmentationDataset(parts["val"], **common)
        return train, val

    def _record_skipped(self, skipped: list[DataProblem]) -> None:
        """``skipped.json`` in the run folder: the cases left out by ``data.skip_bad`` and why (absent otherwise)."""
        path = self.run_dir / "skipped.json"
        if not self.cfg.data.skip_bad:
            path.unlink(missing_ok=True)
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ids = sorted({p.case_id or str(p.path) for p in skipped})
        payload = {"root": self.cfg.data.root, "cases": ids, "problems": [p.to_dict() for p in skipped]}
        path.write_text(json.dumps(payload, indent=1) + "\n")

    # ----------------------------------------------------------------------------------------------------- schedule
    @property
    def total_steps(self) -> int:
        return max(1, self.cfg.train.epochs * len(self.train_loader))

    def progress_fraction(self) -> float:
        """Fraction of the run done: by steps, or by wall-clock when a budget is set (whichever is further)."""
        frac = self.step / self.total_steps
        budget = self.cfg.train.time_budget_min
        if budget:
            frac = max(frac, self.elapsed / (60.0 * budget))
        return min(frac, 1.0)

    def current_lr(self) -> float:
        o = self.cfg.optim
        epochs_done = self.step / max(1, len(self.train_loader))
        if o.warmup_epochs > 0 and epochs_done < o.warmup_epochs:
            return o.lr * (epochs_done + 1e-3) / o.warmup_epochs
        t = self.progress_fraction()
        if o.scheduler == "cosine":
            return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        if o.scheduler == "poly":
            return max(o.min_lr, o.lr * (1 - t) ** 0.9)
        return o.lr

    # ----------------------------------------------------------------------------------------------------- steps
    def compute_loss(self, output: ModelOutput, target: Tensor) -> Tensor:
        if isinstance(self.loss_fn, DeepSupervisionLoss):
            return self.loss_fn(output.logits, output.aux_logits, target)
        if getattr(self.loss_fn, "takes_model_output", False):
            return self.loss_fn(output, target)
        return self.loss_fn(output.logits, target)

    @property
    def needs_model_output(self) -> bool:
        return isinstance(self.loss_fn, DeepSupervisionLoss) or getattr(self.loss_fn, "takes_model_output", False)

    def train_step(self, x: Tensor, y: Tensor) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self.current_lr()
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.cfg.train.precision):
            out = self.model(x, return_aux=True) if self.needs_model_output else ModelOutput(self.model(x))
        loss = self.compute_loss(out, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {self.epoch} step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def validate(self) -> dict[str, float]:
        metrics = evaluate_dataset(
            self.model,
            self.val_set,
            threshold=self.cfg.train.threshold,
            precision=self.cfg.train.precision,
            channels_last=self.cfg.train.channels_last,
        ).aggregate()
        return {
            "val_dice_per_image": metrics["per_image"]["dice"],
            "val_dice_global": metrics["global"]["dice"],
            "val_iou_per_image": metrics["per_image"]["iou"],
            "val_iou_global": metrics["global"]["iou"],
        }

    # ----------------------------------------------------------------------------------------------------- records
    def record(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        d = self.cfg.data
        return {
            "model": self.cfg.model.name,
            "model_kwargs": self.cfg.model.kwargs,
            "in_channels": d.in_channels,
            "num_classes": 1,
            "image_size": list(d.image_size),
            "mean": list(d.mean),
            "std": list(d.std),
            "threshold": self.cfg.train.threshold,
            "dataset": {"layout": d.layout, "root": d.root, "split": d.split},
            "epoch": self.epoch,
            "step": self.step,
            "metrics": metrics or {},
            "config": config_to_dict(self.cfg),
        }

    def save_last(self) -> None:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "best_score": self.best_score if math.isfinite(self.best_score) else None,
            "best_epoch": self.best_epoch,
            "torch_rng": torch.get_rng_state(),
            "loader_rng": self.generator.get_state(),
        }
        record = self.record()
        record.update(finished=self.finished(), elapsed_seconds=round(self.elapsed, 1))
        save_checkpoint(self.run_dir / "last", self.model, record, state)

    def resume(self) -> None:
        """Restore model, optimiser, counters and RNG from ``last``; the next epoch continues the run."""
        stem = self.run_dir / "last"
        record = load_record(stem)
        state = load_state(stem, record)
        model, _ = load_model(stem)
        self.model.load_state_dict(model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.best_score = state["best_score"] if state["best_score"] is not None else -math.inf
        self.best_epoch = int(state["best_epoch"])
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["loader_rng"])

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        csv_path = self.run_dir / "metrics.csv"
        new = not csv_path.exists()
        with open(csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        plot_training_curves(csv_path, self.run_dir / "curves.png")

    def _trim_csv(self) -> None:
        """Drop rows past the resumed epoch (written after the last checkpoint of a killed run)."""
        csv_path = self.run_dir / "metrics.csv"
        if not csv_path.exists():
            return
        with open(csv_path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= self.epoch]
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    # ----------------------------------------------------------------------------------------------------- loop
    def finished(self) -> bool:
        budget = self.cfg.train.time_budget_min
        return self.epoch >= self.cfg.train.epochs or bool(budget and self.elapsed >= 60.0 * budget)

    def fit(self, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        """Train until the epoch count or the time budget is reached; returns a summary.

        Args:
            resume: continue from the run folder's ``last`` checkpoint.
            stop_after: leave after this many epochs of this call (the run stays resumable), e.g. to time-slice.
        """
        epochs_this_call = 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
            self._trim_csv()
        else:
            for stale in ("metrics.csv", "last.json", "best.json"):
                (self.run_dir / stale).unlink(missing_ok=True)
        save_config(self.cfg, self.run_dir / "config.yaml")
        t = self.cfg.train
        while not self.finished():
            start = time.perf_counter()
            self.model.train()
            losses = []
            bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}", disable=not self.progress, leave=False)
            for x, y, _ in bar:
                losses.append(self.train_step(x, y))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            self.epoch += 1
            row: dict[str, Any] = {
                "epoch": self.epoch,
                "step": self.step,
                "lr": self.current_lr(),
                "train_loss": float(np.mean(losses)),
            }
            last_epoch = self.finished_after(time.perf_counter() - start)
            if self.epoch % t.val_every == 0 or last_epoch:
                row.update(self.validate())
                score = row["val_" + t.monitor]
                if score > self.best_score:
                    self.best_score, self.best_epoch = score, self.epoch
                    save_checkpoint(self.run_dir / "best", self.model, self.record({"val": row}))
            self.elapsed += time.perf_counter() - start
            row["epoch_seconds"] = round(time.perf_counter() - start, 3)
            row["elapsed_seconds"] = round(self.elapsed, 1)
            self.on_epoch_end(row)
            if self.epoch % t.checkpoint_every == 0 or self.finished():
                self.save_last()
            self._log(row)
            epochs_this_call += 1
            if stop_after is not None and epochs_this_call >= stop_after:
                break
        return {
            "run_dir": str(self.run_dir),
            "epochs": self.epoch,
            "elapsed_seconds": self.elapsed,
            "best_epoch": self.best_epoch,
            "best_" + t.monitor: self.best_score,
        }

    def finished_after(self, epoch_seconds: float) -> bool:
        budget = self.cfg.train.time_budget_min
        return self.epoch >= self.cfg.train.epochs or bool(budget and self.elapsed + epoch_seconds >= 60.0 * budget)

    def _log(self, row: dict[str, Any]) -> None:
        parts = [
            f"epoch {row['epoch']}/{self.cfg.train.epochs}",
            f"loss {row['train_loss']:.4f}",
            f"lr {row['lr']:.2e}",
        ]
        if "val_dice_per_image" in row:
            parts.append(f"val Dice per-image {row['val_dice_per_image']:.4f} global {row['val_dice_global']:.4f}")
        parts.append(f"{row['epoch_seconds']:.1f}s (elapsed {row['elapsed_seconds'] / 60:.1f} min)")
        logger.info(" | ".join(parts))

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, overrides: list[str] | None = None, progress: bool = True) -> Trainer:
        """A trainer for an existing run folder, with the run's saved config (for ``--resume``).

        ``overrides`` (``key=value``) may change what does not alter the model, e.g. ``train.epochs`` to extend a run.
        """
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir}: no config.yaml; not a run folder")
        cfg = load_config(run_dir / "config.yaml", overrides)
        return cls(cfg, run_dir=run_dir, progress=progress)
