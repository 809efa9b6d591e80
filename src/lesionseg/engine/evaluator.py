"""Evaluation: a model on a dataset at the working size, or at each image's native resolution."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.base import DataProblem, load_case_mask
from ..data.cache import open_case_cache
from ..data.dataset import SegmentationDataset
from ..data.io import ImageReadError, read_mask_values
from ..data.ph2 import diagnosis_name, diagnosis_order
from ..data.splits import Split, select_cases
from ..inference.postprocess import check_postprocess_steps
from ..inference.predictor import Predictor
from ..inference.trust_fit import TrustEvaluation, evaluate_trust
from ..metrics import SegmentationMetrics, format_table
from ..metrics.stats import SIZE_TERTILES, Subgroup, size_tertiles, subgroup_means
from ..models.hub import load_model, resolve_checkpoint
from ..runtime import resolve_device
from .measurements import MeasurementAgreement

__all__ = [
    "PREDICTION_EXTENSIONS",
    "Evaluation",
    "PredictionFiles",
    "evaluate_checkpoint",
    "evaluate_dataset",
    "evaluate_predictions",
    "match_predictions",
    "read_prediction_mask",
]

#: Mask files ``evaluate --predictions`` reads (lossless ones must hold two values; JPEG is thresholded at 127).
PREDICTION_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
_LOSSY = (".jpg", ".jpeg")
# Stem suffixes a mask file may add to its case id: ours (predict's <id>_mask.png) and the ISIC challenges'.
_MASK_SUFFIXES = ("", "_mask", "_segmentation", "_Segmentation")
# Files predict writes beside its masks that are not masks.
_NOT_MASKS = ("_overlay",)


def evaluate_dataset(
    predictor: Predictor,
    dataset: SegmentationDataset,
    native: bool = False,
    include_hd95: bool = False,
    progress: bool = False,
    on_case: Callable[[str, np.ndarray, np.ndarray], None] | None = None,
) -> SegmentationMetrics:
    """Scores of a predictor's masks on a dataset's cases (see :meth:`Predictor.predict_dataset`).

    At the working size (how the papers report) prediction and truth are both at the dataset's resized size; with
    ``native`` at each image's own resolution (probabilities resized back, compared with the original mask). The
    predictor's threshold, post-processing, flip TTA and precision apply. ``on_case(id, predicted mask, truth)``,
    when given, sees every case's two masks (uint8 (h, w); e.g. to measure them).
    """
    metrics = SegmentationMetrics(include_hd95=include_hd95)
    for pred, target, ids in predictor.predict_dataset(dataset, native=native, progress=progress):
        if on_case is not None:
            for i, case_id in enumerate(ids):
                on_case(case_id, pred[i, 0].numpy(), target[i, 0].numpy())
        metrics.update(pred, target, ids=ids)
    return metrics


@dataclass
class Evaluation:
    """A checkpoint's scores on a set of cases, with what was evaluated and how.

    Attributes:
        metrics: the accumulated metric object (both reductions, per-image rows).
        model: registered model name of the checkpoint.
        checkpoint: the checkpoint evaluated.
        cases: description of the evaluated cases.
        resolution: ``"HxW"`` (the working size) or ``"native resolution"``.
        skipped: cases left out for unusable files.
        agreement: measurements of predicted against ground-truth masks (``measurements=True``), else None.
        diagnoses: diagnosis per case id where the dataset gives one (PH2), for the subgroup table.
        trust: calibration, quality-estimate and out-of-distribution figures on the same cases (working size);
            None when not asked for.
    """

    metrics: SegmentationMetrics
    model: str
    checkpoint: str
    cases: str
    resolution: str
    skipped: list[DataProblem] = field(default_factory=list)
    agreement: MeasurementAgreement | None = None
    diagnoses: dict[str, str] = field(default_factory=dict)
    trust: TrustEvaluation | None = None
    predictions: PredictionFiles | None = None

    @property
    def title(self) -> str:
        return f"{self.model} on {self.cases}, at {self.resolution}"

    def results(self) -> dict[str, dict[str, float]]:
        return self.metrics.aggregate()

    def subgroups(self, resamples: int = 2000) -> dict[str, list[Subgroup]]:
        """Per-image Dice by diagnosis (where known) and by tertile of the ground truth's area (at the evaluated
        resolution), each with a percentile bootstrap interval over the group's images (seed 0)."""
        rows = self.metrics.per_image_table()
        dice = {str(r["id"]): float(r["dice"]) for r in rows}
        areas = {str(r["id"]): float(r["tp"]) + float(r["fn"]) for r in rows}
        out = {}
        if self.diagnoses:
            order = diagnosis_order(self.diagnoses.values())
            out["diagnosis"] = subgroup_means(dice, self.diagnoses, order, resamples)
        out["lesion size"] = subgroup_means(dice, size_tertiles(areas), SIZE_TERTILES, resamples)
        return out

    def subgroup_table(self, resamples: int = 2000) -> str:
        """:meth:`subgroups` as a markdown table, with the area range of each size tertile."""
        rows = self.metrics.per_image_table()
        areas = {str(r["id"]): float(r["tp"]) + float(r["fn"]) for r in rows}
        tertiles = size_tertiles(areas)
        lines = [
            f"**Per-image Dice by subgroup ({self.resolution}; 95% CI: percentile bootstrap over the group's images, "
            f"{resamples} resamples)**",
            "",
            "| Subgroup | Images | Dice (%) [95% CI] |",
            "|---|---:|---:|",
        ]
        for kind, groups in self.subgroups(resamples).items():
            for g in groups:
                name = f"{kind}: {g.name}"
                if kind == "lesion size" and g.n:
                    sizes = [a for k, a in areas.items() if tertiles[k] == g.name]
                    name += f" ({min(sizes):.0f}-{max(sizes):.0f} px² truth)"
                cell = "—" if not g.n else f"{100 * g.mean:.2f} [{100 * g.lower:.2f}, {100 * g.upper:.2f}]"
                lines.append(f"| {name} | {g.n} | {cell} |")
        return "\n".join(lines)

    def save(self, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Writes ``metrics.json`` (with ``extra`` fields), ``report.md`` and ``per_image.csv`` into ``out``; with
        trust figures also ``trust.json``, ``trust_per_image.csv`` and ``reliability.png``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        results = self.results()
        payload = {
            "checkpoint": self.checkpoint,
            "model": self.model,
            "cases": self.cases,
            "resolution": self.resolution,
            "results": results,
            **(extra or {}),
        }
        rows = self.metrics.per_image_table()
        if rows:
            with open(out / "per_image.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        report = format_table(results, self.title) + "\n"
        if rows:
            report += "\n" + self.subgroup_table() + "\n"
            with open(out / "subgroups.csv", "w", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(["kind", "subgroup", "images", "dice", "ci_lower", "ci_upper"])
                for kind, groups in self.subgroups().items():
                    writer.writerows([kind, g.name, g.n, g.mean, g.lower, g.upper] for g in groups)
        if self.agreement is not None:
            self.agreement.save(out, f"Measurements: {self.title}")
            report += "\n" + self.agreement.table(f"Measurements: {self.title}") + "\n"
        if self.trust is not None:
            payload["trust"] = self.trust.summary()
            (out / "trust.json").write_text(json.dumps(self.trust.to_dict(), indent=1) + "\n")
            with open(out / "trust_per_image.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.trust.rows[0]))
                writer.writeheader()
                writer.writerows(self.trust.rows)
            from ..viz.reliability import plot_reliability_diagram

            t = self.trust
            plot_reliability_diagram(
                {
                    f"T = 1 (ECE {t.before.ece:.4f})": t.before,
                    f"T = {t.temperature:.3g} (ECE {t.after.ece:.4f})": t.after,
                },
                out / "reliability.png",
                title=f"{self.model}: {len(t.rows)} images, pixels at the working size",
            )
            report += "\n" + "\n".join(f"- {line}" for line in t.lines()) + "\n"
        (out / "report.md").write_text(report)
        if self.skipped:
            ids = sorted({p.case_id or str(p.path) for p in self.skipped})
            payload["skipped"] = ids
            skipped = {"cases": ids, "problems": [p.to_dict() for p in self.skipped]}
            (out / "skipped.json").write_text(json.dumps(skipped, indent=1) + "\n")
        else:
            (out / "skipped.json").unlink(missing_ok=True)
        if self.predictions is not None:
            payload["predictions"] = self.predictions.to_dict()
        # metrics.json last: its presence marks a complete evaluation.
        (out / "metrics.json").write_text(json.dumps(payload, indent=1) + "\n")
        return out


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    layout: str | None = None,
    split: str | Split | None = "checkpoint",
    subset: str = "test",
    native: bool = False,
    threshold: float | None = None,
    precision: str = "fp32",
    tta: bool = False,
    include_hd95: bool = True,
    progress: bool = False,
    postprocess: bool = True,
    device: str = "auto",
    skip_bad: bool | None = None,
    cache_dir: str | None = None,
    measurements: bool = False,
    pixel_size: float | None = None,
    trust: bool = True,
) -> Evaluation:
    """Scores a checkpoint on a split's test ids or on any data root of a known layout.

    Args:
        checkpoint: checkpoint stem, ``.json``/``.safetensors`` file or run folder (its ``best``).
        data_root: data root; None = the one the checkpoint was trained on.
        layout: dataset layout; None = the checkpoint's (for its own root) or detected (for another root).
        split: split name, JSON path or :class:`Split`; ``"checkpoint"`` = the checkpoint's (refused when the record
            names none, unless ``subset="all"``: its training ids could not be left out); None = no split.
        subset: which cases (see :func:`select_cases`).
        native: score at each image's own resolution instead of the working size.
        threshold: probability threshold; None = the checkpoint's.
        precision: ``fp32``, ``bf16`` or (CUDA) ``fp16`` inference.
        tta: flip test-time augmentation (horizontal and vertical flips averaged), at either resolution.
        include_hd95: also compute HD95 (pixels of the evaluated resolution).
        progress: show a progress bar.
        postprocess: apply the post-processing the checkpoint record chose on validation data (if any).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        skip_bad: leave out cases with unusable files (listed in :attr:`Evaluation.skipped`) instead of refusing;
            None = the checkpoint's training setting ``data.skip_bad``.
        cache_dir: on-disk cache of decoded, resized images (``auto``, a folder, or ``""`` for none; see
            ``data.cache_dir``); None = the checkpoint's training setting ``data.cache_dir``.
        measurements: also measure every predicted and ground-truth mask and summarise their agreement
            (:attr:`Evaluation.agreement`); needs ``native`` (measurements are made at each image's own resolution).
        pixel_size: millimetres per pixel for the measurements' means; checked before anything is loaded.
        trust: also measure calibration (ECE at T = 1 and at the record's temperature), the quality estimate and
            the out-of-distribution flag on the same cases, at the working size (:attr:`Evaluation.trust`).
    """
    if measurements and not native:
        raise ValueError("measurements are made at each image's own resolution: add --native (native=True)")
    if pixel_size is not None and not measurements:
        raise ValueError("a pixel size is only used by the measurements: add --measurements")
    agreement = MeasurementAgreement(pixel_size) if measurements else None
    torch_device = resolve_device(device)
    stem = resolve_checkpoint(checkpoint)
    model, record = load_model(stem)
    if record.postprocess:
        check_postprocess_steps(record.postprocess.steps, f"{stem}.json: postprocess.steps")
    steps = record.postprocess.steps if postprocess and record.postprocess else ()
    trained = record.dataset
    root = data_root or (trained.root if trained else None)
    if not root:
        raise ValueError(f"{checkpoint}: the checkpoint names no data root; give one")
    if layout is None and data_root is None and trained:
        layout = trained.layout
    if isinstance(split, str) and split == "checkpoint":
        split = trained.split if trained else None
        if split is None and subset != "all":
            # Without the training split every case would be scored, training ids included: refuse unless asked.
            raise ValueError(
                f"{checkpoint}: the record names no training split, so its training ids cannot be told apart from "
                f"test ids in {root}; give the split it was trained with (--split NAME|JSON), or score every case "
                "knowingly with --split none (or --subset all)"
            )
    trained_data = (record.config or {}).get("data", {})
    if skip_bad is None:
        skip_bad = bool(trained_data.get("skip_bad", False))
    disk_cache = open_case_cache(trained_data.get("cache_dir") if cache_dir is None else cache_dir, root)
    size, channels = record.image_size, record.in_channels
    skipped: list[DataProblem] = []
    cases, desc = select_cases(
        root,
        layout,
        split,
        subset,
        skip_bad,
        channels,
        progress,
        skipped=skipped,
        known_readable=None if disk_cache is None else lambda c: disk_cache.contains(c, size, channels),
    )
    predictor = Predictor.from_record(
        model,
        record,
        threshold=threshold,
        precision=precision,
        tta=tta,
        postprocess=steps,
        device=torch_device,
    )
    dataset = SegmentationDataset(
        cases, size=size, mean=record.mean, std=record.std, in_channels=channels, cache=False, disk_cache=disk_cache
    )
    metrics = evaluate_dataset(
        predictor,
        dataset,
        native=native,
        include_hd95=include_hd95,
        progress=progress,
        on_case=None if agreement is None else agreement.update,
    )
    where = "native resolution" if native else f"{size[0]}x{size[1]}"
    if tta:
        where += ", flip TTA"
    if steps:
        where += f", post-processed: {' + '.join(steps)}"
    diagnoses = {c.id: diagnosis_name(c.meta["diagnosis"]) for c in cases if "diagnosis" in c.meta}
    trust_eval = evaluate_trust(predictor, cases, progress=progress) if trust else None
    return Evaluation(metrics, record.model, str(checkpoint), desc, where, skipped, agreement, diagnoses, trust_eval)


@dataclass
class PredictionFiles:
    """A folder of predicted masks matched to the case ids being evaluated.

    Attributes:
        folder: the folder.
        matched: case id -> its mask file.
        missing: evaluated case ids without a mask file (left out of the scores, listed).
        extra: mask files that match none of the evaluated ids (other subsets, other datasets; listed).
        problems: ``(case id, file, reason)`` of mask files that cannot be scored (unreadable, not binary, another
            size than the ground truth, two files for one id); those cases are left out and listed.
    """

    folder: Path
    matched: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    extra: list[Path] = field(default_factory=list)
    problems: list[tuple[str, Path, str]] = field(default_factory=list)

    def lines(self, limit: int = 10) -> list[str]:
        """Human lines for what was not scored (empty when every case had a usable mask and nothing was extra)."""
        out = []
        if self.missing:
            more = f" ... and {len(self.missing) - limit} more" if len(self.missing) > limit else ""
            out.append(f"{len(self.missing)} case(s) without a prediction: {', '.join(self.missing[:limit])}{more}")
        for case_id, path, reason in self.problems:
            out.append(f"{path}: {reason} (case {case_id} not scored)")
        if self.extra:
            names = ", ".join(p.name for p in self.extra[:limit])
            more = f" ... and {len(self.extra) - limit} more" if len(self.extra) > limit else ""
            out.append(f"{len(self.extra)} file(s) match no evaluated case: {names}{more}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "scored": len(self.matched) - len(self.problems),
            "missing": self.missing,
            "extra": [p.name for p in self.extra],
            "problems": [{"case_id": c, "path": str(p), "reason": r} for c, p, r in self.problems],
        }


def match_predictions(folder: str | Path, ids: list[str]) -> PredictionFiles:
    """Match the mask files of ``folder`` (not recursive) to case ids by file stem: ``<id>``, ``<id>_mask`` (what
    ``predict`` writes), ``<id>_segmentation`` / ``<id>_Segmentation`` (the ISIC challenges' names).

    ``predict``'s overlays (``*_overlay.*``) are not masks and are passed over. Two files for one id are a problem
    (the case is left out), not a silent choice.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of predicted masks")
    wanted = set(ids)
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in PREDICTION_EXTENSIONS and not p.stem.endswith(_NOT_MASKS)
    )
    found: dict[str, list[Path]] = {}
    result = PredictionFiles(folder)
    for path in files:
        case_id = next((stem for stem in _candidate_ids(path.stem) if stem in wanted), None)
        if case_id is None:
            result.extra.append(path)
        else:
            found.setdefault(case_id, []).append(path)
    for case_id in ids:
        paths = found.get(case_id, [])
        if not paths:
            result.missing.append(case_id)
            continue
        result.matched[case_id] = paths[0]
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            result.problems.append((case_id, paths[0], f"several masks for case {case_id} ({names}); keep one"))
    return result


def _candidate_ids(stem: str) -> list[str]:
    """The case ids a mask file's stem may name: itself first, then without each known suffix."""
    return [stem] + [stem[: -len(sfx)] for sfx in _MASK_SUFFIXES if sfx and stem.endswith(sfx) and len(stem) > len(sfx)]


def read_prediction_mask(path: str | Path) -> np.ndarray:
    """A predicted mask file as uint8 (H, W) {0, 1}.

    Lossless files (PNG, BMP, TIFF) must hold at most two values, 0 and 1 or 0 and 255 (any non-zero value of a
    single-valued mask is lesion); JPEG, whose compression blurs the edges, is thresholded at 127.

    Raises:
        ImageReadError: the file is unreadable, or a lossless file holds other values (a probability map, labels).
    """
    path = Path(path)
    values = read_mask_values(path)
    if path.suffix.lower() in _LOSSY:
        return (values > 127).astype(np.uint8)
    present = np.unique(values)
    if len(present) > 2 or not (set(present.tolist()) <= {0, 1} or set(present.tolist()) <= {0, 255}):
        shown = ", ".join(str(v) for v in present[:6]) + (" ..." if len(present) > 6 else "")
        raise ImageReadError(
            f"{path}: not a binary mask (values {shown}); save 0/1 or 0/255 masks (threshold probability maps first)"
        )
    return (values > 0).astype(np.uint8)


def evaluate_predictions(
    predictions: str | Path,
    data_root: str | Path,
    layout: str | None = None,
    split: str | Split | None = None,
    subset: str = "test",
    include_hd95: bool = True,
    progress: bool = False,
    skip_bad: bool = False,
    measurements: bool = False,
    pixel_size: float | None = None,
    name: str | None = None,
) -> Evaluation:
    """Scores a folder of predicted masks (made by ``predict`` or by any other code) against a data root's truths.

    The same cases as :func:`evaluate_checkpoint` (``split`` and ``subset``, see :func:`select_cases`), the same
    metrics, reductions, subgroups and (with ``measurements``) agreement table, at each image's native resolution:
    a mask must have its image's size. Masks are matched by :func:`match_predictions` and read by
    :func:`read_prediction_mask`; cases without a usable mask are left out of the scores and listed in
    :attr:`Evaluation.predictions` (and ``metrics.json``'s ``predictions``). On ``predict``'s masks of a checkpoint
    this gives the very numbers of ``evaluate_checkpoint(..., native=True)``.

    Args:
        predictions: the folder of mask files.
        data_root: data root in a known layout (the ground truth).
        layout: its layout (None = detected).
        split: split name, JSON path or :class:`Split`; None = every case.
        subset: which cases (see :func:`select_cases`).
        include_hd95: also compute HD95 (pixels).
        progress: show a progress bar.
        skip_bad: leave out cases whose ground-truth files are unusable instead of refusing.
        measurements: also measure each predicted and ground-truth mask and summarise their agreement.
        pixel_size: millimetres per pixel for the measurements' means.
        name: what made the masks, for the title (default: the folder's name).

    Raises:
        ValueError: no evaluated case has a usable mask (the message says why).
    """
    if pixel_size is not None and not measurements:
        raise ValueError("a pixel size is only used by the measurements: add --measurements")
    agreement = MeasurementAgreement(pixel_size) if measurements else None
    folder = Path(predictions)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of predicted masks")
    skipped: list[DataProblem] = []
    # The ground truth alone is read: the images are only checked for their size against it.
    cases, desc = select_cases(data_root, layout, split, subset, skip_bad, 3, progress, skipped=skipped)
    files = match_predictions(folder, [c.id for c in cases])
    bad = {case_id for case_id, _, _ in files.problems}
    metrics = SegmentationMetrics(include_hd95=include_hd95)
    scored = []
    for case in tqdm(cases, desc="evaluate", disable=not progress, leave=False):
        path = files.matched.get(case.id)
        if path is None or case.id in bad:
            continue
        try:
            pred = read_prediction_mask(path)
            truth = load_case_mask(case)
            if pred.shape != truth.shape:
                raise ImageReadError(
                    f"{path}: mask size {pred.shape[1]}x{pred.shape[0]} differs from the ground truth {case.mask} "
                    f"({truth.shape[1]}x{truth.shape[0]}); predictions are scored at each image's own size"
                )
        except ImageReadError as err:
            message = str(err)
            files.problems.append(
                (case.id, path, message[len(f"{path}: ") :] if message.startswith(f"{path}: ") else message)
            )
            continue
        if agreement is not None:
            agreement.update(case.id, pred, truth)
        metrics.update(
            torch.from_numpy(pred)[None, None], torch.from_numpy(truth.astype(np.uint8))[None, None], ids=[case.id]
        )
        scored.append(case)
    if not scored:
        why = "; ".join(files.lines(3)) or "no case matched"
        raise ValueError(f"{folder}: no predicted mask could be scored against {data_root} ({why})")
    left_out = len(cases) - len(scored)
    desc += f"; {len(scored)} with a usable prediction" + (f", {left_out} left out (listed)" if left_out else "")
    diagnoses = {c.id: diagnosis_name(c.meta["diagnosis"]) for c in scored if "diagnosis" in c.meta}
    label = name or f"predicted masks of {folder}"
    return Evaluation(
        metrics, label, str(folder), desc, "native resolution", skipped, agreement, diagnoses, predictions=files
    )
