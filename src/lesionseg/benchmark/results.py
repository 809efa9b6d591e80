"""The committed results of a benchmark: small files per finished run, written once, read by the report.

Layout of ``results_dir`` (``docs/results/<name>/`` by default; everything here is meant to be committed)::

    splits/run<r>.json                  the split of run r (drawn once, then read back on every machine)
    runs/<label>/seed<s>/               one finished run (``run<r>-seed<s>`` when runs outnumber seeds):
        metrics.json                      test scores in both reductions + seed, epochs, precision, threads, machine,
                                          train minutes, best epoch, finish time, lesionseg commit, calibration
                                          (pixel ECE, 15 bins, at T = 1 and the fitted T; absent in runs exported
                                          before it was kept) (written last: its presence marks the run as done)
        per_image.csv                     one row per test image: id, tp, fp, fn, tn, every score, hd95
        train_metrics.csv                 the run's ``metrics.csv`` (one row per epoch)
        checkpoint.json                   the best checkpoint's JSON record (no weights)
        masks.npz                         predicted masks of the overlay cases, bit-packed, one array per case (no
                                          image files: case-named PNGs would look like dataset files in git)
        features.npz                      (the report's feature model only) the feature-map figure's arrays, float16
        cross/<name>/metrics.json, per_image.csv   scores on each cross-dataset root
    complexity.json                     params, MACs, CPU latency (+ the machine) per model, measured once
    case_groups.json                    (datasets whose metadata has one, e.g. PH2) the diagnosis of each test id,
                                        for the report's subgroup table (written by a run, never by the report)
    report.md, results.csv, *.png       rebuilt from the files above by ``--report-only``, byte for byte

This module only writes and reads these files; it knows nothing about training or models.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "FeatureSummary",
    "RunResults",
    "read_case_groups",
    "read_complexity",
    "read_run",
    "read_masks",
    "read_run_features",
    "run_results_dir",
    "load_case_input",
    "load_mask_png",
    "save_case_input",
    "save_mask_png",
    "write_case_groups",
    "write_complexity",
    "write_json",
    "write_masks",
    "write_run_results",
]

METRICS_FILE = "metrics.json"


def write_json(path: Path, payload: Any) -> None:
    """Sorted keys, one-space indent, trailing newline: the same payload always gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run_results_dir(results_dir: str | Path, label: str, key: str) -> Path:
    """``results_dir/runs/<label>/<key>`` (``key`` is ``seed<s>`` or ``run<r>-seed<s>``)."""
    return Path(results_dir) / "runs" / label / key


# ---------------------------------------------------------------------------------------------------- small files
def save_mask_png(path: Path, mask: np.ndarray) -> None:
    """A {0, 1} mask as a 1-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(mask).astype(bool)).save(path, optimize=True)


def load_mask_png(path: Path) -> np.ndarray:
    """A mask PNG as uint8 {0, 1}."""
    with Image.open(path) as im:
        return (np.asarray(im.convert("L")) > 0).astype(np.uint8)


def save_case_input(folder: str | Path, case_id: str, image: np.ndarray, truth: np.ndarray | None) -> None:
    """An overlay case's input (JPEG, quality 90) and truth (1-bit PNG) at the evaluation size, once, in ``folder``.

    These are the dataset's pixels: the runner keeps them in its working folder (``out_dir/cases``), never in the
    committed results.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jpg = folder / f"{case_id}.jpg"
    if not jpg.is_file():
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        Image.fromarray(arr.astype(np.uint8)).save(jpg, quality=90)
    if truth is not None and not (folder / f"{case_id}.png").is_file():
        save_mask_png(folder / f"{case_id}.png", truth)


