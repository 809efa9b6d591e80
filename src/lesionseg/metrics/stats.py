"""Statistics for comparing models: bootstrap confidence intervals, paired tests and subgroups over test images.

Scores here are computed from per-image confusion counts (``tp, fp, fn, tn`` rows of
:meth:`SegmentationMetrics.per_image_table`), so a bootstrap of the *global* reduction resamples images and re-pools
their counts, exactly as the global figure itself is made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "SIZE_TERTILES",
    "PairedTest",
    "Subgroup",
    "bootstrap_ci",
    "global_dice",
    "holm",
    "paired_bootstrap_ci",
    "paired_permutation_global",
    "paired_wilcoxon",
    "size_tertiles",
    "subgroup_means",
]

#: Names of the lesion-size tertiles, smallest first.
SIZE_TERTILES = ("small", "medium", "large")


def global_dice(counts: np.ndarray) -> float:
    """Dice of one confusion matrix pooled over rows of ``(tp, fp, fn, tn)`` counts (1 when both are empty)."""
    tp, fp, fn = counts[:, 0].sum(), counts[:, 1].sum(), counts[:, 2].sum()
    den = 2 * tp + fp + fn
    return float(2 * tp / den) if den else 1.0


def bootstrap_ci(
    per_image: Sequence[float] | None = None,
    counts: np.ndarray | None = None,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval over images, seeded so a report regenerates identically.

    Give ``per_image`` scores for the per-image mean, or ``counts`` (an ``(n, 4)`` array of ``tp, fp, fn, tn``) for
    the global Dice re-pooled in every resample.
    """
    if (per_image is None) == (counts is None):
        raise ValueError("give exactly one of per_image or counts")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"bad level {level} or resamples {resamples}")
    n = len(per_image) if per_image is not None else len(counts)
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    if per_image is not None:
        values = np.asarray(per_image, dtype=float)[idx].mean(axis=1)
    else:
        c = np.asarray(counts, dtype=float)[idx]  # (resamples, n, 4)
        tp, fp, fn = c[..., 0].sum(1), c[..., 1].sum(1), c[..., 2].sum(1)
        den = 2 * tp + fp + fn
        values = np.where(den > 0, 2 * tp / np.maximum(den, 1e-12), 1.0)
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def paired_bootstrap_ci(
    per_image_a: Sequence[float] | None = None,
    per_image_b: Sequence[float] | None = None,
    counts_a: np.ndarray | None = None,
    counts_b: np.ndarray | None = None,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the difference ``a - b`` of two scorings of the same images.

    Each resample draws images once and scores both sides on them (the pairing is kept). Give per-image scores for the
    difference of per-image means, or ``(n, 4)`` counts for the difference of global Dice re-pooled per resample.
    """
    if (per_image_a is None) != (per_image_b is None) or (counts_a is None) != (counts_b is None):
        raise ValueError("give both sides: per_image_a and per_image_b, or counts_a and counts_b")
    if (per_image_a is None) == (counts_a is None):
        raise ValueError("give exactly one of the per-image scores or the counts")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"bad level {level} or resamples {resamples}")
    a = np.asarray(per_image_a if per_image_a is not None else counts_a, dtype=float)
    b = np.asarray(per_image_b if per_image_b is not None else counts_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal shapes, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    if per_image_a is not None:
        values = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    else:
        values = _pooled_dice(a[idx]) - _pooled_dice(b[idx])
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def _pooled_dice(c: np.ndarray) -> np.ndarray:
    """Global Dice of each resample of ``(resamples, n, 4)`` counts."""
    tp, fp, fn = c[..., 0].sum(-1), c[..., 1].sum(-1), c[..., 2].sum(-1)
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1e-12), 1.0)


def paired_permutation_global(
    counts_a: np.ndarray, counts_b: np.ndarray, resamples: int = 2000, seed: int = 0
) -> float:
    """Two-sided p-value of a paired permutation test of the global Dice difference ``a - b``.

    Under the null hypothesis the two scorings of an image are exchangeable: each permutation swaps each image's
    ``(tp, fp, fn, tn)`` between the sides with probability 1/2 and re-pools. p = (1 + #|permuted Δ| >= |Δ|) /
    (1 + resamples), so it is never 0.
    """
    a, b = np.asarray(counts_a, dtype=float), np.asarray(counts_b, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"paired counts need equal (n, 4) shapes, got {a.shape} and {b.shape}")
    if len(a) == 0:
        return math.nan
    observed = abs(global_dice(a) - global_dice(b))
    swap = np.random.default_rng(seed).random((resamples, len(a), 1)) < 0.5
    pa, pb = np.where(swap, b, a), np.where(swap, a, b)
    permuted = np.abs(_pooled_dice(pa) - _pooled_dice(pb))
    return float((1 + np.sum(permuted >= observed - 1e-12)) / (1 + resamples))


@dataclass(frozen=True)
class PairedTest:
    """Wilcoxon signed-rank test of ``a - b`` over matched images.

    Attributes:
        n: number of matched pairs.
        mean_difference: mean of ``a - b``.
        median_difference: median of ``a - b``.
        statistic: the Wilcoxon statistic (NaN when every difference is zero).
        p_value: two-sided p-value (1 when every difference is zero).
    """

    n: int
    mean_difference: float
    median_difference: float
    statistic: float
    p_value: float


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of paired scores (e.g. per-image Dice of two models on the same images)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired scores need equal 1-D shapes, got {x.shape} and {y.shape}")
    d = x - y
    if len(d) == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan)
    if np.allclose(d, 0):
        return PairedTest(len(d), float(d.mean()), float(np.median(d)), math.nan, 1.0)
    res = sps.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    return PairedTest(len(d), float(d.mean()), float(np.median(d)), float(res.statistic), float(res.pvalue))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), for several comparisons against one model."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class Subgroup:
    """The mean of a per-image score over one subgroup of the test images, with its bootstrap interval.

    Attributes:
        name: the subgroup.
        n: number of images in it.
        mean: mean score.
        lower: lower end of the percentile bootstrap interval (NaN for an empty group).
        upper: upper end.
    """

    name: str
    n: int
    mean: float
    lower: float
    upper: float


def size_tertiles(areas: Mapping[str, float]) -> dict[str, str]:
    """Each image's lesion-size tertile (:data:`SIZE_TERTILES`) by the rank of its area, ties broken by id.

    Thirds by rank, as equal as the count allows (10/10/10 of 30, 54/53/53 of 160), so that
    ties and skewed areas never empty a group.
    """
    order = sorted(areas, key=lambda k: (areas[k], k))
    n = len(order)
    return {k: SIZE_TERTILES[min(2, (3 * i) // n)] for i, k in enumerate(order)} if n else {}


def subgroup_means(
    values: Mapping[str, float],
    groups: Mapping[str, str],
    order: Sequence[str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[Subgroup]:
    """Mean and percentile bootstrap interval (over the group's images, seeded) of ``values`` per group.

    Args:
        values: per-image score by image id.
        groups: group name by image id; ids without a group are left out.
        order: the groups to report, in this order (an empty one gets n = 0 and NaN); None = the groups found, sorted.
        resamples: bootstrap resamples.
        seed: bootstrap seed (the same seed for every group, so a report regenerates identically).
        level: interval level.
    """
    names = list(order) if order is not None else sorted(set(groups.values()))
    out = []
    for name in names:
        v = [values[k] for k in sorted(values) if groups.get(k) == name]
        if not v:
            out.append(Subgroup(name, 0, math.nan, math.nan, math.nan))
            continue
        lo, hi = bootstrap_ci(per_image=v, resamples=resamples, level=level, seed=seed)
        out.append(Subgroup(name, len(v), float(np.mean(v)), lo, hi))
    return out
