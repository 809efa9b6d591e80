"""The reliability-diagram figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lesionseg.metrics.calibration import CalibrationStats
from lesionseg.viz import plot_reliability_diagram


def test_reliability_diagram_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=5000)
    y = rng.uniform(size=p.size) < p**2
    diagrams = {}
    for label, probs in (("before", p), ("after", p**2)):
        stats = CalibrationStats()
        stats.update(probs, y)
        diagrams[label] = stats.aggregate()
    out = plot_reliability_diagram(diagrams, tmp_path / "sub" / "reliability.png", title="test")
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no reliability"):
        plot_reliability_diagram({}, tmp_path / "x.png")
