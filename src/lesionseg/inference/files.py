"""Segment many image files: masks, overlays and one measurements table; a bad file is named and skipped.

This is what ``lesionseg predict`` runs. Each image's row also says how far to trust its mask (``predicted_dice``,
``low_confidence``, ``out_of_distribution`` and its score, and the warnings in words under ``notes``; see
:mod:`lesionseg.inference.trust`). Every input is processed on its own: a file that cannot be read (empty,
truncated, not an image, a decompression bomb, ...) becomes a failure with its name and the reason, and every other
file is still segmented. ``PredictSummary`` says what was written and what failed.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.io import IMAGE_EXTENSIONS, ImageReadError, read_image, read_mask
from .measure import MEASUREMENT_FIELDS, check_pixel_size, measure_lesion
from .predictor import Predictor
from .trust import TRUST_FIELDS

__all__ = ["collect_inputs", "segment_files", "PredictSummary", "InputProblem"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputProblem:
    """An input that was not segmented: its path (as given) and why."""

    path: str
    reason: str


def collect_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[InputProblem]]:
    """Expand files, folders (their image files, sorted, not recursive) and glob patterns into a list of files.

    A named file is kept whatever its extension (reading it says whether it is an image); inputs that match
    nothing are returned as problems. Duplicates are dropped, order kept.
    """
    paths: list[Path] = []
    problems: list[InputProblem] = []
    for item in inputs:
        item = str(item)
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                problems.append(InputProblem(item, "folder holds no image files " + "/".join(IMAGE_EXTENSIONS)))
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        elif glob.has_magic(item):
            found = sorted(Path(q) for q in glob.glob(item) if Path(q).is_file())
            if not found:
                problems.append(InputProblem(item, "pattern matches no file"))
            paths.extend(found)
        else:
            problems.append(InputProblem(item, "no such file or folder"))
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, problems


def _output_names(paths: Sequence[Path]) -> list[str]:
    """File stems, made unique (``a``, ``a-2``, ...) when two inputs share one."""
    counts: dict[str, int] = {}
    names = []
    for p in paths:
        n = counts.get(p.stem, 0) + 1
        counts[p.stem] = n
        names.append(p.stem if n == 1 else f"{p.stem}-{n}")
    return names


def _dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, int, int]:
    inter = int(np.count_nonzero(pred & truth))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    return (1.0 if total == 0 else 2 * inter / total), 2 * inter, total


@dataclass
class PredictSummary:
    """What :func:`segment_files` did.

    Attributes:
        rows: one dict per segmented image (``image``, ``mask``, ``overlay``, size, measurements, ``dice`` with
            ground truth).
        failures: inputs that were not segmented, with the reason.
        out_dir: output folder.
        model: what predicted (the record's model name and, for a shipped model, its tag).
        dice_global: one Dice over every pixel of the images with ground truth (None without).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[InputProblem] = field(default_factory=list)
    out_dir: Path = Path(".")
    model: dict[str, Any] = field(default_factory=dict)
    dice_global: float | None = None

    @property
    def dice_per_image(self) -> float | None:
        scores = [r["dice"] for r in self.rows if r.get("dice") is not None]
        return float(np.mean(scores)) if scores else None

    def summary_line(self) -> str:
        n = len(self.rows) + len(self.failures)
        line = f"{n} inputs: {len(self.rows)} segmented, {len(self.failures)} failed"
        if self.dice_per_image is not None:
            line += (
                f"; Dice vs ground truth ({sum(r.get('dice') is not None for r in self.rows)} images, native "
                f"resolution): per-image mean {100 * self.dice_per_image:.2f}, global {100 * self.dice_global:.2f}"
            )
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "images": self.rows,
            "failures": [{"path": f.path, "reason": f.reason} for f in self.failures],
            "dice_per_image": self.dice_per_image,
            "dice_global": self.dice_global,
            "summary": self.summary_line(),
        }


