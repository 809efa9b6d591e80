"""Cross-validation inside a split's training part, and its out-of-fold (OOF) predictions (nnU-Net style).

A cross-validation folder ``<train.out_dir>/<name>/`` holds ``splits/fold_<i>.json`` (the folds of
:func:`~lesionseg.data.splits.cv_folds`, written once and checked when present) and one ordinary run folder per fold,
``fold_<i>/`` (``train.name=fold_<i>``, ``train.out_dir=<out_dir>/<name>``), so a fold trained by plain
``lesionseg train --set data.split=.../fold_<i>.json`` is the same as one trained by ``train --folds``.

After a fold finishes, its best checkpoint predicts its validation ids (the fold): ``fold_<i>/oof.npz`` holds the
sigmoid probabilities at the working size before post-processing, plain and flip-averaged, with the truths;
``fold_<i>/oof_scores.csv`` the per-image scores at native resolution with the record's post-processing, as
``lesionseg evaluate`` computes them. ``cv_summary.{json,md}`` pools them over the folds.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.base import scan_cases
from ..data.dataset import SegmentationDataset
from ..data.splits import Split, case_groups, case_strata, cv_folds, load_split, save_split, select_cases
from ..inference.predictor import Predictor
from ..models.hub import CheckpointError, load_model, load_record
from ..runtime import resolve_device
from .config import RunConfig, load_config
from .evaluator import evaluate_checkpoint

__all__ = [
    "CrossValidation",
    "default_strata_field",
    "fold_state",
    "pooled_scores",
    "summarize_cv",
    "train_folds",
    "write_oof",
]

_logger = logging.getLogger(__name__)

#: The case field a cross-validation is stratified by when the cases have it (PH2's diagnosis).
STRATA_FIELDS = ("diagnosis",)


def default_strata_field(cases: list, ids: set[str]) -> str | None:
    """The field of :data:`STRATA_FIELDS` every case of ``ids`` has, else None (no stratification)."""
    pool = [c for c in cases if c.id in ids]
    for name in STRATA_FIELDS:
        if pool and all(c.meta.get(name) is not None for c in pool):
            return name
    return None


def fold_state(run_dir: str | Path, wants_postprocess: bool | None = None) -> str:
    """``new`` (nothing to resume), ``partial`` (resume it) or ``finished``, read from the run folder.

    Finished = the trainer wrote its ``last`` record with ``finished`` and its end-of-run choice into ``best``
    (the post-processing, when the run chooses one): a run stopped between the two is resumed, which only redoes the
    end of the run. ``wants_postprocess`` None = the run's own ``train.postprocess``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "last.json").is_file():
        return "new"
    try:
        last = load_record(run_dir / "last")
    except CheckpointError:
        return "partial"
    if not last.finished or not (run_dir / "best.json").is_file():
        return "partial"
    if wants_postprocess is None:
        wants_postprocess = load_config(run_dir / "config.yaml").train.postprocess
    if wants_postprocess and load_record(run_dir / "best").postprocess is None:
        return "partial"
    return "finished"


@dataclass
class CrossValidation:
    """The folds of a config's split and where their runs live.

    Attributes:
        root: ``<train.out_dir>/<name>``.
        folds: fold ``i``'s split (train = the other folds, val = fold ``i``, test = the split's test ids).
    """

    root: Path
    folds: list[Split]

    def split_path(self, i: int) -> Path:
        return self.root / "splits" / f"fold_{i}.json"

    def run_dir(self, i: int) -> Path:
        return self.root / f"fold_{i}"

    @classmethod
    def prepare(
        cls,
        cfg: RunConfig,
        k: int,
        name: str | None = None,
        stratify: str | None = None,
        group_by: str | None = None,
        seed: int = 0,
    ) -> CrossValidation:
        """Deal the config's training ids (``data.split``'s train + val) into ``k`` folds; write the split files
        once, and check existing ones are the same folds.

        Args:
            stratify: a case field; None = the layout's diagnosis where every case has one, else none; ``none`` = no
                stratification.
            group_by: keep the cases of a group in one fold (see :func:`~lesionseg.data.splits.case_groups`).

        Raises:
            ValueError: ``k`` < 2, or a stored fold that differs from the one drawn now.
        """
        if k < 2:
            raise ValueError(f"--folds must be >= 2, got {k}")
        root = Path(cfg.train.out_dir) / (name or cfg.train.name)
        split = load_split(cfg.data.split)
        cases = scan_cases(cfg.data.root, cfg.data.layout).cases
        pool = set(split.train) | set(split.val)
        field = default_strata_field(cases, pool) if stratify is None else (None if stratify == "none" else stratify)
        strata = case_strata([c for c in cases if c.id in pool], field, "--stratify") if field else None
        groups = case_groups(cases, group_by) if group_by else None
        folds = cv_folds(split, k, seed, strata, field, groups, group_by)
        cv = cls(root, folds)
        for i, fold in enumerate(folds):
            path = cv.split_path(i)
            if path.is_file():
                stored = load_split(path)
                if (sorted(stored.train), sorted(stored.val), sorted(stored.test)) != (
                    sorted(fold.train),
                    sorted(fold.val),
                    sorted(fold.test),
                ):
                    raise ValueError(
                        f"{path} holds other folds than {k} folds of {cfg.data.split} (seed {seed}, stratified by "
                        f"{field or 'nothing'}, grouped by {group_by or 'nothing'}) give; use another --name"
                    )
            else:
                save_split(fold, path)
        return cv

    def fold_config(self, config: str | Path | None, overrides: list[str], i: int) -> RunConfig:
        """Fold ``i``'s run config: the config with its split, out_dir and name set to the fold's."""
        extra = [f"data.split={self.split_path(i)}", f"train.out_dir={self.root}", f"train.name=fold_{i}"]
        return load_config(config, [*overrides, *extra])


