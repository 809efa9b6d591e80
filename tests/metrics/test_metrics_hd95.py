from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lesionseg.metrics import hd95, hd95_batch


def test_squares_offset_by_three() -> None:
    # 3x3 squares side by side: pred cols 1..3, target cols 4..6, rows 1..3. Cross erosion keeps only each centre, so
    # each boundary is the 8 ring pixels. Pred ring -> nearest target pixel lies in target col 4, same row:
    # col 3 -> 1 (3 px), col 2 -> 2 (2 px, centre excluded), col 1 -> 3 (3 px); the reverse direction mirrors it.
    # Pooled 16 values: six 1s, four 2s, six 3s; 95th percentile at index 0.95 * 15 = 14.25 -> 3.
    pred = np.zeros((5, 8), dtype=bool)
    target = np.zeros((5, 8), dtype=bool)
    pred[1:4, 1:4] = True
    target[1:4, 4:7] = True
    assert hd95(pred, target) == pytest.approx(3.0)


def test_percentile_ignores_single_outlier() -> None:
    # Two 1-pixel-thick lines 2 rows apart (every distance 2, 20 + 20 values) plus one isolated target pixel 10 rows
    # below pred pixel (0, 0). Pooled: forty 2s and one 10; index 0.95 * 40 = 38 -> 2, while the full HD would be 10.
    pred = np.zeros((12, 20), dtype=np.uint8)
    target = np.zeros((12, 20), dtype=np.uint8)
    pred[0, :] = 1
    target[2, :] = 1
    target[10, 0] = 1
    assert hd95(pred, target) == pytest.approx(2.0)


def test_linear_interpolation_and_spacing() -> None:
    # pred = {(0, 0)}, target = {(0, 3), (4, 0)}. pred->target: min(3, 4) = 3; target->pred: 3 and 4.
    # Pooled [3, 3, 4]: position 0.95 * 2 = 1.9 -> 3 + 0.9 * (4 - 3) = 3.9.
    pred = torch.zeros(6, 6)
    target = torch.zeros(6, 6)
    pred[0, 0] = 1
    target[0, 3] = 1
    target[4, 0] = 1
    assert hd95(pred, target) == pytest.approx(3.9)
    # Row spacing 2: distances become 3 (same row) and 8 (4 rows) -> pooled [3, 3, 8] -> 3 + 0.9 * 5 = 7.5.
    assert hd95(pred, target, spacing=(2.0, 1.0)) == pytest.approx(7.5)


def test_empty_conventions() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    some = empty.copy()
    some[1, 1] = True
    assert hd95(empty, empty) == 0.0
    assert math.isnan(hd95(some, empty))
    assert math.isnan(hd95(empty, some))


def test_batch_and_validation() -> None:
    pred = torch.zeros(3, 1, 6, 6)
    target = torch.zeros(3, 1, 6, 6)
    pred[0, 0, 0, 0] = 1
    target[0, 0, 3, 4] = 1  # single pixels 3-4-5 apart -> 5
    target[2, 0, 2, 2] = 1  # pred empty, target not -> nan
    values = hd95_batch(pred.bfloat16(), target)
    assert values.shape == (3,) and values.dtype == torch.float64
    assert values[0].item() == pytest.approx(5.0)
    assert values[1].item() == 0.0
    assert math.isnan(values[2].item())
    with pytest.raises(ValueError, match="same shape"):
        hd95(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        hd95(np.full((4, 4), 0.5), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="spacing"):
        hd95(np.ones((4, 4)), np.ones((4, 4)), spacing=(1.0, -1.0))
