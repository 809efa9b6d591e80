"""Segment many image files: masks, overlays and one measurements table; a bad file is named and skipped.

This is what ``lesionseg predict`` runs. Each image's row also says how far to trust its mask (``predicted_dice``,
``low_confidence``, ``out_of_distribution`` and its score, and the warnings in words under ``notes``; see
:mod:`lesionseg.inference.trust`). Every input is processed on its own: a file that cannot be read (empty,
truncated, not an image, a decompression bomb, ...) becomes a failure with its name and the reason, and every other
file is still segmented. ``PredictSummary`` says what was written and what failed.

Every output is written under a temporary name in the output folder and renamed when whole, so a full disk leaves no
partial mask, overlay or table, only the failure naming the file. A second run into the same folder adds its images
to the tables, keeping the rows of the earlier runs' images (their masks are still there): the tables always describe
the folder. A folder holding another model's or another pixel size's predictions is refused unless ``overwrite``.

Large archives: ``shard=(I, N)`` segments every N-th input from the I-th, so N workers (or cluster jobs) share one
input list and one output folder; ``resume`` skips images whose outputs are whole (their row is in the folder's table
and their files decode). The table is rewritten at most every ``table_every`` seconds during a run (a killed run
redoes only the images since), each time under a lock and merged with the rows other slices wrote meanwhile, in the
order of the inputs: N slices leave the table one call would.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import math
import os
import re
import time
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

_logger = logging.getLogger(__name__)


def write_png(path: Path, image: np.ndarray, mask: bool = False) -> None:
    """Write RGB uint8 (H, W, 3) or gray uint8 / uint16 (H, W) ``image`` as a PNG at zlib level 1.

    Level 1 writes a 768x576 overlay about 6x quicker than Pillow's default level 6, for a file about 1.1x larger
    (``perf/predict_latency.py``, section 4). ``mask`` (values 0 and 255) adds the run-length strategy, which packs a
    mask's long runs about 4x smaller at the same speed (as the web API's masks).

    The file is written whole or not at all: under a temporary name in the same folder, then renamed.

    Raises:
        OSError: the file cannot be written (full disk); the message names it and no partial file is left.
    """
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if mask:
        params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 and image.shape[2] == 3 else image
    ok, buf = cv2.imencode(".png", pixels, params)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    _write_whole(path, buf.tobytes())


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


def _output_names(paths: Sequence[Path], taken: Mapping[str, str] | None = None) -> list[str]:
    """File stems, made unique (``a``, ``a-2``, ...) when two inputs share one.

    ``taken`` maps names an earlier run used to its image: the same image gets its name back (its outputs are
    replaced), another image with that stem the next free name.
    """
    taken = dict(taken or {})
    names = []
    for p in paths:
        image = _image_key(p)
        n, name = 1, p.stem
        while name in taken and taken[name] != image:
            n += 1
            name = f"{p.stem}-{n}"
        taken[name] = image
        names.append(name)
    return names


def _image_key(path: str | Path) -> str:
    return str(Path(path).resolve())


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
        kept: rows of earlier runs into the same folder that the tables still hold (their images not redone).
        write_error: why the tables could not be written (a full disk), else None.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[InputProblem] = field(default_factory=list)
    out_dir: Path = Path(".")
    model: dict[str, Any] = field(default_factory=dict)
    dice_global: float | None = None
    kept: list[dict[str, Any]] = field(default_factory=list)
    write_error: str | None = None
    resumed: int = 0
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
                f"resolution): per-image mean {100 * self.dice_per_image:.2f}, global "
                + ("n/a (no foreground)" if self.dice_global is None else f"{100 * self.dice_global:.2f}")
            )
        return line

    def table(self, order: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
        """Every row of the folder's tables: earlier runs' first, then this run's; with ``order`` (image -> position
        in the inputs) sorted by it, images not among the inputs first."""
        rows = self.kept + self.rows
        if order is None:
            return rows
        return sorted(rows, key=lambda r: order.get(_image_key(r["image"]), -1))

    def to_dict(self, order: Mapping[str, int] | None = None) -> dict[str, Any]:
        """The ``measurements.json`` payload: every image of the folder (earlier runs' first), this run's failures."""
        return {
            "model": self.model,
            "images": self.table(order),
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
    overwrite: bool = False,
    save_probabilities: bool = False,
    shard: tuple[int, int] | None = None,
    resume: bool = False,
    table_every: float = 30.0,
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
        overwrite: remove an earlier run's outputs from ``out_dir`` first, even of another model or pixel size.
        save_probabilities: also write ``<name>_prob.png``, the (temperature-scaled) foreground probability at the
            image's own size as a 16-bit PNG (value / 65535), as nnU-Net's ``--save_probabilities``.
        shard: ``(I, N)``: segment only slice I of N of ``paths`` (every N-th from the I-th; output names are made
            over all of ``paths``, so N slices, one after another or at once, write what one call would).
        resume: skip images whose outputs are whole (their row in the folder's table, their mask, overlay and
            probabilities decodable), as nnU-Net's ``--continue_prediction``.
        table_every: seconds between rewrites of the folder's table during the run (and once at its end).

    Raises:
        ValueError: ``out_dir`` holds predictions of another model or pixel size (and not ``overwrite``); raised
            before any image is read.
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
    earlier = _earlier_rows(out, summary.model, pixel_size, overwrite)
    done = {_image_key(r["image"]): r for r in earlier} if resume else {}
    jobs: Iterable[tuple[Path, str]] = list(zip(paths, _output_names(paths, _taken_names(earlier))))
    if shard is not None:
        i, n = shard
        jobs = [job for k, job in enumerate(jobs) if k % n == i - 1]
        summary.shard = shard
    redone = {_image_key(p) for p, _ in jobs}
    summary.kept = [r for r in earlier if _image_key(r["image"]) not in redone]
    order = {_image_key(p): k for k, p in enumerate(paths)}
    inter_sum = total_sum = 0
    last_table = time.monotonic()
    if progress:  # tqdm.auto is imported only for a bar: it costs a one-image run 30-80 ms
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="predict", unit="img", leave=False)
    for path, name in jobs:
        if time.monotonic() - last_table > table_every:
            summary.dice_global = inter_sum / total_sum if total_sum else None  # the table so far says it too
            _save_table(summary, out, pixel_size, order)
            last_table = time.monotonic()
        row = done.get(_image_key(path))
        if row is not None and _outputs_whole(row, overlay, save_probabilities):
            summary.rows.append(row)
            summary.resumed += 1
            if truths and path in truths and "dice" in row:  # the counts are not in the table: from the files
                _, inter, total = _dice(read_mask_values(row["mask"]) > 0, read_mask(*truths[path]) != 0)
                inter_sum, total_sum = inter_sum + inter, total_sum + total
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
                inter_sum += inter
                total_sum += total
            summary.rows.append(row)
        except ImageReadError as err:
            summary.failures.append(InputProblem(str(path), _strip_path(str(err), path)))
            _discard_outputs(out, name)
        except OSError as err:  # an output that could not be written (full disk): named, nothing partial left
            summary.failures.append(InputProblem(str(path), str(err)))
            _discard_outputs(out, name)
        except Exception as err:  # one file must never end the run; the reason is kept for the report
            _logger.debug("predict failed on %s", path, exc_info=True)
            summary.failures.append(InputProblem(str(path), f"{type(err).__name__}: {_strip_path(str(err), path)}"))
            _discard_outputs(out, name)
    if total_sum:
        summary.dice_global = inter_sum / total_sum
    try:
        _save_table(summary, out, pixel_size, order)
    except OSError as err:
        summary.write_error = str(err)
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


def _taken_names(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {Path(r["mask"]).name[: -len("_mask.png")]: _image_key(r["image"]) for r in rows}


def _outputs_whole(row: Mapping[str, Any], overlay: bool, probabilities: bool) -> bool:
    """``--resume``: the image's mask (and overlay, probabilities when asked) exist and decode."""
    wanted = [row.get("mask")] + [row.get("overlay")] * overlay + [row.get("probability")] * probabilities
    if not all(wanted):
        return False
    try:
        for path in wanted:
            read_image(path) if path == row.get("overlay") else read_mask_values(path)
    except ImageReadError:
        return False
    return True


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """An exclusive lock on the folder's tables while they are merged and rewritten (slices may write at once)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: slices into one folder should not end at the same instant there
        yield
        return
    try:
        fd = os.open(out / ".predict.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # no room even for an empty file: the table write that follows names the problem
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _save_table(summary: PredictSummary, out: Path, pixel_size: float | None, order: Mapping[str, int]) -> None:
    """Rewrite the folder's tables with this call's rows and every row another call or slice wrote meanwhile, in
    the inputs' order (images of earlier, other inputs first)."""
    with _locked(out):
        mine = {_image_key(r["image"]) for r in summary.rows} | {_image_key(r["image"]) for r in summary.kept}
        others = [r for r in _table_rows(out) if _image_key(r["image"]) not in mine and Path(r["mask"]).is_file()]
        table = PredictSummary(
            rows=summary.rows,
            failures=summary.failures,
            out_dir=out,
            model=summary.model,
            dice_global=summary.dice_global,
            kept=summary.kept + others,
            resumed=summary.resumed,
            shard=summary.shard,
        )
        _write_tables(table, out, pixel_size, order)


def _table_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of the folder's ``measurements.json`` as they are now (empty when absent or unreadable)."""
    try:
        data = json.loads((out / "measurements.json").read_text())
        return [r for r in data["images"] if isinstance(r, dict) and {"image", "mask"} <= set(r)]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _earlier_rows(
    out: Path, model: Mapping[str, Any], pixel_size: float | None, overwrite: bool
) -> list[dict[str, Any]]:
    """The rows of an earlier run's ``measurements.json`` in ``out`` whose masks still exist; with ``overwrite`` the
    earlier run's outputs are removed and nothing is kept.

    Raises:
        ValueError: the earlier run used another model or pixel size (without ``overwrite``).
    """
    path = out / "measurements.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        rows = [r for r in data["images"] if isinstance(r, dict) and {"image", "mask"} <= set(r)]
        before = data["model"]
        earlier_pixel = data.get("pixel_size_mm")
    except (OSError, ValueError, KeyError, TypeError) as err:
        if not overwrite:
            raise ValueError(
                f"{path}: unreadable table of an earlier run ({err}); use another --out, or --overwrite to replace it"
            ) from err
        rows, before, earlier_pixel = [], {}, None
    if overwrite:
        for row in rows:
            for key in ("mask", "overlay", "probability"):
                if row.get(key) and Path(row[key]).parent.resolve() == out.resolve():
                    Path(row[key]).unlink(missing_ok=True)
        for name in ("measurements.csv", "measurements.json"):
            (out / name).unlink(missing_ok=True)
        return []
    same = ("model", "pretrained", "threshold", "postprocess", "temperature")
    differ = [k for k in same if before.get(k) != model.get(k)]
    if earlier_pixel != pixel_size:
        differ.append("pixel size")
    if differ:
        raise ValueError(
            f"{out}: holds predictions of another run (its {', '.join(differ)} differ from this one's); its tables "
            "would mix them. Write into another --out, or add --overwrite to replace them"
        )
    return [r for r in rows if Path(r["mask"]).is_file()]


def _discard_outputs(out: Path, name: str) -> None:
    """Remove the files of an image that failed: no mask without its row in the tables."""
    for kind in ("mask", "overlay", "prob"):
        (out / f"{name}_{kind}.png").unlink(missing_ok=True)


def _write_whole(path: Path, data: bytes) -> None:
    """``data`` written whole or not at all: to a temporary name in the same folder, renamed when complete.

    Raises:
        OSError: the file could not be written (full disk); the message names it and no partial file is left.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: could not write ({err.strerror or err})") from err


def _write_text(path: Path, text: str) -> None:
    """A text file written whole or not at all (see :func:`_write_whole`)."""
    _write_whole(path, text.encode())


def _strip_path(message: str, path: Path) -> str:
    """The reason alone: readers' messages start with the file name, which the report already shows."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _write_tables(
    summary: PredictSummary, out: Path, pixel_size: float | None, order: Mapping[str, int] | None = None
) -> None:
    fields = ["image", "mask", "overlay", "width", "height"] + [
        f for f in MEASUREMENT_FIELDS if pixel_size is not None or not (f.endswith("_mm") or f == "area_mm2")
    ]
    rows = summary.table(order)
    if any("probability" in r for r in rows):
        fields.insert(3, "probability")
    fields += list(TRUST_FIELDS)
    if any("dice" in r for r in rows):
        fields.append("dice")
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    data = summary.to_dict(order)
    data["pixel_size_mm"] = pixel_size
    _write_text(out / "measurements.csv", table.getvalue())
    _write_text(out / "measurements.json", json.dumps(data, indent=1, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