def train_folds(
    config: str | Path | None,
    overrides: list[str],
    k: int,
    only: list[int] | None = None,
    name: str | None = None,
    stratify: str | None = None,
    group_by: str | None = None,
    progress: bool = True,
    oof_only: bool = False,
) -> CrossValidation:
    """Train the folds of a config (``lesionseg train --folds K``): finished ones are skipped, interrupted ones
    resumed; after each, its out-of-fold predictions are written (when missing); then the summary.

    Args:
        only: the fold indices to train (default: all), so folds can spread over machines.
        oof_only: train nothing; (re)compute the OOF files of the finished folds and the summary.
    """
    from .trainer import Trainer

    cfg = load_config(config, overrides)
    cv = CrossValidation.prepare(cfg, k, name, stratify, group_by)
    wanted = list(range(k)) if not only else sorted(set(only))
    bad = [i for i in wanted if not 0 <= i < k]
    if bad:
        raise ValueError(f"--fold {bad[0]}: folds are 0..{k - 1}")
    for i in wanted:
        run_dir = cv.run_dir(i)
        state = fold_state(run_dir, cfg.train.postprocess)
        if not oof_only and state != "finished":
            if state == "partial":
                _logger.info("fold %d: resuming %s", i, run_dir)
                # The run's saved config, with only where it runs changed (``--device``): the rest of the
                # overrides are in it already, and out_dir/name are the fold's.
                device = [o for o in overrides if o.partition("=")[0].strip() == "train.device"]
                trainer = Trainer.from_run_dir(run_dir, device, progress=progress)
            else:
                _logger.info("fold %d: training into %s", i, run_dir)
                trainer = Trainer(cv.fold_config(config, overrides, i), progress=progress)
            try:
                trainer.fit(resume=state == "partial")
            finally:
                trainer.close()
            if not trainer.is_main:
                continue
            state = fold_state(run_dir, cfg.train.postprocess)
        elif state == "finished":
            _logger.info("fold %d: finished in %s", i, run_dir)
        if state == "finished" and (oof_only or not (run_dir / "oof.npz").is_file()):
            write_oof(run_dir, device=cfg.train.device)
    summarize_cv(cv.root, device=cfg.train.device)
    return cv


