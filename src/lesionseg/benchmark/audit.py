"""The protocol audit: how much choosing the checkpoint on the test ids inflates the reported test Dice.

Several public codebases of this field keep the epoch whose *test* score is highest. A benchmark with
``audit: {test_curve: true}`` measures what that shortcut is worth: every run also scores its test ids after every
epoch (:class:`TestCurveTrainer`), recorded only, never used to choose anything (the run's checkpoint is still chosen on
the validation ids, and the recording changes no weight: it draws no random number). The report then compares, per
model, the test Dice of the epoch the validation ids chose with the test Dice of the epoch the test ids would have
chosen (:func:`audit_section`).

What a run keeps (committed, small; :func:`export_test_curve`):

* ``test_curve.csv``: one row per epoch, ``epoch, test_dice_per_image, test_dice_global``.
* ``test_selected.csv``: the per-image confusion counts (``epoch, id, tp, fp, fn, tn``) at the epochs that matter: the
  one chosen on validation and the ones chosen on test (per-image and global Dice), for the bootstrap intervals and the
  paired tests.

The curve is scored like validation: at the training size, thresholded at ``train.threshold``, without the
post-processing the run later chooses on validation, so both sides of the comparison are made the same way.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.base import SegmentationDataset, scan_cases
from ..data.cache import open_case_cache
from ..data.check import screen_cases
from ..data.splits import load_split
from ..engine.trainer import Trainer
from ..metrics.stats import global_dice, paired_bootstrap_ci, paired_permutation_global, paired_wilcoxon
from .results import RunResults

__all__ = [
    "CURVE_FILE",
    "SELECTED_FILE",
    "TestCurveTrainer",
    "audit_section",
    "chosen_epochs",
    "export_test_curve",
    "read_test_curve",
]

_logger = logging.getLogger(__name__)

#: The per-epoch test Dice kept with a run.
CURVE_FILE = "test_curve.csv"
#: The per-image counts at the chosen epochs kept with a run.
SELECTED_FILE = "test_selected.csv"
# The run folder's working file: every epoch's per-image counts (not committed).
_WORK_FILE = "test_curve_counts.csv"
_COUNT_FIELDS = ("epoch", "id", "tp", "fp", "fn", "tn")


class TestCurveTrainer(Trainer):
    """A :class:`~lesionseg.engine.Trainer` that also scores the split's test ids after every epoch (rank 0).

    The counts go to ``<run folder>/test_curve_counts.csv`` (one row per epoch and test image). Nothing is chosen on
    them, and the batches are made without a DataLoader, so no random number is drawn: the run's weights, validation
    scores and checkpoints are exactly those of the same run without the curve.
    """

    __test__ = False  # a class named Test* is not a pytest test class

    def _setup(self) -> None:
        super()._setup()
        self.test_set = self._build_test_set() if self.is_main else None

    def _build_test_set(self) -> SegmentationDataset:
        d = self.cfg.data
        split = load_split(d.split)
        size = (int(d.image_size[0]), int(d.image_size[1]))
        disk_cache = open_case_cache(d.cache_dir, d.root)
        # Recorded only: an unreadable test image is left out of the curve rather than stop the training.
        cases, _ = screen_cases(
            scan_cases(d.root, d.layout),
            set(split.test),
            skip_bad=True,
            channels=d.in_channels,
            known_readable=None if disk_cache is None else lambda c: disk_cache.contains(c, size, d.in_channels),
        )
        cases = [c for c in cases if c.mask is not None]
        if not cases:
            raise ValueError(f"audit.test_curve: split {d.split} has no readable test ids under {d.root}")
        return SegmentationDataset(
            cases, size=size, mean=d.mean, std=d.std, in_channels=d.in_channels, cache=True, disk_cache=disk_cache
        )

    def on_train_start(self, resume: bool = False, stop_after: int | None = None) -> None:
        super().on_train_start(resume=resume, stop_after=stop_after)
        if not self.is_main:
            return
        path = self.run_dir / _WORK_FILE
        if not resume:
            path.unlink(missing_ok=True)
        elif path.is_file():  # rows past the resumed epoch were written after the last checkpoint of a killed run
            rows = [r for r in _read_csv(path) if int(r["epoch"]) <= self.epoch]
            _write_csv(path, _COUNT_FIELDS, rows)

    def on_epoch_end(self) -> None:
        if self.is_main and self.test_set is not None:
            self._record_test_counts()
        super().on_epoch_end()

    def _record_test_counts(self) -> None:
        self.model.eval()
        rows = []
        batch = 16
        for start in range(0, len(self.test_set), batch):
            items = [self.test_set[i] for i in range(start, min(start + batch, len(self.test_set)))]
            x = torch.stack([it[0] for it in items])
            y = torch.stack([it[1] for it in items])
            stats, ids = self.validation_step((x, y, [it[2] for it in items]))
            counts = torch.stack(stats.as_tuple(), dim=1).long().tolist()
            rows += [dict(zip(_COUNT_FIELDS, [self.epoch, i, *c])) for i, c in zip(ids, counts)]
        path = self.run_dir / _WORK_FILE
        new = not path.is_file()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_COUNT_FIELDS, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerows(rows)


# ------------------------------------------------------------------------------------------------------ files
def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, fields: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _dice(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-image Dice, 1 where prediction and truth are both empty (as the metric registry scores it)."""
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)


