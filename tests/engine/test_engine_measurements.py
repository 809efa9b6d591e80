"""Measurements of predicted against ground-truth masks, and the per-image Dice subgroups of an evaluation."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from lesionseg.engine.evaluator import Evaluation
from lesionseg.engine.measurements import AGREEMENT_FIELDS, MeasurementAgreement
from lesionseg.metrics import SegmentationMetrics


def disc(r: float, size: int = 200) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (np.hypot(yy - size / 2, xx - size / 2) <= r).astype(np.uint8)


def test_agreement_of_masks_ten_percent_too_wide(tmp_path) -> None:
    agreement = MeasurementAgreement(pixel_size=0.5)
    radii = [30, 45, 60, 75]
    for i, r in enumerate(radii):
        agreement.update(f"c{i}", disc(1.1 * r), disc(r))
    agreement.update("empty_truth", disc(20), np.zeros((200, 200), np.uint8))
    rows = {r.name: r for r in agreement.summary()}
    assert len(agreement) == 4 and agreement.left_out == ["empty_truth"]
    assert rows["area"].bland_altman.bias == pytest.approx(21, abs=1.0)  # 1.1^2 - 1
    assert rows["equivalent_diameter"].bland_altman.bias == pytest.approx(10, abs=0.5)
    assert rows["max_feret_diameter"].bland_altman.bias == pytest.approx(10, abs=1.0)
    assert rows["perimeter"].bland_altman.bias == pytest.approx(10, abs=0.6)
    assert rows["compactness"].bland_altman.bias == pytest.approx(0, abs=0.6)
    assert abs(rows["asymmetry_major"].bland_altman.bias) < 0.5 and not rows["asymmetry_major"].bland_altman.relative
    assert rows["area"].unit == "mm²" and rows["perimeter"].unit == "mm" and rows["compactness"].unit == "1"
    assert rows["area"].truth_mean == pytest.approx(np.mean([disc(r).sum() * 0.25 for r in radii]))
    assert 0.8 < rows["area"].icc < 1.0  # a 21 % bias costs absolute agreement
    table = agreement.table("t")
    assert "| Area | mm² |" in table and "ICC(2,1)" in table and "empty_truth" in table
    written = agreement.save(tmp_path)
    assert [p.name for p in written] == ["measurements.csv", "agreement.md", "bland_altman.png"]
    assert all(p.stat().st_size > 0 for p in written)
    with open(written[0]) as f:
        data = list(csv.DictReader(f))
    assert [r["id"] for r in data] == ["c0", "c1", "c2", "c3"]
    assert set(data[0]) == {"id"} | {f"{s}_{n}" for n in AGREEMENT_FIELDS for s in ("truth", "pred")}


def test_empty_prediction_stays_in_and_bad_input_is_refused() -> None:
    agreement = MeasurementAgreement()
    agreement.update("a", disc(40), disc(40))
    agreement.update("miss", np.zeros((200, 200), np.uint8), disc(40))
    area = next(r for r in agreement.summary() if r.name == "area")
    assert area.bland_altman.n == 2 and area.bland_altman.bias == pytest.approx(-50)
    assert "1 image(s) with an empty prediction" in agreement.table()
    with pytest.raises(ValueError, match="differ"):
        agreement.update("b", disc(10, 50), disc(10, 60))
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="pixel size"):
            MeasurementAgreement(pixel_size=bad)


def test_subgroups_by_diagnosis_and_lesion_size() -> None:
    metrics = SegmentationMetrics()
    diagnoses = {}
    names = ("common nevus", "atypical nevus", "melanoma")
    for i in range(9):
        truth = disc(10 + 5 * i, 128)  # areas grow with i: tertiles are ids 0-2, 3-5, 6-8
        pred = disc(10 + 5 * i - (i % 3), 128)  # diagnosis i % 3 loses i % 3 pixels of radius
        metrics.update(torch.from_numpy(pred)[None, None], torch.from_numpy(truth)[None, None], ids=[f"c{i}"])
        diagnoses[f"c{i}"] = names[i % 3]
    ev = Evaluation(metrics, "m", "ckpt", "9 cases", "native resolution", diagnoses=diagnoses)
    groups = ev.subgroups(resamples=200)
    dice = {r["id"]: r["dice"] for r in metrics.per_image_table()}
    by_diag = {g.name: g for g in groups["diagnosis"]}
    assert list(by_diag) == list(names)
    assert by_diag["common nevus"].mean == pytest.approx(1.0)
    assert by_diag["melanoma"].mean == pytest.approx(np.mean([dice["c2"], dice["c5"], dice["c8"]]))
    assert by_diag["melanoma"].lower <= by_diag["melanoma"].mean <= by_diag["melanoma"].upper
    by_size = {g.name: g for g in groups["lesion size"]}
    assert by_size["small"].mean == pytest.approx(np.mean([dice["c0"], dice["c1"], dice["c2"]]))
    assert [g.n for g in groups["lesion size"]] == [3, 3, 3]
    table = ev.subgroup_table(resamples=200)
    assert "diagnosis: melanoma | 3 |" in table and "lesion size: large (" in table
    no_diag = Evaluation(metrics, "m", "ckpt", "9 cases", "native resolution")
    assert list(no_diag.subgroups(resamples=50)) == ["lesion size"]