def write_oof(run_dir: str | Path, device: str = "auto", batch_size: int = 8) -> Path:
    """A finished fold's out-of-fold predictions: ``oof.npz`` (working size, before post-processing) and
    ``oof_scores.csv`` (native resolution, with the record's post-processing, plain and flip TTA).

    ``oof.npz`` keys: ``ids`` (str), ``probs`` and ``probs_flip`` (float16 (N, H, W), T = 1), ``truths`` (uint8).
    """
    run_dir = Path(run_dir)
    stem = run_dir / "best"
    model, record = load_model(stem)
    if record.dataset is None or not record.dataset.split:
        raise ValueError(f"{stem}.json names no split: its validation ids are unknown")
    split = record.dataset.split
    cases, _ = select_cases(record.dataset.root, record.dataset.layout, split, "val", channels=record.in_channels)
    predictor = Predictor.from_record(model, record, device=resolve_device(device), temperature=1.0)
    dataset = SegmentationDataset(
        cases, size=record.image_size, mean=record.mean, std=record.std, in_channels=record.in_channels, cache=False
    )
    ids: list[str] = []
    probs, flips, truths = [], [], []
    for x, y, batch_ids in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        passes = predictor.pass_logits(x, flips=True)  # (3, N, 1, h, w): plain, h-flip, v-flip
        probs.append(torch.sigmoid(passes[0][:, 0]).numpy().astype(np.float16))
        flips.append(torch.sigmoid(passes.mean(0)[:, 0]).numpy().astype(np.float16))
        truths.append(y[:, 0].numpy().astype(np.uint8))
        ids.extend(batch_ids)
    np.savez_compressed(
        run_dir / "oof.npz",
        ids=np.array(ids, dtype=str),
        probs=np.concatenate(probs),
        probs_flip=np.concatenate(flips),
        truths=np.concatenate(truths),
    )
    rows: dict[str, dict[str, Any]] = {}
    for tta, suffix in ((False, ""), (True, "_flip")):
        evaluation = evaluate_checkpoint(
            stem, split=split, subset="val", native=True, tta=tta, include_hd95=False, trust=False, device=device
        )
        for row in evaluation.metrics.per_image_table():
            out = rows.setdefault(str(row["id"]), {"id": str(row["id"])})
            out.update({f"{key}{suffix}": row[key] for key in ("tp", "fp", "fn", "dice", "iou")})
    with open(run_dir / "oof_scores.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(next(iter(rows.values()))))
        writer.writeheader()
        writer.writerows(rows.values())
    _logger.info("%s: out-of-fold predictions of %d ids written", run_dir, len(ids))
    return run_dir / "oof.npz"


def pooled_scores(rows: list[dict[str, Any]], suffix: str = "") -> dict[str, float]:
    """Dice and IoU per image (mean over rows) and global (from the summed counts) of ``oof_scores.csv`` rows."""
    tp = sum(float(r[f"tp{suffix}"]) for r in rows)
    fp = sum(float(r[f"fp{suffix}"]) for r in rows)
    fn = sum(float(r[f"fn{suffix}"]) for r in rows)
    return {
        "dice_per_image": float(np.mean([float(r[f"dice{suffix}"]) for r in rows])),
        "iou_per_image": float(np.mean([float(r[f"iou{suffix}"]) for r in rows])),
        "dice_global": 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn),
        "iou_global": 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn),
        "images": len(rows),
    }


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fold_dirs(root: str | Path) -> list[Path]:
    """The ``fold_<i>`` run folders of a cross-validation folder, by fold index."""
    dirs = [p for p in Path(root).glob("fold_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[5:]))


def summarize_cv(root: str | Path, device: str = "auto", recompute: bool = False) -> dict[str, Any]:
    """Write ``cv_summary.json`` and ``cv_summary.md`` of a cross-validation folder: each fold's validation Dice
    (its best record) and the pooled out-of-fold Dice, per image and global, plain and with flip TTA.

    Finished folds without OOF files (trained by plain ``train``) get them first; with ``recompute`` every finished
    fold's are rewritten. Unfinished folds are listed as such.
    """
    root = Path(root)
    folds: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for run_dir in fold_dirs(root):
        i = int(run_dir.name[5:])
        state = fold_state(run_dir)
        entry: dict[str, Any] = {"fold": i, "run_dir": str(run_dir), "state": state}
        if state == "finished":
            if recompute or not (run_dir / "oof_scores.csv").is_file() or not (run_dir / "oof.npz").is_file():
                write_oof(run_dir, device=device)
            val = load_record(run_dir / "best").metrics.get("val", {})
            entry["val_dice_per_image"] = val.get("val_dice_per_image")
            entry["val_dice_global"] = val.get("val_dice_global")
            fold_rows = _read_rows(run_dir / "oof_scores.csv")
            entry["oof"] = pooled_scores(fold_rows)
            rows.extend(fold_rows)
        folds.append(entry)
    done = [f["fold"] for f in folds if f["state"] == "finished"]
    summary: dict[str, Any] = {
        "cv_dir": str(root),
        "folds": folds,
        "finished_folds": done,
        "oof": {"plain": pooled_scores(rows), "flip": pooled_scores(rows, "_flip")} if rows else None,
        "commands": {
            "train a fold": f"lesionseg train --config CONFIG --folds {len(folds)} --fold I --name {root.name} "
            f"--set train.out_dir={root.parent}",
            "summarize": f"lesionseg cv summarize {root}",
            "find the best configuration": f"lesionseg cv find-best {root} [OTHER_CV_DIR ...]",
        },
    }
    (root / "cv_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        f"# Cross-validation {root}",
        "",
        "| fold | state | val Dice per-image | OOF Dice per-image | OOF Dice global |",
    ]
    lines.append("|---|---|---|---|---|")
    for f in folds:
        oof = f.get("oof") or {}
        lines.append(
            f"| {f['fold']} | {f['state']} | {_pct(f.get('val_dice_per_image'))} | "
            f"{_pct(oof.get('dice_per_image'))} | {_pct(oof.get('dice_global'))} |"
        )
    if rows:
        lines += ["", f"Pooled out-of-fold Dice over {len(rows)} images of folds {done} (native resolution):", ""]
        for mode in ("plain", "flip"):
            s = summary["oof"][mode]
            lines.append(
                f"- {'flip TTA' if mode == 'flip' else 'one pass'}: per-image {_pct(s['dice_per_image'])}, "
                f"global {_pct(s['dice_global'])}"
            )
    (root / "cv_summary.md").write_text("\n".join(lines) + "\n")
    return summary


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}"
