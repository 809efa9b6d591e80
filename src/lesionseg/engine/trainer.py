"""Trainer with nnU-Net-style hooks: ``fit`` is a loop of hook calls and holds no logic itself.

``fit`` calls :meth:`Trainer.on_train_start`, then per epoch :meth:`~Trainer.on_epoch_start`,
:meth:`~Trainer.train_step` over the epoch's batches, :meth:`~Trainer.on_train_epoch_end`,
:meth:`~Trainer.on_validation_epoch_start`, :meth:`~Trainer.validation_step` over the validation batches (none on
epochs that do not validate), :meth:`~Trainer.on_validation_epoch_end` and :meth:`~Trainer.on_epoch_end`, and finally
:meth:`~Trainer.on_train_end`. A variant overrides a hook or a ``_build_*`` method.

The same code runs on CPU, on one GPU and on N processes under ``torchrun`` (DistributedDataParallel; device and
process-group handling live in :mod:`lesionseg.engine.distributed`). Under DDP every process trains on its shard of
each global batch (``data.batch_size`` is global), validation confusion counts are summed over processes, and rank 0
alone writes files.

A run writes to ``<out_dir>/<name>/``: ``config.yaml`` (resolved), ``metrics.csv``, ``curves.png``,
``best.{safetensors,json}`` (selected on the validation ids, never on test) and ``last.{safetensors,json,
state.safetensors}`` (resumable, written every ``checkpoint_every`` epochs, so a killed run loses at most that).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm.auto import tqdm

from ..data.base import DataProblem, scan_cases
from ..data.cache import open_case_cache
from ..data.check import screen_cases
from ..data.dataset import SegmentationDataset
from ..data.splits import ensure_split, load_split, split_cases
from ..data.transforms import build_train_transform
from ..inference.postprocess import select_postprocessing
from ..inference.predictor import Predictor
from ..inference.trust_fit import fit_trust
from ..losses import DeepSupervisionLoss, build_loss
from ..metrics import TRAINING_METRICS, training_csv_columns
from ..metrics.confusion import ConfusionStats, get_stats
from ..models import ModelOutput, create_model
from ..models.hub import (
    CheckpointError,
    DataSource,
    ModelRecord,
    PostProcessing,
    TrainedOn,
    load_model,
    load_record,
    load_state,
    load_weights,
    save_checkpoint,
)
from ..runtime import autocast_context, lesionseg_commit, machine_description
from .config import RunConfig, config_to_dict, load_config, save_config
from .distributed import (
    all_gather_objects,
    all_reduce_max,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    init_distributed,
    unwrap_model,
    wrap_model,
)
from .loggers import RunLogger, build_loggers
from .optim import ScheduleState, build_optimizer, scheduled_lr

__all__ = ["Trainer", "seed_everything"]

_logger = logging.getLogger(__name__)

# The validation columns come from the metric registry (val_dice_per_image, val_dice_global, val_iou_...).
_CSV_FIELDS = ("epoch", "step", "lr", "train_loss", *training_csv_columns(), "epoch_seconds", "elapsed_seconds")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _per_process_batch(batch_size: int, world_size: int) -> int:
    if batch_size % world_size:
        raise ValueError(
            f"data.batch_size={batch_size} is the global batch and must be divisible by the number of processes "
            f"({world_size}); e.g. --set data.batch_size={max(world_size, batch_size - batch_size % world_size)}"
        )
    return batch_size // world_size


class Trainer:
    """Train a registered model on a split of a dataset, as described by a :class:`RunConfig`.

    Args:
        cfg: the run configuration.
        run_dir: output folder; default ``<train.out_dir>/<train.name>``.
        progress: show progress bars (rank 0 only).

    Under torchrun the constructor joins the process group; call :meth:`close` at the end to leave it.
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir else Path(cfg.train.out_dir) / cfg.train.name
        t = cfg.train
        self.dist = init_distributed(t.device, t.deterministic)
        self.device = self.dist.device
        self.is_main = self.dist.is_main
        self.progress = progress and self.is_main
        try:
            self._setup()
        except BaseException:
            self.close()  # a torchrun run must not leave its process group behind on a bad config
            raise
        self.epoch = 0
        self.step = 0
        self.elapsed = 0.0
        self.best_score = -math.inf
        self.best_epoch = -1
        self._row: dict[str, Any] = {}
        self._epoch_start = 0.0
        self._validating = False
        self._stop_after: int | None = None
        self._epochs_this_call = 0
        self.loggers: list[RunLogger] = []

    def _setup(self) -> None:
        """Device checks, seeding, model, loss, optimiser, data: everything that needs the process context."""
        t = self.cfg.train
        if t.precision == "fp16" and self.device.type != "cuda":
            raise ValueError(f"train.precision fp16 needs CUDA; this run is on {self.device} (use bf16 on CPU)")
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        self.local_batch_size = _per_process_batch(self.cfg.data.batch_size, self.dist.world_size)
        # The same seed on every rank builds the same initial weights (DDP also broadcasts rank 0's).
        seed_everything(t.seed)
        self.network = self._build_network()
        if self.dist.distributed:
            # Each rank its own augmentation and dropout draws; rank 0 of a single-process run is left untouched.
            seed_everything(t.seed + 1_000_003 * self.dist.rank)
        self.loss_fn = self._build_loss().to(self.device)
        self.optimizer = self._build_optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=t.precision == "fp16")
        self.train_set, self.val_set = self._build_datasets()
        self.train_sampler, self.train_loader = self._build_train_loader()
        self.val_loader = self._build_val_loader()

    @property
    def model(self) -> nn.Module:
        """The bare model (inside the DistributedDataParallel wrapper under DDP): what checkpoints store."""
        return unwrap_model(self.network)

    def close(self) -> None:
        """Close the loggers and leave the process group if this trainer created it (torchrun runs)."""
        self._close_loggers()
        cleanup_distributed(self.dist)

    def _close_loggers(self) -> None:
        for run_logger in getattr(self, "loggers", ()):
            run_logger.close()
        self.loggers = []

    # ----------------------------------------------------------------------------------------------------- building
    def _build_model(self) -> nn.Module:
        cfg = self.cfg
        try:
            return create_model(cfg.model.name, cfg.data.in_channels, 1, **cfg.model.kwargs)
        except (TypeError, ValueError) as err:  # options of the right names but values the constructor refuses
            raise ValueError(f"model.kwargs: {cfg.model.name} refuses {cfg.model.kwargs}: {err}") from err

    def _build_network(self) -> nn.Module:
        """The model on the run's device, channels-last if asked, DDP-wrapped (and SyncBN) under torchrun."""
        model = self._build_model()
        if self.cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        # static_graph: the set of parameters that get gradients is fixed for a run, and some models hold heads the
        # configured loss never asks for (deep-supervision outputs), which plain DDP would wait on forever.
        return wrap_model(model, self.dist, sync_bn=self.cfg.train.sync_bn, static_graph=True)

    def _build_loss(self) -> nn.Module:
        loss = build_loss(self.cfg.loss.name, **self.cfg.loss.kwargs)
        if self.cfg.loss.deep_supervision:
            loss = DeepSupervisionLoss(loss, self.cfg.loss.deep_supervision)
        return loss

    def _build_optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer((p for p in self.network.parameters() if p.requires_grad), self.cfg.optim)

    def _build_datasets(self) -> tuple[SegmentationDataset, SegmentationDataset]:
        d = self.cfg.data
        if not d.root:
            raise ValueError(
                "data.root is not set: give the data root in the config (data: {root: PATH}) or with "
                "--set data.root=PATH"
            )
        scan = scan_cases(d.root, d.layout)
        if self.is_main:
            message = ensure_split(d.split, scan.cases, d.draw_split, d.root, d.layout)
            if message:
                _logger.warning(message)
        barrier()  # the other ranks read the split rank 0 may just have drawn
        split = load_split(d.split)
        disk_cache = open_case_cache(d.cache_dir, d.root)
        size = (int(d.image_size[0]), int(d.image_size[1]))
        if disk_cache is not None and self.is_main:
            _logger.info("decoded images cached on disk in %s", disk_cache.folder(size, d.in_channels))
        # Every train/val case is read once before the first epoch, so that a bad file stops the run now (with the
        # whole list) rather than mid-epoch, or is left out and recorded with data.skip_bad. A disk-cache entry made
        # from the very same files (path, size, mtime) vouches for them without a second decode.
        cases, skipped = screen_cases(
            scan,
            set(split.train) | set(split.val),
            skip_bad=d.skip_bad,
            channels=d.in_channels,
            progress=self.progress and self.is_main,
            what=f"among the train/val ids of split {d.split}",
            known_readable=None if disk_cache is None else lambda c: disk_cache.contains(c, size, d.in_channels),
        )
        if self.is_main:
            self._record_skipped(skipped)
        if skipped:
            split = split.without({p.case_id for p in skipped if p.case_id is not None})
        parts = split_cases(cases, split)
        common = {
            "size": size,
            "mean": d.mean,
            "std": d.std,
            "in_channels": d.in_channels,
            "cache": d.cache,
            "disk_cache": disk_cache,
        }
        train = SegmentationDataset(parts["train"], transform=build_train_transform(d.augment), **common)
        val = SegmentationDataset(parts["val"], **common)
        return train, val

    def _num_workers(self) -> int:
        workers = self.cfg.data.num_workers
        if workers >= 0:
            return workers
        if self.device.type != "cuda":
            return 0
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return max(1, min(4, (os.cpu_count() or 1) // per_node))

    def _build_train_loader(self) -> tuple[DistributedSampler, DataLoader]:
        """Each epoch one seeded permutation (seed + epoch) of the training ids, dealt round-robin to the ranks.

        One process uses the same sampler with one replica, so an N-process run sees, at every step, exactly the
        images of the one-process run's batch, split over the ranks.
        """
        sampler = DistributedSampler(
            self.train_set,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=self.cfg.train.seed,
        )
        workers = self._num_workers()
        loader = DataLoader(
            self.train_set,
            batch_size=self.local_batch_size,
            sampler=sampler,
            drop_last=len(self.train_set) > self.cfg.data.batch_size,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )
        return sampler, loader

    def _build_val_loader(self) -> DataLoader:
        """This rank's validation ids: every ``world_size``-th, no padding (a padded id would be counted twice)."""
        shard = Subset(self.val_set, range(self.dist.rank, len(self.val_set), self.dist.world_size))
        return DataLoader(shard, batch_size=16, shuffle=False, num_workers=0, pin_memory=self.device.type == "cuda")

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
        state = ScheduleState(epoch=epochs_done, progress=self.progress_fraction())
        return scheduled_lr(o.scheduler, state, o.lr, o.min_lr, o.scheduler_kwargs)

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

    def train_step(self, batch: tuple[Tensor, Tensor, Any]) -> float:
        """One optimiser step on this process's share of a global batch; returns its loss."""
        x, y = batch[0].to(self.device, non_blocking=True), batch[1].to(self.device, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = self.current_lr()
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.cfg.train.precision, self.device):
            out = self.network(x, return_aux=True) if self.needs_model_output else ModelOutput(self.network(x))
        loss = self.compute_loss(out, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {self.epoch} step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.network.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return float(loss.detach())

    @torch.inference_mode()
    def validation_step(self, batch: tuple[Tensor, Tensor, Any]) -> tuple[ConfusionStats, list[str]]:
        """Per-image confusion counts of one validation batch (thresholded at ``train.threshold``) and its ids."""
        x = batch[0].to(self.device, non_blocking=True)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.cfg.train.precision, self.device):
            logits = self.model(x).float()
        pred = (torch.sigmoid(logits) > self.cfg.train.threshold).to(torch.uint8)
        return get_stats(pred, batch[1].to(self.device).to(torch.uint8)).to("cpu"), list(batch[2])

    # ----------------------------------------------------------------------------------------------------- hooks
    def on_train_start(self, resume: bool = False, stop_after: int | None = None) -> None:
        """Fresh run: clear stale files; ``resume``: restore from ``last``. Rank 0 writes the resolved config."""
        self._stop_after, self._epochs_this_call = stop_after, 0
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        elif self.is_main:
            for stale in ("metrics.csv", "last.json", "best.json"):
                (self.run_dir / stale).unlink(missing_ok=True)
        if self.is_main:
            save_config(self.cfg, self.run_dir / "config.yaml")
            self._close_loggers()
            self.loggers = build_loggers(self.cfg.train.loggers, self.run_dir, _CSV_FIELDS, self.epoch if resume else 0)
        barrier()

    def keep_training(self) -> bool:
        """Another epoch? Not past the epoch count or the budget, nor past ``stop_after`` epochs of this call."""
        if self._stop_after is not None and self._epochs_this_call >= self._stop_after:
            return False
        return not self.finished()

    def on_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self.network.train()
        self.train_sampler.set_epoch(self.epoch)
        self._row = {}

    def train_batches(self) -> Iterable[Any]:
        """This epoch's training batches (with a progress bar on rank 0)."""
        return tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}", disable=not self.progress, leave=False)

    def on_train_epoch_end(self, losses: list[float]) -> None:
        """Count the epoch; the logged loss is the mean over every process's steps."""
        self.epoch += 1
        total = all_reduce_sum(torch.tensor([sum(losses), len(losses)], dtype=torch.float64, device=self.device))
        self._row = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.current_lr(),
            "train_loss": float(total[0] / total[1].clamp_min(1)),
        }

    def on_validation_epoch_start(self) -> None:
        """Decide whether this epoch validates: every ``val_every`` epochs and on the run's last epoch.

        Under a time budget "last" depends on how long the epoch took; the slowest rank's time decides, so every
        rank makes the same decision.
        """
        seconds = all_reduce_max(time.perf_counter() - self._epoch_start, self.device)
        self._validating = self.epoch % self.cfg.train.val_every == 0 or self.finished_after(seconds)
        if self._validating:
            self.model.eval()

    def validation_batches(self) -> Iterable[Any]:
        """This rank's validation batches, or none on an epoch that does not validate."""
        return self.val_loader if self._validating else ()

    def on_validation_epoch_end(self, outputs: list[tuple[ConfusionStats, list[str]]]) -> None:
        """Scores from the counts of every rank: tp/fp/fn/tn summed for the global reduction, per-image lists
        gathered for the per-image mean; a new best score writes ``best`` (rank 0)."""
        if not self._validating:
            return
        stats = ConfusionStats.cat([s for s, _ in outputs])
        counts = torch.stack([c.sum() for c in stats.as_tuple()]).to(self.device)
        total = all_reduce_sum(counts).cpu()
        gathered = all_gather_objects((torch.stack(stats.as_tuple()), [i for _, ids in outputs for i in ids]))
        per_image = torch.cat([g[0] for g in gathered], dim=1)
        if per_image.shape[1] != len(self.val_set):
            raise RuntimeError(f"validation scored {per_image.shape[1]} images, expected {len(self.val_set)}")
        scores = {}
        for m in TRAINING_METRICS:
            scores[f"val_{m.name}_global"] = float(m.score(*total.reshape(4, 1), "global"))
            scores[f"val_{m.name}_per_image"] = float(m.score(*per_image, "per_image"))
        self._row.update(scores)
        score = scores["val_" + self.cfg.train.monitor]
        if score > self.best_score:
            self.best_score, self.best_epoch = score, self.epoch
            if self.is_main:
                with self._named_write_errors():
                    save_checkpoint(self.run_dir / "best", self.model, self.record({"val": self._row}))

    def on_epoch_end(self) -> None:
        """Time the epoch (slowest rank), append the CSV row and redraw the curves, checkpoint ``last``, log."""
        seconds = all_reduce_max(time.perf_counter() - self._epoch_start, self.device)
        self.elapsed += seconds
        row = self._row
        row["epoch_seconds"] = round(seconds, 3)
        row["elapsed_seconds"] = round(self.elapsed, 1)
        t = self.cfg.train
        checkpoint = self.epoch % t.checkpoint_every == 0 or self.finished()
        rng = all_gather_objects(self._rng_state()) if checkpoint else []
        if self.is_main:
            with self._named_write_errors():
                for run_logger in self.loggers:
                    run_logger.log_epoch(row)
                every = t.log_images_every
                if every and self.loggers and (self.epoch % every == 0 or self.finished()):
                    figure = self.overlay_figure()
                    for run_logger in self.loggers:
                        run_logger.log_image("val/overlays", figure, self.epoch)
                if checkpoint:
                    self.save_last(rng)
            self._log(row)
        self._epochs_this_call += 1

    @torch.inference_mode()
    def overlay_figure(self, count: int = 4) -> np.ndarray:
        """The first ``count`` validation images with the current model's masks (orange) and the truth (green
        outline), side by side at the working size: (H, count * W, 3) uint8. Draws no random number."""
        from ..viz.overlay import overlay_mask

        self.model.eval()
        panels = []
        for i in range(min(count, len(self.val_set))):
            x, _, _ = self.val_set[i]
            image, truth = self.val_set.load_resized(i)
            x = x[None].to(self.device)
            if self.cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(self.cfg.train.precision, self.device):
                logits = self.model(x).float()
            mask = (torch.sigmoid(logits)[0, 0] > self.cfg.train.threshold).to(torch.uint8).cpu().numpy()
            panels.append(overlay_mask(np.asarray(image), mask, truth=np.asarray(truth)))
        return np.concatenate(panels, axis=1) if panels else np.zeros((8, 8, 3), np.uint8)

    def on_train_end(self) -> None:
        """After the last epoch (rank 0): with the best weights, choose the post-processing and fit the trust parts.

        The post-processing (largest component, fill holes) that raises the monitored validation Dice, then the
        temperature and the quality estimator (validation ids) and the training images' description
        (:func:`~lesionseg.inference.trust_fit.fit_trust`), are stored in ``best.json``. A run left before its end
        (``stop_after``) chooses nothing yet.
        """
        barrier()
        best = self.run_dir / "best"
        train = self.cfg.train
        fit_trust_now = train.trust and len(self.val_set) >= 3
        wanted = self.is_main and self.finished() and (train.postprocess or fit_trust_now)
        if not (wanted and best.with_suffix(".json").is_file()):
            return
        model, record = load_model(best)
        if train.postprocess:
            # The masks before any post-processing: the choice is made here.
            predictor = Predictor.from_record(
                model, record, precision=train.precision, device=self.device, postprocess=()
            )
            preds, gts = [], []
            for pred, target, _ in predictor.predict_dataset(self.val_set):
                preds.extend(p[0].numpy() for p in pred)
                gts.extend(t[0].numpy() for t in target)
            reduction = "per_image" if train.monitor == "dice_per_image" else "global"
            choice = select_postprocessing(preds, gts, reduction=reduction)
            chosen = PostProcessing(steps=tuple(choice.steps), reduction=choice.reduction, val_dice=dict(choice.scores))
            record = replace(record, postprocess=chosen)
            _logger.info(
                "post-processing chosen on %d validation ids: %s (%s)",
                len(preds),
                choice.steps or "none",
                choice.scores,
            )
        if fit_trust_now:
            # The predictor as it will predict (with the chosen post-processing), at T = 1.
            predictor = Predictor.from_record(
                model, record, precision=train.precision, device=self.device, temperature=1.0
            )
            fit = fit_trust(predictor, self.train_set.cases, self.val_set.cases)
            record = fit.apply_to(record)
            _logger.info(
                f"trust fitted on {len(self.val_set)} validation ids: temperature {fit.temperature:.3f} (ECE "
                f"{fit.validation['ece_before']:.4f} -> {fit.validation['ece_after']:.4f}), quality cut "
                f"{fit.quality['single'].low_confidence_below:.3f} (one pass) / "
                f"{fit.quality['flip'].low_confidence_below:.3f} (flip TTA), out-of-distribution threshold "
                f"{fit.description.threshold:.2f}"
            )
        save_checkpoint(best, model.cpu(), record)

    def summary(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "epochs": self.epoch,
            "epochs_planned": self.cfg.train.epochs,
            "finished": self.finished(),
            "elapsed_seconds": self.elapsed,
            "best_epoch": self.best_epoch,
            "best_" + self.cfg.train.monitor: self.best_score,
        }

    # ----------------------------------------------------------------------------------------------------- loop
    def fit(self, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        """Train until the epoch count or the time budget is reached; returns a summary.

        Args:
            resume: continue from the run folder's ``last`` checkpoint.
            stop_after: leave after this many epochs of this call (the run stays resumable), e.g. to time-slice.
        """
        self.on_train_start(resume=resume, stop_after=stop_after)
        while self.keep_training():
            self.on_epoch_start()
            losses = [self.train_step(batch) for batch in self.train_batches()]
            self.on_train_epoch_end(losses)
            self.on_validation_epoch_start()
            outputs = [self.validation_step(batch) for batch in self.validation_batches()]
            self.on_validation_epoch_end(outputs)
            self.on_epoch_end()
        self.on_train_end()
        return self.summary()

    def finished(self) -> bool:
        budget = self.cfg.train.time_budget_min
        return self.epoch >= self.cfg.train.epochs or bool(budget and self.elapsed >= 60.0 * budget)

    def finished_after(self, epoch_seconds: float) -> bool:
        budget = self.cfg.train.time_budget_min
        return self.epoch >= self.cfg.train.epochs or bool(budget and self.elapsed + epoch_seconds >= 60.0 * budget)

    # ----------------------------------------------------------------------------------------------------- records
    def record(self, metrics: dict[str, Any] | None = None, **fields: Any) -> ModelRecord:
        """The record of the model as it is now: the one constructor of every record a run writes.

        Args:
            metrics: the validation row of this epoch (``best``), under ``val``.
            **fields: further :class:`ModelRecord` fields (``finished``, ``elapsed_seconds`` for ``last``).
        """
        d = self.cfg.data
        return ModelRecord(
            model=self.cfg.model.name,
            model_kwargs=dict(self.cfg.model.kwargs),
            in_channels=d.in_channels,
            num_classes=1,
            image_size=d.image_size,
            mean=d.mean,
            std=d.std,
            threshold=self.cfg.train.threshold,
            dataset=DataSource(layout=d.layout, root=d.root, split=d.split),
            epoch=self.epoch,
            step=self.step,
            metrics=metrics or {},
            trained_on=TrainedOn(
                device=self.device.type,
                processes=self.dist.world_size,
                precision=self.cfg.train.precision,
                gpu=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
                machine=machine_description(self.device),
                lesionseg_commit=lesionseg_commit(),
            ),
            config=config_to_dict(self.cfg),
            **fields,
        )

    def _rng_state(self) -> dict[str, Tensor]:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_last(self, rng: list[dict[str, Tensor]] | None = None) -> None:
        """Write the resumable ``last`` checkpoint (rank 0); ``rng`` holds every rank's RNG state, in rank order."""
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "best_score": self.best_score if math.isfinite(self.best_score) else None,
            "best_epoch": self.best_epoch,
            "rng": rng or [self._rng_state()],
        }
        record = self.record(finished=self.finished(), elapsed_seconds=round(self.elapsed, 1))
        save_checkpoint(self.run_dir / "last", self.model, record, state)

    def resume(self) -> None:
        """Restore model, optimiser, counters and RNG from ``last``; the next epoch continues the run.

        Under DDP every rank reads the run folder (on multi-node runs it must be on a shared filesystem) and takes
        its own RNG state back when the process count is unchanged; with another count the ranks are reseeded.
        """
        stem = self.run_dir / "last"
        try:
            record = load_record(stem)
            state = load_state(stem, record)
            # Into this trainer's own model (a subclass may build it differently from the registry's factory).
            load_weights(stem, record, self.model)
        except CheckpointError as err:
            raise CheckpointError(f"{err}\n{self._recovery_hint()}") from err
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.best_score = state["best_score"] if state["best_score"] is not None else -math.inf
        self.best_epoch = int(state["best_epoch"])
        rng = state.get("rng") or [{"torch": state["torch_rng"]}]  # older checkpoints stored one torch state
        if len(rng) == self.dist.world_size:
            torch.set_rng_state(rng[self.dist.rank]["torch"])
            if self.device.type == "cuda" and "cuda" in rng[self.dist.rank]:
                torch.cuda.set_rng_state(rng[self.dist.rank]["cuda"], self.device)
        else:
            _logger.warning("resuming %d-process state on %d processes: reseeding", len(rng), self.dist.world_size)
            seed_everything(self.cfg.train.seed + 1_000_003 * self.dist.rank + self.epoch)

    @contextlib.contextmanager
    def _named_write_errors(self) -> Iterator[None]:
        """A file of the run that cannot be written (a full disk) ends the run with the file named and how to go on:
        checkpoints are written whole or not at all, so ``last`` on disk is the last complete one."""
        try:
            yield
        except OSError as err:
            last = self.run_dir / "last.json"
            where = f"the last complete checkpoint is {last}" if last.is_file() else "no checkpoint was completed"
            raise OSError(
                f"{err}\n{where}; free some space, then continue with: lesionseg train --resume {self.run_dir}"
            ) from err

    def _recovery_hint(self) -> str:
        """What to do when ``last`` cannot be resumed: the run's best weights, or the same run again."""
        run = self.run_dir
        lines = ["cannot resume from this checkpoint."]
        if (run / "best.json").is_file():
            lines.append(f"  its best weights so far: lesionseg evaluate --checkpoint {run / 'best'}")
        lines.append(f"  start the run over:      lesionseg train --config {run / 'config.yaml'} --overwrite")
        return "\n".join(lines)

    def _log(self, row: dict[str, Any]) -> None:
        parts = [
            f"epoch {row['epoch']}/{self.cfg.train.epochs}",
            f"loss {row['train_loss']:.4f}",
            f"lr {row['lr']:.2e}",
        ]
        if "val_dice_per_image" in row:
            parts.append(f"val Dice per-image {row['val_dice_per_image']:.4f} global {row['val_dice_global']:.4f}")
        parts.append(f"{row['epoch_seconds']:.1f}s (elapsed {row['elapsed_seconds'] / 60:.1f} min, {self.eta_text()})")
        _logger.info(" | ".join(parts))

    def eta_seconds(self) -> float:
        """Seconds the whole run still needs: the remaining epochs at the mean epoch time so far (validation and
        checkpoints included), capped by what is left of a time budget."""
        if self.finished() or self.epoch == 0:
            return 0.0
        left = (self.cfg.train.epochs - self.epoch) * self.elapsed / self.epoch
        budget = self.cfg.train.time_budget_min
        return min(left, max(0.0, 60.0 * budget - self.elapsed)) if budget else left

    def eta_text(self) -> str:
        eta = self.eta_seconds()
        if eta <= 0:
            return "done"
        clock = time.strftime("%H:%M", time.localtime(time.time() + eta))
        return f"ETA {eta / 60:.1f} min, ~{clock}" if eta < 5400 else f"ETA {eta / 3600:.1f} h, ~{clock}"

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
