"""Measurements of predicted masks checked against the same measurements of their ground truth.

``lesionseg evaluate --native --measurements`` measures the predicted and the ground-truth mask of every evaluated
image with :func:`~lesionseg.inference.measure_lesion` (the one estimator that ``predict`` and the web API use, at each
image's own resolution) and reports per measurement the Bland-Altman bias and 95 % limits of agreement and the
ICC(2,1) (:mod:`lesionseg.metrics.agreement`).

Differences are relative to the ground truth (% of the truth's value), except for the two asymmetries: they are
already fractions of the lesion (0 for a symmetric shape), where a relative difference would divide by nearly zero, so
their differences are absolute, in percentage points of the lesion. Images whose ground truth is empty have nothing to
compare and are left out (counted in ``left_out``); images whose prediction is empty stay in (a -100 % area is a
failure the table must show).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..inference.measure import check_pixel_size, measure_lesion
from ..metrics.agreement import BlandAltman, bland_altman, icc

__all__ = ["AGREEMENT_FIELDS", "AgreementRow", "MeasurementAgreement"]

#: Measurements compared, with their label and unit (pixels; "fraction" for the asymmetries, none for compactness).
AGREEMENT_FIELDS: dict[str, tuple[str, str]] = {
    "area": ("Area", "px²"),
    "perimeter": ("Perimeter", "px"),
    "equivalent_diameter": ("Equivalent diameter", "px"),
    "max_feret_diameter": ("Max Feret diameter", "px"),
    "asymmetry_major": ("Asymmetry (major axis)", "fraction"),
    "asymmetry_minor": ("Asymmetry (minor axis)", "fraction"),
    "compactness": ("Compactness", "1"),
}
_ABSOLUTE = frozenset({"asymmetry_major", "asymmetry_minor"})
_AREAS = frozenset({"area"})


@dataclass(frozen=True)
class AgreementRow:
    """One measurement's agreement over the images.

    Attributes:
        name: measurement field of :class:`~lesionseg.inference.LesionMeasurements`.
        label: its name in tables.
        unit: unit of the means (pixels, or mm with a pixel size).
        truth_mean: mean over the images of the ground truth's value.
        pred_mean: mean of the prediction's value.
        bland_altman: bias and limits (in % of the truth, or in percentage points for the asymmetries).
        icc: ICC(2,1) of the (prediction, truth) pairs.
    """

    name: str
    label: str
    unit: str
    truth_mean: float
    pred_mean: float
    bland_altman: BlandAltman
    icc: float

    @property
    def difference_unit(self) -> str:
        return "%" if self.bland_altman.relative else "points"


class MeasurementAgreement:
    """Collects the measurements of predicted and ground-truth masks, image by image, and summarises them.

    Args:
        pixel_size: millimetres per pixel: means in mm / mm² (the relative differences and the ICC do not change).
            Refused with ``ValueError`` when not a positive, finite number, before any image is measured.
    """

    def __init__(self, pixel_size: float | None = None) -> None:
        self.pixel_size = None if pixel_size is None else check_pixel_size(pixel_size)
        self.rows: list[dict[str, float | str]] = []
        self.left_out: list[str] = []

    def __len__(self) -> int:
        return len(self.rows)

    def update(self, case_id: str, pred: np.ndarray, truth: np.ndarray) -> None:
        """Measure one image's predicted and ground-truth masks (H, W), both at the image's own resolution."""
        if np.asarray(pred).shape != np.asarray(truth).shape:
            raise ValueError(f"{case_id}: predicted mask {np.shape(pred)} and ground truth {np.shape(truth)} differ")
        t = measure_lesion(truth)
        if t.area == 0:
            self.left_out.append(str(case_id))
            return
        p = measure_lesion(pred)
        row: dict[str, float | str] = {"id": str(case_id)}
        for name in AGREEMENT_FIELDS:
            row[f"truth_{name}"] = self._scaled(name, float(getattr(t, name)))
            row[f"pred_{name}"] = self._scaled(name, float(getattr(p, name)))
        self.rows.append(row)

    def _scaled(self, name: str, value: float) -> float:
        if self.pixel_size is None or AGREEMENT_FIELDS[name][1] not in ("px", "px²"):
            return value
        return value * self.pixel_size ** (2 if name in _AREAS else 1)

    def _unit(self, name: str) -> str:
        unit = AGREEMENT_FIELDS[name][1]
        if self.pixel_size is not None and unit in ("px", "px²"):
            return unit.replace("px", "mm")
        return unit

    def values(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(pred, truth)`` arrays of one measurement over the collected images, in collection order."""
        pred = np.array([float(r[f"pred_{name}"]) for r in self.rows])
        truth = np.array([float(r[f"truth_{name}"]) for r in self.rows])
        return pred, truth

    def summary(self) -> list[AgreementRow]:
        """One :class:`AgreementRow` per measurement of :data:`AGREEMENT_FIELDS`."""
        out = []
        for name, (label, _) in AGREEMENT_FIELDS.items():
            pred, truth = self.values(name)
            relative = name not in _ABSOLUTE
            ba = bland_altman(pred if relative else 100 * pred, truth if relative else 100 * truth, relative=relative)
            out.append(
                AgreementRow(
                    name,
                    label,
                    self._unit(name),
                    float(truth.mean()) if len(truth) else math.nan,
                    float(pred.mean()) if len(pred) else math.nan,
                    ba,
                    icc(np.stack([pred, truth], axis=1)) if len(pred) else math.nan,
                )
            )
        return out

    def table(self, title: str | None = None) -> str:
        """The summary as a markdown table, with what its columns mean underneath."""
        empty = sum(float(r["pred_area"]) == 0 for r in self.rows)
        lines = [f"**{title}**", ""] if title else []
        lines += [
            "| Measurement | Unit | Truth mean | Predicted mean | Bias | Median difference | 95% limits of agreement "
            "| ICC(2,1) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.summary():
            ba, u = r.bland_altman, r.difference_unit
            lines.append(
                f"| {r.label} | {r.unit} | {_num(r.truth_mean)} | {_num(r.pred_mean)} | {ba.bias:+.2f} {u} | "
                f"{ba.median:+.2f} {u} | "
                f"{ba.lower:+.2f} to {ba.upper:+.2f} {u} | {r.icc:.3f} |"
            )
        note = (
            f"\n{len(self.rows)} images, each measured on its predicted and its ground-truth mask at its own "
            "resolution (`measure_lesion`, as `predict` and the API measure). Bias = mean of (predicted - truth) / "
            "truth in %, 95% limits = bias ± 1.96 SD (Bland-Altman); asymmetries (fractions of the lesion) in "
            "percentage points instead. ICC(2,1): two-way random effects, absolute agreement, single measurement "
            "(Shrout & Fleiss)."
        )
        if empty:
            note += f" {empty} image(s) with an empty prediction are included (-100 % area)."
        if self.left_out:
            note += f" Left out for an empty ground truth: {', '.join(self.left_out)}."
        return "\n".join(lines) + "\n" + note

    def save(self, out: str | Path, title: str | None = None) -> list[Path]:
        """Writes ``measurements.csv`` (per image, both masks), ``agreement.md`` and ``bland_altman.png`` into
        ``out``; returns the paths written."""
        from ..viz.agreement import plot_bland_altman

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "measurements.csv", out / "agreement.md", out / "bland_altman.png"]
        fields = ["id"] + [f"{side}_{name}" for name in AGREEMENT_FIELDS for side in ("truth", "pred")]
        with open(written[0], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
        written[1].write_text(self.table(title) + "\n")
        panels = []
        for row in self.summary():
            pred, truth = self.values(row.name)
            if row.name in _ABSOLUTE:
                pred, truth = 100 * pred, 100 * truth
                diff = pred - truth
                unit = "% of lesion"
            else:
                diff = 100 * (pred - truth) / truth
                unit = row.unit
            panels.append((f"{row.label} ({unit})", (pred + truth) / 2, diff, row.bland_altman))
        plot_bland_altman(panels, written[2], title=title)
        return written


def _num(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"