def load_case_input(folder: str | Path, case_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(image HxWx3 uint8, truth HxW {0,1})`` of an overlay case kept in ``folder``, or None when it is not there."""
    folder = Path(folder)
    jpg, png = folder / f"{case_id}.jpg", folder / f"{case_id}.png"
    if not jpg.is_file() or not png.is_file():
        return None
    with Image.open(jpg) as im:
        image = np.asarray(im.convert("RGB"))
    return image, load_mask_png(png)


@dataclass
class FeatureSummary:
    """What the feature-map figure draws: the channel mean of |activation| and the most active channels.

    Attributes:
        layer: the module path the maps come from.
        case: the case id they were computed on.
        mean_abs: (h, w) mean of |activation| over all channels.
        channels: (k, h, w) the k channels with the largest mean |activation|, in decreasing order.
        index: (k,) their channel numbers.
    """

    layer: str
    case: str
    mean_abs: np.ndarray
    channels: np.ndarray
    index: np.ndarray

    def save(self, path: Path) -> None:
        """float16 maps in an uncompressed ``.npz`` with only plain arrays (no pickle needed to read it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(
                f,
                layer=np.array(self.layer),
                case=np.array(self.case),
                mean_abs=self.mean_abs.astype(np.float16),
                channels=self.channels.astype(np.float16),
                index=self.index.astype(np.int32),
            )

    @classmethod
    def load(cls, path: Path) -> FeatureSummary:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                str(z["layer"]),
                str(z["case"]),
                z["mean_abs"].astype(np.float32),
                z["channels"].astype(np.float32),
                z["index"].astype(int),
            )


# ------------------------------------------------------------------------------------------------------ one run
@dataclass
class RunResults:
    """One finished run as stored in ``results_dir``.

    Attributes:
        label: the model's label.
        key: folder name (``seed<s>``).
        path: the run's results folder.
        meta: ``metrics.json`` (scores under ``results``, plus the run's facts).
        rows: per-image rows (``id`` as text, every other column a float; NaN where empty).
        cross: cross-dataset name -> ``(metrics.json payload, per-image rows)``.
    """

    label: str
    key: str
    path: Path
    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    cross: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=dict)
    #: the run's index in the benchmark that reads it; ``metrics.json``'s ``run`` is its index in the benchmark that
    #: exported it, which differs when that one ran with other ``seeds`` (``--set seeds=[1]``)
    run: int = 0

    @property
    def results(self) -> dict[str, dict[str, float]]:
        return self.meta["results"]

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])

    def mask(self, case_id: str) -> np.ndarray | None:
        return read_masks(self.path / MASKS_FILE).get(case_id)


#: The overlay cases' predicted masks of a run.
MASKS_FILE = "masks.npz"


def write_masks(path: Path, masks: Mapping[str, np.ndarray]) -> None:
    """``{case id: HxW {0,1} mask}`` as one compressed ``.npz`` of bit-packed rows (``<id>`` + ``<id>.shape``)."""
    arrays: dict[str, np.ndarray] = {}
    for case_id, mask in sorted(masks.items()):
        m = np.asarray(mask) > 0
        arrays[case_id] = np.packbits(m, axis=None)
        arrays[f"{case_id}.shape"] = np.asarray(m.shape, dtype=np.int64)
    np.savez_compressed(path, **arrays)


