"""Agreement between two ways of measuring the same images: Bland-Altman limits and the intraclass correlation.

Used to check a model's measurements (area, diameters, compactness, ...) against the same measurements made on the
ground-truth masks of the same images.

* Bland-Altman (Bland & Altman, Lancet 1986): differences ``d_i = pred_i - truth_i``, here relative to the ground
  truth by default (``100 (pred_i - truth_i) / truth_i``, in %, so that lesions of every size weigh alike). Bias = the
  mean difference; 95 % limits of agreement = bias ± 1.96 s_d, s_d the sample standard deviation (n - 1).
* ICC(2,1) (Shrout & Fleiss 1979; McGraw & Wong 1996 "ICC(A,1)"): two-way random effects, absolute agreement, single
  measurement. With n images (rows) and k raters (columns; here k = 2, prediction and ground truth), from the two-way
  ANOVA without replication::

      MSR = k * sum_i (mean_i. - mean)^2 / (n - 1)          rows (images)
      MSC = n * sum_j (mean_.j - mean)^2 / (k - 1)          columns (raters)
      MSE = sum_ij (x_ij - mean_i. - mean_.j + mean)^2 / ((n - 1)(k - 1))
      ICC(2,1) = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)
      ICC(3,1) = (MSR - MSE) / (MSR + (k - 1) MSE)           consistency: a constant offset is not penalised

  We report ICC(2,1): a measurement that is to replace the ground truth's must agree with it in value, so a
  systematic bias must lower the score, which ICC(3,1) ignores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BlandAltman", "bland_altman", "differences", "icc"]


def icc(ratings: np.ndarray | Sequence[Sequence[float]], kind: str = "2,1") -> float:
    """Intraclass correlation of an (n subjects, k raters) table, ``kind`` ``"2,1"`` (absolute agreement) or
    ``"3,1"`` (consistency); see the module docstring for the formulas.

    NaN with fewer than two subjects, or when every value is the same (no variance to explain).
    """
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"ratings must be an (n subjects, k >= 2 raters) table, got shape {x.shape}")
    if kind not in ("2,1", "3,1"):
        raise ValueError(f"ICC kind must be '2,1' or '3,1', got {kind!r}")
    n, k = x.shape
    if n < 2:
        return math.nan
    grand = x.mean()
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    msr = k * ((rows - grand) ** 2).sum() / (n - 1)
    msc = n * ((cols - grand) ** 2).sum() / (k - 1)
    mse = ((x - rows[:, None] - cols[None, :] + grand) ** 2).sum() / ((n - 1) * (k - 1))
    den = msr + (k - 1) * mse + (k * (msc - mse) / n if kind == "2,1" else 0.0)
    return float((msr - mse) / den) if den > 0 else math.nan


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman summary of paired measurements.

    Attributes:
        n: number of pairs.
        bias: mean difference (prediction minus truth; in % of the truth when ``relative``).
        median: median difference (robust to the few images a model gets badly wrong, which dominate a mean of
            relative differences).
        sd: sample standard deviation of the differences.
        lower: lower 95 % limit of agreement, ``bias - 1.96 sd``.
        upper: upper 95 % limit of agreement, ``bias + 1.96 sd``.
        relative: whether differences are in % of the truth.
    """

    n: int
    bias: float
    median: float
    sd: float
    lower: float
    upper: float
    relative: bool


def differences(pred: Sequence[float], truth: Sequence[float], relative: bool = True) -> np.ndarray:
    """Per-pair differences ``pred - truth``, or ``100 (pred - truth) / truth`` when ``relative``.

    Pairs whose truth is 0 have no relative difference: ``relative`` refuses them (``ValueError``) rather than drop them
    silently; leave those images out first and say so.
    """
    p, t = np.asarray(pred, dtype=float), np.asarray(truth, dtype=float)
    if p.shape != t.shape or p.ndim != 1:
        raise ValueError(f"paired measurements need equal 1-D shapes, got {p.shape} and {t.shape}")
    if not relative:
        return p - t
    if np.any(t == 0):
        raise ValueError(f"relative differences need non-zero truth values; {int((t == 0).sum())} pair(s) have 0")
    return 100.0 * (p - t) / t


def bland_altman(pred: Sequence[float], truth: Sequence[float], relative: bool = True) -> BlandAltman:
    """Bias and 95 % limits of agreement of ``pred`` against ``truth`` (see the module docstring)."""
    d = differences(pred, truth, relative)
    n = len(d)
    if n == 0:
        return BlandAltman(0, math.nan, math.nan, math.nan, math.nan, math.nan, relative)
    bias = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    return BlandAltman(n, bias, float(np.median(d)), sd, bias - 1.96 * sd, bias + 1.96 * sd, relative)
