"""Pixel-level ECE and reliability-diagram data against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.metrics.calibration import CalibrationStats, expected_calibration_error


def test_ece_hand_computed_two_bins() -> None:
    # 2 bins: [0, 0.5) holds 0.1, 0.2, 0.3 with labels 0, 0, 1 -> conf 0.2, freq 1/3, gap 2/15;
    # [0.5, 1] holds 0.8, 1.0 with labels 1, 1 -> conf 0.9, freq 1, gap 0.1. ECE = 3/5 * 2/15 + 2/5 * 0.1 = 0.12.
    probs = np.array([0.1, 0.2, 0.3, 0.8, 1.0])
    labels = np.array([0, 0, 1, 1, 1])
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.12)


def test_ece_fifteen_bins_and_diagram() -> None:
    probs = np.array([0.05, 0.05, 0.95, 0.95, 0.5])
    labels = np.array([0, 1, 1, 1, 0])
    stats = CalibrationStats(15)
    stats.update(probs[:2], labels[:2])  # accumulating in two batches equals one
    stats.update(probs[2:], labels[2:])
    diagram = stats.aggregate()
    # bin 0: conf 0.05, freq 0.5, 2 px -> 0.9; bin 14: conf 0.95, freq 1, 2 px -> 0.1; bin 7: 0.5 vs 0, 1 px -> 0.5
    assert diagram.ece == pytest.approx((0.9 + 0.1 + 0.5) / 5)
    assert diagram.counts.sum() == 5 and diagram.counts[0] == 2 and diagram.counts[7] == 1 and diagram.counts[14] == 2
    assert np.isnan(diagram.confidence[3]) and diagram.to_dict()["confidence"][3] is None
    assert diagram.frequency[14] == pytest.approx(1.0)
    assert len(diagram.edges) == 16


def test_perfectly_calibrated_sample_has_small_ece() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    y = rng.uniform(size=p.size) < p
    assert expected_calibration_error(p, y) < 0.01
    assert expected_calibration_error(np.clip(p * 1.5, 0, 1), y) > 0.1


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="logits"):
        expected_calibration_error(np.array([1.5]), np.array([1]))
    with pytest.raises(ValueError, match="differ"):
        expected_calibration_error(np.array([0.5, 0.2]), np.array([1]))
    with pytest.raises(ValueError, match="no pixels"):
        CalibrationStats().aggregate()
    with pytest.raises(ValueError, match="n_bins"):
        CalibrationStats(0)
