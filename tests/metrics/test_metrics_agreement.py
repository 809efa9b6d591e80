"""ICC and Bland-Altman limits against hand-computed and published values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lesionseg.metrics.agreement import bland_altman, differences, icc


def test_icc_of_a_constant_offset_hand_computed() -> None:
    # Three images, two raters, the second always 1 higher. Grand mean 4.5; row means 2.5, 4.5, 6.5; column means
    # 4 and 5. MSR = 2 * (4 + 0 + 4) / 2 = 8; MSC = 3 * (0.25 + 0.25) / 1 = 1.5; every residual is 0, MSE = 0.
    # ICC(2,1) = 8 / (8 + 0 + 2 * 1.5 / 3) = 8 / 9: the offset costs agreement; ICC(3,1) = 8 / 8 = 1: consistent.
    x = [[2, 3], [4, 5], [6, 7]]
    assert icc(x, "2,1") == pytest.approx(8 / 9)
    assert icc(x, "3,1") == pytest.approx(1.0)
    assert icc([[1, 1], [2, 2], [5, 5]]) == pytest.approx(1.0)


def test_icc_matches_shrout_and_fleiss_table() -> None:
    # Shrout & Fleiss (1979), Table 2: six targets rated by four judges; published ICC(2,1) = .29, ICC(3,1) = .71.
    x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert icc(x, "2,1") == pytest.approx(0.29, abs=0.005)
    assert icc(x, "3,1") == pytest.approx(0.71, abs=0.005)


def test_icc_rejects_bad_tables_and_is_nan_without_variance() -> None:
    with pytest.raises(ValueError, match="raters"):
        icc([1.0, 2.0])
    with pytest.raises(ValueError, match="kind"):
        icc([[1, 2], [3, 4]], "1,1")
    assert math.isnan(icc([[1, 2]]))
    assert math.isnan(icc([[3, 3], [3, 3]]))


def test_bland_altman_relative_hand_computed() -> None:
    # Differences 10, -5, 2 % of the truth: mean 7/3; deviations 23/3, -22/3, -1/3; SD = sqrt((529 + 484 + 1) / 9 / 2).
    ba = bland_altman([110, 95, 102], [100, 100, 100])
    sd = math.sqrt((529 + 484 + 1) / 9 / 2)
    assert ba.n == 3 and ba.relative
    assert ba.bias == pytest.approx(7 / 3) and ba.median == pytest.approx(2)
    assert ba.sd == pytest.approx(sd)
    assert (ba.lower, ba.upper) == pytest.approx((7 / 3 - 1.96 * sd, 7 / 3 + 1.96 * sd))


def test_bland_altman_absolute_and_refusals() -> None:
    ba = bland_altman([1.0, 3.0], [0.0, 1.0], relative=False)
    assert ba.bias == pytest.approx(1.5) and ba.sd == pytest.approx(math.sqrt(0.5))
    with pytest.raises(ValueError, match="non-zero truth"):
        differences([1.0], [0.0])
    with pytest.raises(ValueError, match="1-D"):
        differences([1.0, 2.0], [1.0])
    assert bland_altman([], []).n == 0
    assert math.isnan(bland_altman([2.0], [1.0]).sd)