def segment_files(
    predictor: Predictor,
    paths: Sequence[Path],
    out_dir: str | Path,
    pixel_size: float | None = None,
    overlay: bool = True,
    truths: Mapping[Path, tuple[Path, int]] | None = None,
    progress: bool = False,
    failures: Sequence[InputProblem] = (),
    save_probabilities: bool = False,
) -> PredictSummary:
    """Segment each file; write ``<name>_mask.png`` ({0, 255}, native size), ``<name>_overlay.png`` and
    ``measurements.csv`` / ``measurements.json`` for all of them into ``out_dir``.

    Args:
        predictor: the model to run.
        paths: image files.
        out_dir: output folder (created).
        pixel_size: millimetres per pixel; adds ``*_mm`` measurements. A bad value (zero, negative, not finite) is
            refused with ``ValueError`` before any file is read.
        overlay: also write overlays.
        truths: ground-truth ``(mask file, read threshold)`` per image path; adds a Dice column and the summary's
            Dice.
        progress: show a progress bar (stderr).
        failures: problems found while collecting the inputs, reported with the rest.
        save_probabilities: also write ``<name>_prob.png``, the (temperature-scaled) foreground probability at the
            image's own size as a 16-bit PNG (value / 65535), as nnU-Net's ``--save_probabilities``.
    """
    from ..viz.overlay import overlay_mask

    if pixel_size is not None:
        pixel_size = check_pixel_size(pixel_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(out_dir=out, failures=list(failures))
    record = predictor.record
    summary.model = {
        "model": record.model if record else None,
        "pretrained": record.pretrained.tag if record and record.pretrained else None,
        "backend": predictor.backend,
        "threshold": predictor.threshold,
        "postprocess": list(predictor.postprocess),
        "temperature": predictor.temperature,
        "quality_estimate": predictor.quality is not None,
        "out_of_distribution_check": predictor.description is not None,
    }
    inter_sum = total_sum = 0
    for path, name in tqdm(
        list(zip(paths, _output_names(paths))), desc="predict", unit="img", disable=not progress, leave=False
    ):
        try:
            image = read_image(path, predictor.in_channels)
            prediction = predictor.predict([image])[0]
            mask = prediction.mask
            truth = None
            if truths and path in truths:
                truth_path, truth_threshold = truths[path]
                truth = read_mask(truth_path, truth_threshold) != 0
                if truth.shape != mask.shape:
                    raise ImageReadError(f"{truth_path}: mask size differs from image {path}")
            Image.fromarray(mask * 255).save(out / f"{name}_mask.png")
            row: dict[str, Any] = {
                "image": str(path),
                "mask": str(out / f"{name}_mask.png"),
                "overlay": str(out / f"{name}_overlay.png") if overlay else None,
                "width": int(mask.shape[1]),
                "height": int(mask.shape[0]),
            }
            if save_probabilities:
                prob16 = np.round(np.clip(prediction.prob, 0.0, 1.0) * 65535).astype(np.uint16)
                Image.fromarray(prob16).save(out / f"{name}_prob.png")
                row["probability"] = str(out / f"{name}_prob.png")
            if overlay:
                Image.fromarray(overlay_mask(image, mask)).save(out / f"{name}_overlay.png")
            row.update(measure_lesion(mask).to_dict(pixel_size))
            row.update(prediction.trust.to_dict())
            if truth is not None:
                dice, inter, total = _dice(mask.astype(bool), truth)
                row["dice"] = round(dice, 6)
                inter_sum += inter
                total_sum += total
            summary.rows.append(row)
        except ImageReadError as err:
            summary.failures.append(InputProblem(str(path), _strip_path(str(err), path)))
        except Exception as err:  # one file must never end the run; the reason is kept for the report
            _logger.debug("predict failed on %s", path, exc_info=True)
            summary.failures.append(InputProblem(str(path), f"{type(err).__name__}: {_strip_path(str(err), path)}"))
    if total_sum:
        summary.dice_global = inter_sum / total_sum
    _write_tables(summary, out, pixel_size)
    return summary


def _strip_path(message: str, path: Path) -> str:
    """The reason alone: readers' messages start with the file name, which the report already shows."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _write_tables(summary: PredictSummary, out: Path, pixel_size: float | None) -> None:
    fields = ["image", "mask", "overlay", "width", "height"] + [
        f for f in MEASUREMENT_FIELDS if pixel_size is not None or not (f.endswith("_mm") or f == "area_mm2")
    ]
    if any("probability" in r for r in summary.rows):
        fields.insert(3, "probability")
    fields += list(TRUST_FIELDS)
    if any("dice" in r for r in summary.rows):
        fields.append("dice")
    with open(out / "measurements.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summary.rows)
    data = summary.to_dict()
    data["pixel_size_mm"] = pixel_size
    (out / "measurements.json").write_text(json.dumps(data, indent=1, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