def _counts_by_epoch(rows: Sequence[Mapping[str, str]]) -> dict[int, dict[str, np.ndarray]]:
    out: dict[int, dict[str, np.ndarray]] = {}
    for r in rows:
        out.setdefault(int(r["epoch"]), {})[r["id"]] = np.array([float(r[k]) for k in ("tp", "fp", "fn", "tn")])
    return out


def read_test_curve(path: Path) -> dict[str, np.ndarray]:
    """A run's ``test_curve.csv`` as arrays ``epoch``, ``per_image``, ``global`` (in epoch order)."""
    rows = _read_csv(path)
    return {
        "epoch": np.array([int(r["epoch"]) for r in rows]),
        "per_image": np.array([float(r["test_dice_per_image"]) for r in rows]),
        "global": np.array([float(r["test_dice_global"]) for r in rows]),
    }


def chosen_epochs(curve: Mapping[str, np.ndarray], val_epoch: int) -> dict[str, int]:
    """The epochs compared: ``validation`` (the run's checkpoint) and, per reduction, the first epoch with the highest
    test Dice (``test_per_image``, ``test_global``)."""
    return {
        "validation": int(val_epoch),
        "test_per_image": int(curve["epoch"][int(np.argmax(curve["per_image"]))]),
        "test_global": int(curve["epoch"][int(np.argmax(curve["global"]))]),
    }


def export_test_curve(run_dir: Path, dest: Path, val_epoch: int) -> bool:
    """Writes ``test_curve.csv`` and ``test_selected.csv`` of a run folder into its results folder ``dest``.

    Returns False (writing nothing) when the run folder recorded no curve (trained without the audit) or only part of
    one (started without it).
    """
    work = run_dir / _WORK_FILE
    if not work.is_file():
        return False
    by_epoch = _counts_by_epoch(_read_csv(work))
    if sorted(by_epoch) != list(range(1, len(by_epoch) + 1)) or val_epoch not in by_epoch:
        # e.g. a run started without the audit and resumed with it: a partial curve would bias the comparison
        _logger.warning("%s: the test curve does not cover every epoch up to %d; not kept", work, val_epoch)
        return False
    curve_rows = []
    for epoch in sorted(by_epoch):
        c = np.stack([by_epoch[epoch][k] for k in sorted(by_epoch[epoch])])
        per_image = float(_dice(c[:, 0], c[:, 1], c[:, 2]).mean())
        curve_rows.append({"epoch": epoch, "test_dice_per_image": per_image, "test_dice_global": global_dice(c)})
    dest.mkdir(parents=True, exist_ok=True)
    _write_csv(dest / CURVE_FILE, ("epoch", "test_dice_per_image", "test_dice_global"), curve_rows)
    epochs = sorted(set(chosen_epochs(read_test_curve(dest / CURVE_FILE), val_epoch).values()))
    rows = [
        {"epoch": e, "id": i, **{k: int(v) for k, v in zip(("tp", "fp", "fn", "tn"), by_epoch[e][i])}}
        for e in epochs
        for i in sorted(by_epoch[e])
    ]
    _write_csv(dest / SELECTED_FILE, _COUNT_FIELDS, rows)
    return True


# ------------------------------------------------------------------------------------------------------ report
def _selections(r: RunResults) -> dict[str, dict[str, np.ndarray]] | None:
    """Per selection (``validation``, ``test_per_image``, ``test_global``) the per-image counts of one run."""
    curve_file, selected_file = r.path / CURVE_FILE, r.path / SELECTED_FILE
    if not curve_file.is_file() or not selected_file.is_file():
        return None
    chosen = chosen_epochs(read_test_curve(curve_file), int(r.meta["best_epoch"]))
    by_epoch = _counts_by_epoch(_read_csv(selected_file))
    return {name: by_epoch[epoch] for name, epoch in chosen.items()}


def _pooled(runs: Sequence[dict[str, dict[str, np.ndarray]]], name: str, ids: list[str]) -> tuple[Any, Any]:
    """Per image: Dice averaged over the runs, and counts summed over them (as the report's other intervals)."""
    dice = np.mean([[_dice(*s[name][i][:3]) for i in ids] for s in runs], axis=0)
    counts = np.sum([[s[name][i] for i in ids] for s in runs], axis=0)
    return dice, counts