def read_masks(path: Path) -> dict[str, np.ndarray]:
    """What :func:`write_masks` stored, as ``{case id: HxW uint8 {0,1}}``; empty when the file is absent."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        out = {}
        for key in z.files:
            if key.endswith(".shape"):
                continue
            shape = tuple(int(v) for v in z[f"{key}.shape"])
            out[key] = np.unpackbits(z[key], count=int(np.prod(shape))).reshape(shape).astype(np.uint8)
    return out


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k, v in row.items():
            if k != "id":
                row[k] = float(v) if v not in ("", "nan") else math.nan
    return rows


def read_run(path: Path, label: str, index: int | None = None) -> RunResults | None:
    """The stored run in ``path`` (run ``index`` of the reading benchmark), or None when its ``metrics.json`` is
    missing (not finished)."""
    mfile = path / METRICS_FILE
    if not mfile.is_file():
        return None
    meta = json.loads(mfile.read_text())
    cross = {}
    for folder in sorted((path / "cross").glob("*")) if (path / "cross").is_dir() else []:
        if (folder / METRICS_FILE).is_file():
            cross[folder.name] = (json.loads((folder / METRICS_FILE).read_text()), _read_rows(folder / "per_image.csv"))
    run = index if index is not None else int(meta["run"])
    return RunResults(label, path.name, path, meta, _read_rows(path / "per_image.csv"), cross, run)


def read_run_features(path: Path) -> FeatureSummary | None:
    file = path / "features.npz"
    return FeatureSummary.load(file) if file.is_file() else None


def write_run_results(
    dest: Path,
    meta: Mapping[str, Any],
    per_image_csv: Path,
    train_csv: Path | None,
    checkpoint_json: Path | None,
    masks: Mapping[str, np.ndarray] = {},  # noqa: B006 (read only)
    features: FeatureSummary | None = None,
    cross: Mapping[str, tuple[Mapping[str, Any], Path]] = {},  # noqa: B006 (read only)
) -> Path:
    """Writes one run's results into ``dest``; ``metrics.json`` goes last, so its presence means complete.

    Args:
        dest: the run's results folder (``run_results_dir(...)``).
        meta: the ``metrics.json`` payload (scores under ``results``).
        per_image_csv: the evaluation's per-image CSV (copied byte for byte).
        train_csv: the run's ``metrics.csv`` (copied), if any.
        checkpoint_json: the best checkpoint's record (copied), if any.
        masks: case id -> predicted {0, 1} mask of the overlay cases.
        features: the feature-map figure's arrays (feature model only).
        cross: cross-dataset name -> (its ``metrics.json`` payload, its per-image CSV).
    """
    dest.mkdir(parents=True, exist_ok=True)
    (dest / METRICS_FILE).unlink(missing_ok=True)
    shutil.copyfile(per_image_csv, dest / "per_image.csv")
    if train_csv is not None and train_csv.is_file():
        shutil.copyfile(train_csv, dest / "train_metrics.csv")
    if checkpoint_json is not None and checkpoint_json.is_file():
        shutil.copyfile(checkpoint_json, dest / "checkpoint.json")
    if masks:
        write_masks(dest / MASKS_FILE, masks)
    if features is not None:
        features.save(dest / "features.npz")
    for name, (payload, rows_csv) in sorted(cross.items()):
        shutil.copyfile(rows_csv, _mkdir(dest / "cross" / name) / "per_image.csv")
        write_json(dest / "cross" / name / METRICS_FILE, dict(payload))
    write_json(dest / METRICS_FILE, dict(meta))
    return dest


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------------- complexity
def write_case_groups(results_dir: str | Path, groups: Mapping[str, Mapping[str, str]], source: str) -> None:
    """``case_groups.json``: per grouping (e.g. ``diagnosis``) the group of each case id, with where it came from.

    Written only when it changes, so that re-running a finished benchmark leaves the file's bytes alone.
    """
    path = Path(results_dir) / "case_groups.json"
    payload = {"source": source, "groups": {k: dict(sorted(v.items())) for k, v in groups.items()}}
    if not path.is_file() or json.loads(path.read_text()) != payload:
        write_json(path, payload)


def read_case_groups(results_dir: str | Path) -> dict[str, dict[str, str]]:
    """The groupings of ``case_groups.json`` (``{}`` when the benchmark has none)."""
    path = Path(results_dir) / "case_groups.json"
    return json.loads(path.read_text()).get("groups", {}) if path.is_file() else {}


def read_complexity(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(results_dir) / "complexity.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_complexity(results_dir: str | Path, known: Mapping[str, Mapping[str, Any]]) -> None:
    write_json(Path(results_dir) / "complexity.json", {k: dict(v) for k, v in known.items()})


def missing_runs(expected: Sequence[tuple[str, str]], results_dir: str | Path) -> list[tuple[str, str]]:
    """The ``(label, key)`` pairs of ``expected`` without a stored ``metrics.json``."""
    return [
        (lab, key) for lab, key in expected if not (run_results_dir(results_dir, lab, key) / METRICS_FILE).is_file()
    ]
