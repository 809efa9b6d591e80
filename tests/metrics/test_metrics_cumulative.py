from __future__ import annotations

import math

import pytest
import torch

from lesionseg.metrics import SCORE_FUNCTIONS, SegmentationMetrics, format_table, get_stats, hd95_batch


def make_batch(seed: int, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pred = (torch.rand(n, 1, 8, 8, generator=gen) > 0.6).float()
    target = (torch.rand(n, 1, 8, 8, generator=gen) > 0.7).float()
    return pred, target


def test_aggregate_matches_functional() -> None:
    batches = [make_batch(0), make_batch(1), make_batch(2, n=2)]
    metrics = SegmentationMetrics(include_hd95=True)
    for pred, target in batches:
        metrics.update(pred, target)
    pred = torch.cat([b[0] for b in batches])
    target = torch.cat([b[1] for b in batches])
    stats = get_stats(pred, target).as_tuple()
    results = metrics.aggregate()
    assert len(metrics) == 8
    for name, fn in SCORE_FUNCTIONS.items():
        assert results["global"][name] == pytest.approx(fn(*stats, "global").item(), abs=1e-12)
        assert results["per_image"][name] == pytest.approx(fn(*stats, "per_image").item(), abs=1e-12)
    assert "hd95" not in results["global"]
    assert results["per_image"]["hd95"] == pytest.approx(hd95_batch(pred, target).nanmean().item())


def test_hd95_nan_aware_mean_and_undefined_count() -> None:
    pred = torch.zeros(3, 1, 6, 6)
    target = torch.zeros(3, 1, 6, 6)
    pred[0, 0, 0, 0] = 1
    target[0, 0, 3, 4] = 1  # hd95 = 5
    # image 1: both empty -> 0; image 2: only target non-empty -> nan
    target[2, 0, 1, 1] = 1
    metrics = SegmentationMetrics(include_hd95=True)
    metrics.update(pred, target, ids=["a", "b", "c"])
    per_image = metrics.aggregate()["per_image"]
    assert per_image["hd95"] == pytest.approx(2.5)
    assert per_image["hd95_undefined"] == 1.0
    rows = metrics.per_image_table()
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["hd95"] == pytest.approx(5.0) and math.isnan(rows[2]["hd95"])
    assert rows[1]["dice"] == 1.0 and rows[2]["dice"] == 0.0
    assert rows[2]["fn"] == 1


def test_ids_reset_and_errors() -> None:
    pred, target = make_batch(3, n=2)
    metrics = SegmentationMetrics()
    with pytest.raises(RuntimeError, match="update"):
        metrics.aggregate()
    with pytest.raises(ValueError, match="ids has 1"):
        metrics.update(pred, target, ids=["only-one"])
    metrics.update(pred, target)
    metrics.update(pred, target, ids=["x", "y"])
    assert [r["id"] for r in metrics.per_image_table()] == [0, 1, "x", "y"]
    assert "hd95" not in metrics.aggregate()["per_image"]
    with pytest.raises(ValueError, match="include_hd95"):
        metrics.hd95_values()
    metrics.reset()
    assert len(metrics) == 0
    with pytest.raises(ValueError, match="spacing"):
        SegmentationMetrics(include_hd95=True, hd95_spacing=0.0)


def test_format_table_names_both_reductions() -> None:
    results = {
        "global": {"dice": 0.5, "iou": 1 / 3},
        "per_image": {"dice": 10 / 21, "iou": 0.25, "hd95": 2.5, "hd95_undefined": 1.0},
    }
    table = format_table(results, "Test set")
    lines = table.splitlines()
    assert lines[0] == "**Test set**"
    assert lines[2] == "| Reduction | Dice (%) | IoU (%) | HD95 |"
    assert lines[4] == "| global (one confusion matrix over all pixels) | 50.00 | 33.33 | n/a |"
    assert lines[5] == "| per-image mean | 47.62 | 25.00 | 2.50 |"
    assert "1 image(s) with exactly one empty mask excluded" in table
    with pytest.raises(ValueError, match="per_image"):
        format_table({"global": {"dice": 0.5}}, "x")