def audit_section(
    runs: Mapping[str, Sequence[RunResults]], resamples: int, seed_label: Any, grouped_note: str
) -> list[str]:
    """The report's "How much the usual shortcuts inflate" section (markdown lines) from the runs' kept curves.

    Args:
        runs: finished runs by model label (those without a kept curve are left out and named).
        resamples: bootstrap resamples.
        seed_label: ``cfg.run_key``: run index -> its folder name, for the table.
        grouped_note: what the page says about random versus grouped splits for this dataset.
    """
    lines = [
        "## How much the usual shortcuts inflate",
        "",
        "Every run also scored its test ids after every epoch (recorded only: its checkpoint is still chosen on the "
        "validation ids, and the recording changes no weight). **Chosen on validation** is the test Dice of the "
        "epoch the protocol keeps; **chosen on test** is the highest test Dice over the epochs, what a codebase that "
        "keeps its best-on-test checkpoint reports. Both at the training size, thresholded, without post-processing "
        "(so the first may differ from the tables above by the post-processing chosen on validation). Per model, "
        "each image's Dice is averaged (per-image) or its counts summed (global) over the model's runs, then: "
        f"Δ = chosen on test minus chosen on validation, in Dice points, with a paired percentile bootstrap interval "
        f"over test images ({resamples} resamples, seed 0); p: two-sided Wilcoxon signed-rank test over images "
        "(per-image) or a paired permutation test swapping each image's counts between the two choices (global, "
        f"{resamples} permutations).",
        "",
    ]
    rows, left_out, deltas = [], [], {"per_image": [], "global": []}
    ranking: dict[str, tuple[float, float]] = {}
    for label, rs in runs.items():
        sel = [(r, s) for r in rs for s in [_selections(r)] if s is not None]
        left_out += [f"{label} {r.key}" for r in rs if _selections(r) is None]
        if not sel:
            continue
        ids = sorted(set.intersection(*(set(s["validation"]) for _, s in sel)))
        epochs = "; ".join(
            f"{seed_label(r.run)}: {int(r.meta['best_epoch'])} / "
            f"{chosen_epochs(read_test_curve(r.path / CURVE_FILE), int(r.meta['best_epoch']))['test_per_image']} of "
            f"{int(r.meta['epochs'])}"
            for r, _ in sel
        )
        runs_sel = [s for _, s in sel]
        val_dice, val_counts = _pooled(runs_sel, "validation", ids)
        test_dice, _ = _pooled(runs_sel, "test_per_image", ids)
        _, test_counts = _pooled(runs_sel, "test_global", ids)
        lo, hi = paired_bootstrap_ci(test_dice, val_dice, resamples=resamples)
        wil = paired_wilcoxon(test_dice, val_dice)
        glo, ghi = paired_bootstrap_ci(counts_a=test_counts, counts_b=val_counts, resamples=resamples)
        gp = paired_permutation_global(test_counts, val_counts, resamples=resamples)
        d_img = float(np.mean(test_dice) - np.mean(val_dice))
        d_glob = global_dice(test_counts) - global_dice(val_counts)
        ranking[label] = (float(np.mean(val_dice)), float(np.mean(test_dice)))
        deltas["per_image"].append(d_img)
        deltas["global"].append(d_glob)
        rows.append(
            [
                label,
                str(len(sel)),
                str(len(ids)),
                epochs,
                f"{100 * np.mean(val_dice):.2f}",
                f"{100 * np.mean(test_dice):.2f}",
                f"{100 * d_img:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]",
                _p(wil.p_value),
                f"{100 * global_dice(val_counts):.2f}",
                f"{100 * global_dice(test_counts):.2f}",
                f"{100 * d_glob:+.2f} [{100 * glo:+.2f}, {100 * ghi:+.2f}]",
                _p(gp),
            ]
        )
    if not rows:
        return lines + ["No finished run kept a test curve yet.", ""]
    head = [
        "Model",
        "Runs",
        "Images",
        "Epoch chosen: val / test (of)",
        "Per-image: val",
        "test",
        "Δ [95% CI]",
        "p",
        "Global: val",
        "test",
        "Δ [95% CI]",
        "p",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * 8) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        f"Over the {len(rows)} models, choosing on the test ids adds {100 * np.mean(deltas['per_image']):+.2f} "
        f"points of per-image Dice on average (from {100 * min(deltas['per_image']):+.2f} to "
        f"{100 * max(deltas['per_image']):+.2f}) and {100 * np.mean(deltas['global']):+.2f} points of global Dice "
        f"(from {100 * min(deltas['global']):+.2f} to {100 * max(deltas['global']):+.2f}). The inflation cannot be "
        "negative for one run (the maximum over epochs includes the validation's choice); what the table shows is "
        "its size, and whether it is larger than the image-to-image noise.",
    ]
    if len(ranking) > 1:
        by_val = sorted(ranking, key=lambda k: -ranking[k][0])
        by_test = sorted(ranking, key=lambda k: -ranking[k][1])
        if by_val == by_test:
            verdict = "the same order"
        elif by_val[0] == by_test[0]:
            verdict = "another order, the same first"
        else:
            verdict = f"first {by_test[0]} instead of {by_val[0]}"
        lines[-1] += (
            f" Ranked by per-image Dice, chosen on validation: {', '.join(by_val)}; chosen on test: "
            f"{', '.join(by_test)} ({verdict})."
        )
    if left_out:
        lines += ["", f"Runs without a kept test curve (trained before the audit was on): {', '.join(left_out)}."]
    lines += ["", f"**Random versus grouped split.** {grouped_note}", ""]
    return lines


def _p(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
