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
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..data.io import IMAGE_EXTENSIONS, ImageReadError, read_image, read_mask, read_mask_values
from .measure import MEASUREMENT_FIELDS, check_pixel_size, measure_lesion
from .predictor import Predictor
from .trust import TRUST_FIELDS

__all__ = ["collect_inputs", "parse_shard", "segment_files", "PredictSummary", "InputProblem", "write_png"]

#: Hidden folder of ``--out`` holding one small JSON per segmented image (its table row, written after its files):
#: what ``--resume`` trusts and what the measurements table of the folder is rebuilt from, whatever call wrote it.
ROWS_DIR = ".predict_rows"

_logger = logging.getLogger(__name__)


def write_png(path: Path, image: np.ndarray, mask: bool = False) -> None:
    """Write RGB uint8 (H, W, 3) or gray uint8 / uint16 (H, W) ``image`` as a PNG at zlib level 1.

    Level 1 writes a 768x576 overlay about 6x quicker than Pillow's default level 6, for a file about 1.1x larger
    (``perf/predict_latency.py``, section 4). ``mask`` (values 0 and 255) adds the run-length strategy, which packs a
    mask's long runs about 4x smaller at the same speed (as the web API's masks).

    Raises:
        OSError: the file cannot be written.
    """
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if mask:
        params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 and image.shape[2] == 3 else image
    ok, buf = cv2.imencode(".png", pixels, params)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    # A temporary file renamed over ``path``: a killed run never leaves half a PNG behind (what --resume relies on).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


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
    resumed: int = 0
    table_rows: int = 0
    shard: tuple[int, int] | None = None

    @property
    def dice_per_image(self) -> float | None:
        scores = [r["dice"] for r in self.rows if r.get("dice") is not None]
        return float(np.mean(scores)) if scores else None

    def summary_line(self) -> str:
        n = len(self.rows) + len(self.failures)
        line = f"{n} inputs" + (f" (slice {self.shard[0]}/{self.shard[1]})" if self.shard else "")
        line += f": {len(self.rows)} segmented" + (f" ({self.resumed} already done, kept)" if self.resumed else "")
        line += f", {len(self.failures)} failed"
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
    shard: tuple[int, int] | None = None,
    resume: bool = False,
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
        shard: ``(I, N)``: segment only slice I of N of ``paths`` (every N-th, from the I-th; output names are made
            over all of ``paths``, so N slices, in any order or at once, write what one call would).
        resume: skip images whose outputs are whole (their row, mask, overlay and probabilities written completely
            by an earlier call of the same model and settings), as nnU-Net's ``--continue_prediction``.

    Every file is written atomically, then the image's row (``ROWS_DIR/<name>.json``); at the end the folder's
    ``measurements.csv``/``.json`` are rebuilt from the rows of every image of this model in ``out_dir``, whichever
    call or slice made them, so the last slice to finish leaves the table of the whole run.
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
    names = _output_names(paths)
    jobs = list(zip(paths, names))
    if shard is not None:
        i, n = shard
        jobs = [job for k, job in enumerate(jobs) if k % n == i - 1]
        summary.shard = shard
    store = _RowStore(out, summary.model)
    if resume:
        store.check_model()
    inter_sum = total_sum = 0
    if progress:  # tqdm.auto is imported only for a bar: it costs a one-image run 30-80 ms
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="predict", unit="img", leave=False)
    for path, name in jobs:
        if resume:
            row = store.whole(name, overlay=overlay, probabilities=save_probabilities, pixel_size=pixel_size)
            if row is not None:
                summary.rows.append(_public(row))
                summary.resumed += 1
                if "dice" in row:
                    inter_sum, total_sum = inter_sum + row["_dice_counts"][0], total_sum + row["_dice_counts"][1]
                continue
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
            write_png(out / f"{name}_mask.png", mask * np.uint8(255), mask=True)
            row: dict[str, Any] = {
                "image": str(path),
                "mask": str(out / f"{name}_mask.png"),
                "overlay": str(out / f"{name}_overlay.png") if overlay else None,
                "width": int(mask.shape[1]),
                "height": int(mask.shape[0]),
            }
            if save_probabilities:
                prob16 = np.round(np.clip(prediction.prob, 0.0, 1.0) * 65535).astype(np.uint16)
                write_png(out / f"{name}_prob.png", prob16)
                row["probability"] = str(out / f"{name}_prob.png")
            if overlay:
                write_png(out / f"{name}_overlay.png", overlay_mask(image, mask))
            row.update(measure_lesion(mask).to_dict(pixel_size))
            row.update(prediction.trust.to_dict())
            if truth is not None:
                dice, inter, total = _dice(mask.astype(bool), truth)
                row["dice"] = round(dice, 6)
                row["_dice_counts"] = [inter, total]
                inter_sum += inter
                total_sum += total
            store.put(name, row, pixel_size)  # last: its presence says the image's files are whole
            summary.rows.append(_public(row))
        except ImageReadError as err:
            summary.failures.append(InputProblem(str(path), _strip_path(str(err), path)))
            store.drop(name)
        except Exception as err:  # one file must never end the run; the reason is kept for the report
            _logger.debug("predict failed on %s", path, exc_info=True)
            summary.failures.append(InputProblem(str(path), f"{type(err).__name__}: {_strip_path(str(err), path)}"))
            store.drop(name)
    if total_sum:
        summary.dice_global = inter_sum / total_sum
    with store.locked():
        table = store.table(names)
        summary.table_rows = len(table.rows)
        table.failures = summary.failures
        _write_tables(table, out, pixel_size)
    return summary


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (1 <= I <= N) as ``(I, N)``; None for no sharding (``predict --shard``, ``benchmark --shard``).

    Raises:
        ValueError: a malformed spec or I outside 1..N.
    """
    if spec is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not match:
        raise ValueError(f"--shard {spec!r}: expected I/N, e.g. 2/4 (slice 2 of 4)")
    i, n = int(match.group(1)), int(match.group(2))
    if not 1 <= i <= n:
        raise ValueError(f"--shard {spec!r}: I must be in 1..N (slices are numbered from 1)")
    return i, n


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


class _RowStore:
    """The per-image rows of an output folder (``ROWS_DIR/<name>.json``), shared by every call and slice."""

    def __init__(self, out: Path, model: Mapping[str, Any]) -> None:
        self.folder = out / ROWS_DIR
        self.folder.mkdir(exist_ok=True)
        self.model = dict(model)

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def put(self, name: str, row: Mapping[str, Any], pixel_size: float | None) -> None:
        payload = {"model": self.model, "pixel_size": pixel_size, "row": dict(row)}
        tmp = self.folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(payload, default=_jsonable))
        os.replace(tmp, self._path(name))

    def drop(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            payload = json.loads(path.read_text())
            return payload if isinstance(payload, dict) and isinstance(payload.get("row"), dict) else None
        except (OSError, ValueError):
            return None

    def check_model(self) -> None:
        """``--resume`` keeps only masks of the very same model and settings; another's would be mixed in."""
        for path in sorted(self.folder.glob("*.json")):
            payload = self._read(path)
            if payload is not None and payload.get("model") != self.model:
                raise ValueError(
                    f"{self.folder.parent}: holds masks made by {payload.get('model')}, not by this model and these "
                    f"settings ({self.model}); --resume would mix them: give another --out, or predict without --resume"
                )

    def whole(self, name: str, overlay: bool, probabilities: bool, pixel_size: float | None) -> dict[str, Any] | None:
        """The stored row of ``name`` when its mask (and overlay, probabilities if asked) exist and decode; else None.

        Measurements in another pixel size are recomputed from the mask (cheap); the rest of the row is kept.
        """
        payload = self._read(self._path(name))
        if payload is None or payload.get("model") != self.model:
            return None
        row = payload["row"]
        wanted = (
            [row.get("mask")]
            + ([row.get("overlay")] if overlay else [])
            + ([row.get("probability")] if probabilities else [])
        )
        if any(not p for p in wanted):
            return None
        try:
            for p in wanted:
                read_image(p) if p == row.get("overlay") else read_mask_values(p)
            if payload.get("pixel_size") != pixel_size:
                mask = (read_mask_values(row["mask"]) > 0).astype(np.uint8)
                for key in MEASUREMENT_FIELDS:
                    row.pop(key, None)
                row.update(measure_lesion(mask).to_dict(pixel_size))
                self.put(name, row, pixel_size)
        except ImageReadError:
            return None
        if not overlay:
            row["overlay"] = None
        return row

    @contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock on the folder's table while it is rebuilt (slices may finish at the same moment)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: slices should not end at the same instant there
            yield
            return
        with open(self.folder / "lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def table(self, names: Sequence[str]) -> PredictSummary:
        """Every stored row of this model whose mask is still there, in the inputs' order (``names``) and then by
        name: the folder's measurements table, the same whichever call or slice writes it."""
        order = {n: k for k, n in enumerate(names)}
        stored = []
        for path in self.folder.glob("*.json"):
            payload = self._read(path)
            if payload is None or payload.get("model") != self.model or not Path(payload["row"]["mask"]).is_file():
                continue
            stored.append((order.get(path.stem, len(order)), path.stem, payload["row"]))
        stored.sort(key=lambda t: (t[0], t[1]))
        table = PredictSummary(out_dir=self.folder.parent, model=self.model)
        table.rows = [_public(r) for _, _, r in stored]
        counts = [r["_dice_counts"] for _, _, r in stored if "_dice_counts" in r]
        if counts and sum(c[1] for c in counts):
            table.dice_global = sum(c[0] for c in counts) / sum(c[1] for c in counts)
        return table


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
    tmp = out / f".measurements.csv.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summary.rows)
    os.replace(tmp, out / "measurements.csv")
    data = summary.to_dict()
    data["pixel_size_mm"] = pixel_size
    tmp = out / f".measurements.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False, default=_jsonable) + "\n")
    os.replace(tmp, out / "measurements.json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
