"""Pixel-level calibration of foreground probabilities: expected calibration error and reliability-diagram data.

A binary segmentation model states, for every pixel, a probability ``p`` that it is foreground. It is *calibrated*
when, among the pixels it gives ``p ~ 0.7``, about 70 % are foreground. The expected calibration error (ECE, Naeini
et al. 2015; Guo et al. 2017) bins the pixels by ``p`` into equal-width bins and averages, weighted by the pixel
count, the gap between the bin's mean probability and its foreground fraction:

    ECE = sum_b (n_b / N) * |mean(p in b) - mean(y in b)|

Our reading for segmentation: the binned quantity is the *foreground probability* over [0, 1] (the reliability
diagram of the positive class, as in Mehrtash et al. 2020 for segmentation), not the top-label confidence
``max(p, 1 - p)``. The top-label form folds the two halves of [0, 1] together, so with 15 bins only 7-8 of them
would carry data, and it hides whether a model over- or under-states the lesion. Every pixel of every image counts
once (a "global" reduction over pixels, like the global Dice): the background dominates the count and pulls ECE
down, which is why the reliability diagram is always shown beside it.

:class:`CalibrationStats` accumulates the per-bin sums batch by batch (``update`` / ``aggregate`` / ``reset``, as
:class:`~lesionseg.metrics.SegmentationMetrics`), so a whole test set never has to sit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CalibrationStats", "ReliabilityDiagram", "expected_calibration_error"]


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin data of a reliability diagram.

    Attributes:
        edges: bin edges, ``n_bins + 1`` values from 0 to 1.
        counts: pixels per bin.
        confidence: mean predicted foreground probability per bin (NaN for an empty bin).
        frequency: observed foreground fraction per bin (NaN for an empty bin).
        ece: the expected calibration error over all bins.
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray
    ece: float

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (empty bins as None)."""

        def clean(values: np.ndarray) -> list[float | None]:
            return [None if not np.isfinite(v) else round(float(v), 6) for v in values]

        return {
            "ece": round(self.ece, 6),
            "edges": [round(float(e), 6) for e in self.edges],
            "counts": [int(c) for c in self.counts],
            "confidence": clean(self.confidence),
            "frequency": clean(self.frequency),
        }


class CalibrationStats:
    """Accumulates per-bin sums of foreground probabilities and labels over any number of batches.

    Args:
        n_bins: equal-width bins over [0, 1] (15, as Guo et al. 2017).

    Example:
        >>> stats = CalibrationStats()
        >>> stats.update(np.array([0.1, 0.9]), np.array([0, 1]))
        >>> round(stats.aggregate().ece, 3)
        0.1
    """

    def __init__(self, n_bins: int = 15) -> None:
        if int(n_bins) < 1:
            raise ValueError(f"n_bins must be at least 1, got {n_bins}")
        self.n_bins = int(n_bins)
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated pixel."""
        self._count = np.zeros(self.n_bins, dtype=np.int64)
        self._prob_sum = np.zeros(self.n_bins, dtype=np.float64)
        self._label_sum = np.zeros(self.n_bins, dtype=np.float64)

    def __len__(self) -> int:
        return int(self._count.sum())

    def update(self, probs: np.ndarray, targets: np.ndarray) -> None:
        """Add pixels: foreground probabilities in [0, 1] and their {0, 1} labels, any (matching) shape.

        Raises:
            ValueError: shapes differ, or a probability lies outside [0, 1] (or is NaN).
        """
        probs = np.asarray(probs, dtype=np.float64).ravel()
        targets = np.asarray(targets).ravel()
        if probs.shape != targets.shape:
            raise ValueError(f"probabilities ({probs.size} values) and targets ({targets.size}) differ in size")
        if probs.size and not (np.all(probs >= 0) and np.all(probs <= 1)):
            raise ValueError("probabilities must lie in [0, 1] (logits given? apply the sigmoid first)")
        # Bin b holds [b/n, (b+1)/n); p = 1 falls in the last bin.
        index = np.minimum((probs * self.n_bins).astype(np.int64), self.n_bins - 1)
        self._count += np.bincount(index, minlength=self.n_bins)
        self._prob_sum += np.bincount(index, weights=probs, minlength=self.n_bins)
        self._label_sum += np.bincount(index, weights=(targets > 0).astype(np.float64), minlength=self.n_bins)

    def aggregate(self) -> ReliabilityDiagram:
        """The reliability diagram and ECE of everything added so far.

        Raises:
            ValueError: nothing was added.
        """
        total = int(self._count.sum())
        if total == 0:
            raise ValueError("no pixels accumulated; call update() first")
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = self._prob_sum / self._count
            frequency = self._label_sum / self._count
        gaps = np.abs(self._prob_sum - self._label_sum)  # = n_b * |conf_b - freq_b|
        return ReliabilityDiagram(
            edges=np.linspace(0.0, 1.0, self.n_bins + 1),
            counts=self._count.copy(),
            confidence=confidence,
            frequency=frequency,
            ece=float(gaps.sum() / total),
        )


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    """Pixel-level ECE of foreground probabilities against {0, 1} labels, ``n_bins`` equal-width bins over [0, 1]."""
    stats = CalibrationStats(n_bins)
    stats.update(probs, targets)
    return stats.aggregate().ece
