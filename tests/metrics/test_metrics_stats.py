"""Bootstrap intervals, the paired Wilcoxon test and Holm's adjustment against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from lesionseg.metrics.stats import bootstrap_ci, global_dice, holm, paired_wilcoxon, size_tertiles, subgroup_means


def test_global_dice_pools_counts() -> None:
    counts = np.array([[8, 2, 0, 90], [0, 0, 4, 96]])  # 2*8 / (16 + 2 + 4)
    assert global_dice(counts) == pytest.approx(16 / 22)
    assert global_dice(np.zeros((2, 4))) == 1.0


def test_bootstrap_interval_brackets_the_mean_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0.6, 1.0, 200)
    lo, hi = bootstrap_ci(per_image=x, resamples=1000)
    assert lo < x.mean() < hi
    # the standard error of a mean of 200 uniforms on [0.6, 1]: 0.4 / sqrt(12 * 200) ~ 0.0082; 95% ~ +-0.016
    assert 0.025 < hi - lo < 0.04
    assert bootstrap_ci(per_image=x, resamples=1000) == (lo, hi)
    constant = bootstrap_ci(per_image=[0.5] * 10)
    assert constant == (0.5, 0.5)


def test_bootstrap_of_global_dice_resamples_images() -> None:
    counts = np.array([[9, 1, 0, 90]] * 5 + [[1, 0, 9, 90]] * 5)
    lo, hi = bootstrap_ci(counts=counts, resamples=500)
    assert lo < global_dice(counts) < hi
    with pytest.raises(ValueError):
        bootstrap_ci(per_image=[1.0], counts=counts)


def test_paired_wilcoxon_matches_scipy_and_handles_ties() -> None:
    a = [0.9, 0.85, 0.8, 0.95, 0.7, 0.88, 0.91]
    b = [0.8, 0.86, 0.7, 0.9, 0.6, 0.8, 0.9]
    t = paired_wilcoxon(a, b)
    ref = sps.wilcoxon(a, b)
    assert t.n == 7 and t.p_value == pytest.approx(ref.pvalue) and t.statistic == pytest.approx(ref.statistic)
    assert t.mean_difference == pytest.approx(np.mean(np.subtract(a, b)))
    same = paired_wilcoxon(a, a)
    assert same.p_value == 1.0 and math.isnan(same.statistic)
    with pytest.raises(ValueError):
        paired_wilcoxon([1.0, 2.0], [1.0])


def test_holm_by_hand() -> None:
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04); back in the given order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_size_tertiles_split_by_rank_into_equal_thirds() -> None:
    areas = {f"c{i:02d}": float(a) for i, a in enumerate([50, 10, 30, 20, 60, 40, 90, 80, 70])}
    groups = size_tertiles(areas)
    assert [k for k in sorted(areas, key=areas.get) if groups[k] == "small"] == ["c01", "c03", "c02"]
    assert {groups[k] for k in ("c00", "c05", "c04")} == {"medium"}
    assert {groups[k] for k in ("c06", "c07", "c08")} == {"large"}
    ties = size_tertiles({f"t{i}": 1.0 for i in range(7)})  # all tied: still thirds, by id
    assert [ties[f"t{i}"] for i in range(7)] == ["small"] * 3 + ["medium"] * 2 + ["large"] * 2
    assert size_tertiles({}) == {}


def test_subgroup_means_with_bootstrap_interval() -> None:
    values = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.5, "e": 1.0}
    groups = {"a": "x", "b": "x", "c": "x", "d": "y"}  # e has no group: left out
    x, y, z = subgroup_means(values, groups, order=["x", "y", "z"], resamples=500)
    assert (x.name, x.n, x.mean) == ("x", 3, pytest.approx(0.8))
    assert x.lower < 0.8 < x.upper and x.lower >= 0.7 - 1e-9 and x.upper <= 0.9 + 1e-9
    assert (y.n, y.mean, y.lower, y.upper) == (1, 0.5, 0.5, 0.5)
    assert z.n == 0 and math.isnan(z.mean)
    assert [g.name for g in subgroup_means(values, groups)] == ["x", "y"]


def test_paired_bootstrap_ci_of_a_constant_shift_is_that_shift() -> None:
    from lesionseg.metrics.stats import paired_bootstrap_ci

    a = np.linspace(0.2, 0.9, 20)
    lo, hi = paired_bootstrap_ci(a + 0.05, a, resamples=300)
    assert lo == pytest.approx(0.05) and hi == pytest.approx(0.05)  # paired: image-to-image spread cancels
    with pytest.raises(ValueError, match="both sides"):
        paired_bootstrap_ci(a, None)


def test_paired_bootstrap_ci_of_global_dice_by_hand() -> None:
    from lesionseg.metrics.stats import paired_bootstrap_ci

    # every image: side a tp=3 fp=1 fn=0 (Dice 6/7), side b tp=1 fp=1 fn=0 (Dice 2/3): any resample gives 6/7 - 2/3
    a = np.tile([3, 1, 0, 10], (5, 1))
    b = np.tile([1, 1, 0, 10], (5, 1))
    lo, hi = paired_bootstrap_ci(counts_a=a, counts_b=b, resamples=100)
    assert lo == pytest.approx(6 / 7 - 2 / 3) and hi == pytest.approx(6 / 7 - 2 / 3)


def test_paired_permutation_global_separates_a_real_difference_from_none() -> None:
    from lesionseg.metrics.stats import paired_permutation_global

    rng = np.random.default_rng(1)
    b = np.column_stack(
        [rng.integers(50, 100, 30), rng.integers(10, 30, 30), rng.integers(10, 30, 30), np.full(30, 900)]
    )
    a = b.copy()
    assert paired_permutation_global(a, b, resamples=500) == 1.0  # identical sides: every permutation ties
    a[:, 0] += 40  # more true positives on every image
    p = paired_permutation_global(a, b, resamples=500)
    assert p == pytest.approx(1 / 501)  # no random swap of 30 images reaches the observed difference
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        paired_permutation_global(a[:, :3], b[:, :3])
