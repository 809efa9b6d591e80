"""When to doubt a mask: temperature scaling, a per-image quality estimate, and "unlike the training images".

Three things are fitted once, at the end of training, from the run's own training and validation ids (never test
ids), stored in the checkpoint record, and applied to every prediction. Everything here is numpy + OpenCV, so the
onnxruntime path of :class:`~lesionseg.inference.Predictor` uses it without importing torch.

**Temperature** (Guo et al. 2017). One scalar ``T`` divides the logits before the sigmoid, ``p = sigmoid(z / T)``,
chosen to minimise the pixel negative log-likelihood of the validation ids. Masks do not change: thresholding
``sigmoid(z)`` at ``t`` is thresholding ``sigmoid(z / T)`` at ``sigmoid(logit(t) / T)``
(:func:`calibrated_threshold`). The NLL of a logistic model with no intercept is convex in ``1 / T``, hence unimodal
in ``log T``, so a bounded golden-section search over ``log T`` finds the optimum without gradients.

**Quality estimate.** A model with calibrated probabilities ``p`` already says how good it expects its mask ``m``
to be: under ``p`` the expected Dice of ``m`` is about ``2 sum(p m) / (sum(p) + sum(m))`` (the soft Dice of the mask
against the model's own beliefs; for an empty mask, the probability that nothing is there, ``prod(1 - p)``). The
signal uses the passes the prediction runs anyway, so that it costs no extra network call: in the ``single`` mode
(the default) the one plain pass, in the ``flip`` mode (``tta``) the plain, horizontally and vertically flipped
passes, over which the expected Dice of the flip-averaged mask is averaged, so that disagreement between them lowers
it. The two signals differ, so each mode has its own curve and its own cut, fitted on the validation ids. The
probabilities are read at one "signal temperature" chosen on the validation ids from a short grid (0.5, 0.75, 1 and
the calibration temperature) by the Spearman correlation with the true Dice: the pixel-NLL temperature spreads
probability over the whole background, which dilutes the per-image signal, and on both shipped models the
validation ids chose 1 (the model's own probabilities). It is mapped to the Dice scale by a two-parameter monotone
curve,
``logit(dice) = a + b logit(signal)``, fitted on the validation ids by least squares shrunk towards the identity
(``a = 0, b = 1``) - a shipped skin model has only 15 validation ids (PH2 split 105/15/30) and the polyp model 80
(Kvasir-SEG 560/80/160), too few for a learned regressor over many hand-made signals (border contact, component
count, area, ...) without overfitting; the ranking of images, which is what the Spearman and AUROC judge, is the
signal's own. ``low_confidence`` is ``predicted_dice`` below a cut chosen on the validation ids (Youden's J for
true Dice < 0.8 when the validation ids hold at least two images on each side, else 0.8 itself, the Dice the curve
is fitted to predict).

**Unlike the training images.** The training images are described by 14 model-agnostic colour and texture
statistics (:data:`IMAGE_FEATURES`: CIELAB means and spreads, chroma, gradient and Laplacian energy, dark and
specular fractions, centre-surround contrast) at a fixed 128x128 size, read from the working-size image the network
sees (so their cost is fixed and small whatever the image's own size; the CIELAB conversion is numpy's, without the
tables OpenCV builds on its first call in a process). A new image's score is its Mahalanobis
distance to the training images under a Ledoit-Wolf shrinkage covariance (105 training images for 14 features
would make the raw covariance noisy), flagged above a threshold set on the validation ids: the 99th percentile of a
log-normal fitted to their distances. Why image statistics rather than the network's bottleneck features: they
cost under a millisecond, need no hook into the network (so the exported ONNX graph and every one of the 20
architectures work unchanged), mean the same for every model, and the shifts a practitioner meets first are shifts
of acquisition - another device, another modality, a grayscale photo - which colour and texture see directly.
What they cannot see is a semantic shift with the same colours (a non-melanocytic lesion shot with the same
dermatoscope); the model card says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "IMAGE_FEATURES",
    "ImageDescription",
    "QUALITY_MODES",
    "QualityEstimator",
    "TRUST_FIELDS",
    "TrustAssessment",
    "apply_temperature",
    "auroc",
    "calibrated_threshold",
    "expected_dice",
    "fit_temperature",
    "image_features",
    "ledoit_wolf",
    "quality_signal",
    "rgb_to_lab",
    "spearman",
]

_EPS = 1e-7


# ------------------------------------------------------------------------------------------------ temperature
def _nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # Binary cross-entropy with logits, stable for any z: softplus(z) - y z.
    return float(np.mean(np.logaddexp(0.0, z) - targets * z))


def fit_temperature(
    logits: np.ndarray,
    targets: np.ndarray,
    bounds: tuple[float, float] = (0.05, 20.0),
    max_pixels: int = 4_000_000,
    tol: float = 1e-4,
    seed: int = 0,
) -> float:
    """The temperature minimising the pixel NLL of ``sigmoid(logits / T)`` against {0, 1} ``targets``.

    Args:
        logits: foreground logits, any shape (e.g. (N, H, W) of the validation ids at the working size).
        targets: {0, 1} labels of the same shape.
        bounds: search interval of ``T``.
        max_pixels: above this many pixels a seeded uniform subsample is used (the NLL is a mean, the estimate
            of ``T`` does not need millions of pixels).
        tol: stop when the bracket in ``log T`` is narrower than this.
        seed: seed of the subsample.

    Raises:
        ValueError: shapes differ, nothing given, non-finite logits, or bad bounds.
    """
    logits = np.asarray(logits, dtype=np.float64).ravel()
    targets = (np.asarray(targets).ravel() > 0).astype(np.float64)
    if logits.shape != targets.shape or logits.size == 0:
        raise ValueError(f"need as many logits as targets, at least one (got {logits.size} and {targets.size})")
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits must be finite")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    if logits.size > max_pixels:
        keep = np.random.default_rng(seed).choice(logits.size, size=max_pixels, replace=False)
        logits, targets = logits[keep], targets[keep]
    a, b = math.log(lo), math.log(hi)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _nll(logits, targets, math.exp(c)), _nll(logits, targets, math.exp(d))
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _nll(logits, targets, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _nll(logits, targets, math.exp(d))
    return float(math.exp((a + b) / 2))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)`` pointwise, float32; the identity for ``T == 1``.

    Applied to probabilities already resized to an image's own size, it is monotone pointwise, so the mask cut at
    :func:`calibrated_threshold` is the mask cut at ``t`` before (up to float rounding at the threshold itself).
    """
    probs = np.asarray(probs, dtype=np.float32)
    if temperature == 1.0:
        return probs
    p = np.clip(probs, _EPS, 1 - _EPS)
    z = np.log(p) - np.log1p(-p)
    return (1.0 / (1.0 + np.exp(-z / np.float32(temperature)))).astype(np.float32)


def calibrated_threshold(threshold: float, temperature: float) -> float:
    """The probability threshold after temperature scaling that cuts the same mask as ``threshold`` at ``T = 1``."""
    z = math.log(threshold) - math.log1p(-threshold)
    return 1.0 / (1.0 + math.exp(-z / temperature))


# ------------------------------------------------------------------------------------------------ quality
def expected_dice(prob: np.ndarray, mask: np.ndarray) -> float:
    """Expected Dice of ``mask`` if the truth were drawn pixel-wise from ``prob`` (ratio-of-expectations form).

    Non-empty mask: ``2 sum(p m) / (sum(p) + sum(m))``. Empty mask: ``prod(1 - p)``, the probability that the truth
    is empty too (Dice 1 by the project's convention, else 0).
    """
    p = np.asarray(prob, dtype=np.float64)
    m = np.asarray(mask) > 0
    if p.shape != m.shape:
        raise ValueError(f"probability {p.shape} and mask {m.shape} differ in shape")
    area = int(m.sum())
    if area == 0:
        return float(np.exp(np.sum(np.log1p(-np.clip(p, 0.0, 1 - 1e-12)))))
    return float(2.0 * p[m].sum() / (p.sum() + area))


def quality_signal(probs: Sequence[np.ndarray] | np.ndarray, mask: np.ndarray) -> float:
    """The quality signal of a mask: its expected Dice averaged over one or more (flip) passes' probabilities."""
    passes = [probs] if isinstance(probs, np.ndarray) and probs.ndim == np.asarray(mask).ndim else list(probs)
    if not passes:
        raise ValueError("need at least one probability map")
    return float(np.mean([expected_dice(p, mask) for p in passes]))


def _logit(x: np.ndarray | float, eps: float = 1e-3) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float64), eps, 1 - eps)
    return np.log(x) - np.log1p(-x)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    if rx.size != ry.size or rx.size < 2:
        raise ValueError(f"need two sequences of equal length >= 2 (got {rx.size} and {ry.size})")
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    for v in np.unique(values):
        tie = values == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for the ``positives`` (Mann-Whitney form, ties count half).

    NaN when one class is absent.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positives, dtype=bool)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in length")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


#: The prediction modes a quality curve is fitted for: the plain pass alone, or the plain and two flipped passes.
QUALITY_MODES = ("single", "flip")
#: The cut on ``predicted_dice`` is Youden's (fitted) only when the fit saw this many poor images, and as many good
#: ones; otherwise it is the Dice bar itself.
MIN_POOR_FOR_YOUDEN = 5

_CURVE_FIELDS = ("a", "b", "low_confidence_below", "rule", "n_fit", "dice_cut", "signal_temperature")


@dataclass(frozen=True)
class QualityEstimator:
    """Maps the quality signal to a predicted Dice, ``sigmoid(a + b logit(signal))``, and flags low confidence.

    One estimator is one mode's curve: ``mode`` says which passes its signal reads (``single``: the probability map
    the mask was cut from; ``flip``: the plain and two flipped passes, which a predictor then runs even without
    ``tta``).

    Attributes:
        a: intercept in logit space.
        b: slope in logit space (> 0: the map is increasing).
        low_confidence_below: ``predicted_dice`` below this is ``low_confidence``.
        rule: how the cut was chosen (``youden`` or ``dice_0.8``).
        n_fit: validation images the curve was fitted on.
        dice_cut: the true Dice below which an image counts as poor (0.8).
        signal_temperature: the temperature the quality signal reads the logits at (see the module docstring).
        mode: the prediction mode it was fitted for (:data:`QUALITY_MODES`).
    """

    a: float = 0.0
    b: float = 1.0
    low_confidence_below: float = 0.8
    rule: str = "dice_0.8"
    n_fit: int = 0
    dice_cut: float = 0.8
    signal_temperature: float = 1.0
    mode: str = "flip"

    def __post_init__(self) -> None:
        if self.mode not in QUALITY_MODES:
            raise ValueError(f"quality estimator mode must be one of {QUALITY_MODES}, got {self.mode!r}")
        if not (math.isfinite(self.a) and math.isfinite(self.b) and self.b > 0):
            raise ValueError(f"quality estimator needs finite a and b > 0, got a={self.a}, b={self.b}")
        if not 0 < self.low_confidence_below < 1:
            raise ValueError(f"low_confidence_below must be in (0, 1), got {self.low_confidence_below}")
        if not (math.isfinite(self.signal_temperature) and self.signal_temperature > 0):
            raise ValueError(f"signal_temperature must be positive, got {self.signal_temperature}")

    def predict(self, signal: float | np.ndarray) -> float | np.ndarray:
        """Predicted Dice in (0, 1) of one signal value (a float) or of an array of them."""
        out = 1.0 / (1.0 + np.exp(-(self.a + self.b * _logit(signal))))
        return float(out) if np.ndim(out) == 0 else out

    def is_low_confidence(self, predicted_dice: float) -> bool:
        return bool(predicted_dice < self.low_confidence_below)

    @classmethod
    def fit(
        cls,
        signals: Sequence[float],
        dice: Sequence[float],
        prior_weight: float = 5.0,
        dice_cut: float = 0.8,
        signal_temperature: float = 1.0,
        mode: str = "flip",
    ) -> QualityEstimator:
        """Fit the curve and the cut on validation images.

        Args:
            signals: :func:`quality_signal` of each validation image's mask.
            dice: its true Dice.
            prior_weight: how many images' worth of pull towards the identity map (``a = 0, b = 1``): with 15
                images the data move the curve only as far as they agree.
            dice_cut: the true Dice below which an image is poor.
            signal_temperature: the temperature the signals were computed at (kept for prediction).
            mode: the prediction mode the signals are of (:data:`QUALITY_MODES`).
        """
        x, y = _logit(signals), _logit(dice)
        if x.size != y.size or x.size == 0:
            raise ValueError(f"need as many signals as Dice values, at least one (got {x.size} and {y.size})")
        # Ridge regression of y on [1, x] towards (0, 1): (X'X + lam I) w = X'y + lam w0.
        design = np.stack([np.ones_like(x), x], axis=1)
        lam = prior_weight * np.eye(2)
        w = np.linalg.solve(design.T @ design + lam, design.T @ y + lam @ np.array([0.0, 1.0]))
        a, b = float(w[0]), float(w[1])
        if b < 0.05:  # a flat or falling fit means the data say nothing about the order; keep it increasing
            b = 0.05
            a = float((prior_weight * 0.0 + np.sum(y - b * x)) / (prior_weight + x.size))
        est = cls(a=a, b=b, n_fit=int(x.size), dice_cut=dice_cut, signal_temperature=signal_temperature, mode=mode)
        predicted = est.predict(np.asarray(signals, dtype=np.float64))
        poor = np.asarray(dice) < dice_cut
        cut, rule = dice_cut, f"dice_{dice_cut:g}"
        # Youden's cut from one or two poor images sits just above the highest of them, often above most good
        # images' estimates (a 5-fold skin ensemble fitted on 2 poor of 120 flagged 43 % of its test images).
        if poor.sum() >= MIN_POOR_FOR_YOUDEN and (~poor).sum() >= MIN_POOR_FOR_YOUDEN:
            cut, rule = _youden_cut(np.atleast_1d(predicted), poor), "youden"
        return cls(
            a=a,
            b=b,
            low_confidence_below=cut,
            rule=rule,
            n_fit=int(x.size),
            dice_cut=dice_cut,
            signal_temperature=signal_temperature,
            mode=mode,
        )

    def to_dict(self) -> dict[str, Any]:
        """The curve's fields (the record stores it under its mode's key, so ``mode`` is left out)."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items() if k != "mode"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], mode: str = "flip") -> QualityEstimator:
        """Rebuild one mode's curve from :meth:`to_dict` (a curve without a mode is a ``flip`` curve)."""
        return cls(**{k: data[k] for k in _CURVE_FIELDS if k in data}, mode=mode)

    def signal(self, pass_logits: Sequence[np.ndarray], mask: np.ndarray) -> float:
        """The quality signal of ``mask`` from the logits of each pass (working size), at the signal temperature."""
        t = self.signal_temperature
        return quality_signal([1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64) / t)) for z in pass_logits], mask)


def _youden_cut(predicted: np.ndarray, poor: np.ndarray) -> float:
    """The cut on ``predicted`` (flag below it) maximising sensitivity + specificity for ``poor``; midpoints."""
    values = np.unique(predicted)
    cuts = (values[:-1] + values[1:]) / 2 if values.size > 1 else values
    best, best_j = float(cuts[0]), -1.0
    for c in cuts:
        flagged = predicted < c
        j = flagged[poor].mean() + (~flagged[~poor]).mean() - 1
        if j > best_j:
            best, best_j = float(c), float(j)
    return min(max(best, 1e-3), 1 - 1e-3)


#: Per-image fields of a :class:`TrustAssessment` in predict's tables and the API, in column order.
TRUST_FIELDS = ("lesion_found", "predicted_dice", "low_confidence", "ood_score", "out_of_distribution", "notes")


@dataclass(frozen=True)
class TrustAssessment:
    """What a prediction says about itself.

    Attributes:
        lesion_found: the mask is not empty.
        predicted_dice: the quality estimate (None when the model carries no estimator).
        low_confidence: ``predicted_dice`` under the validation cut (None without an estimator).
        ood_score: Mahalanobis distance of the image from the training images (None without a description).
        out_of_distribution: ``ood_score`` over the validation threshold (None without a description).
    """

    lesion_found: bool
    predicted_dice: float | None = None
    low_confidence: bool | None = None
    ood_score: float | None = None
    out_of_distribution: bool | None = None

    def notes(self) -> list[str]:
        """The warnings in words, most serious first (empty when there is nothing to say)."""
        out = []
        if self.out_of_distribution:
            out.append("unlike the training images")
        if not self.lesion_found:
            out.append("no lesion found")
        elif self.low_confidence:
            out.append("low confidence")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The per-image fields of predict's tables and the API."""
        return {
            "lesion_found": self.lesion_found,
            "predicted_dice": None if self.predicted_dice is None else round(self.predicted_dice, 4),
            "low_confidence": self.low_confidence,
            "ood_score": None if self.ood_score is None else round(self.ood_score, 3),
            "out_of_distribution": self.out_of_distribution,
            "notes": "; ".join(self.notes()),
        }


# ------------------------------------------------------------------------------------------------ out of distribution
IMAGE_FEATURES = (
    "lab_l_mean",
    "lab_a_mean",
    "lab_b_mean",
    "lab_l_std",
    "lab_a_std",
    "lab_b_std",
    "chroma_mean",
    "l_p05",
    "l_p95",
    "log_gradient_energy",
    "log_laplacian_energy",
    "dark_fraction",
    "specular_fraction",
    "centre_surround",
)
_FEATURE_SIZE = (128, 128)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65 white, L in [0, 100]) of float RGB in [0, 1] (..., 3), sRGB companding, float32.

    The CIE formulas as OpenCV's float ``COLOR_RGB2LAB`` documents them, in numpy: OpenCV's first conversion in a
    process builds its tables (about 0.15 s), which would land on the first prediction.
    """
    c = np.asarray(rgb, dtype=np.float32)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
    xyz = lin @ _RGB_TO_XYZ.T
    t = xyz / _D65
    f = np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16.0 / 116.0)
    y = t[..., 1]
    lum = np.where(y > 0.008856, 116.0 * f[..., 1] - 16.0, 903.3 * y)
    return np.stack([lum, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], axis=-1).astype(np.float32)


_RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]], np.float32
)
_D65 = np.array([0.950456, 1.0, 1.088754], np.float32)


def image_features(image: np.ndarray) -> np.ndarray:
    """The :data:`IMAGE_FEATURES` of a uint8 image (H, W, 3) or (H, W[, 1]), computed at 128x128.

    The predictor passes the working-size image its network sees (:meth:`~lesionseg.inference.Predictor.
    working_image`), and the description is fitted on the same, so the statistics cost the same for every image. A
    grayscale image is read as RGB with three equal channels (its CIELAB a and b are then zero, which no colour
    training set looks like).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image_features needs a uint8 (H, W, 3) or (H, W) image, got {image.dtype} {image.shape}")
    h, w = _FEATURE_SIZE
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    lab = rgb_to_lab(small.astype(np.float32) / 255.0)  # L in [0, 100], a and b about +-100
    lum, ca, cb = lab[..., 0], lab[..., 1], lab[..., 2]
    gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3)
    lap = cv2.Laplacian(lum, cv2.CV_32F, ksize=3)
    centre = lum[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
    ring = np.ones_like(lum, dtype=bool)
    ring[h // 8 : 7 * h // 8, w // 8 : 7 * w // 8] = False
    p05, p95 = np.percentile(lum, [5, 95])
    values = (
        lum.mean(),
        ca.mean(),
        cb.mean(),
        lum.std(),
        ca.std(),
        cb.std(),
        np.sqrt(ca**2 + cb**2).mean(),
        p05,
        p95,
        np.log1p(np.mean(gx**2 + gy**2)),
        np.log1p(np.mean(lap**2)),
        np.mean(lum < 15.0),
        np.mean(lum > 95.0),
        centre.mean() - lum[ring].mean(),
    )
    return np.asarray(values, dtype=np.float64)


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf (2004) shrinkage covariance of the rows of ``x`` (n, k) towards a scaled identity.

    Returns:
        The shrunk covariance (k, k) and the shrinkage intensity in [0, 1].
    """
    x = np.asarray(x, dtype=np.float64)
    n, k = x.shape
    if n < 2:
        raise ValueError(f"need at least two samples for a covariance, got {n}")
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / n
    mu = np.trace(s) / k
    target = mu * np.eye(k)
    d2 = np.sum((s - target) ** 2)
    # Mean squared distance of each sample's outer product from S, over n: the estimation noise of S.
    b2_bar = sum(np.sum((np.outer(r, r) - s) ** 2) for r in xc) / n**2
    b2 = min(b2_bar, d2)
    shrinkage = 0.0 if d2 == 0 else float(b2 / d2)
    return shrinkage * target + (1 - shrinkage) * s, shrinkage


@dataclass(frozen=True)
class ImageDescription:
    """What a model's training images look like, and how far from them an image may lie before it is flagged.

    Attributes:
        features: names of the statistics (:data:`IMAGE_FEATURES`).
        center: their mean over the training images.
        scale: their standard deviation over the training images (features are standardised by it).
        precision: inverse of the Ledoit-Wolf covariance of the standardised features, row by row.
        shrinkage: the Ledoit-Wolf intensity used.
        threshold: Mahalanobis distance above which an image is ``out_of_distribution``.
        n_train: training images described.
        n_val: validation images the threshold was set on (0: not set yet).
    """

    features: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    precision: tuple[tuple[float, ...], ...]
    shrinkage: float
    threshold: float = float("inf")
    n_train: int = 0
    n_val: int = 0

    def __post_init__(self) -> None:
        k = len(self.features)
        if len(self.center) != k or len(self.scale) != k or len(self.precision) != k:
            raise ValueError(f"image description: {k} features but center/scale/precision of other lengths")
        if any(len(row) != k for row in self.precision):
            raise ValueError("image description: precision matrix is not square")
        if tuple(self.features) != IMAGE_FEATURES:
            raise ValueError(f"image description lists features {self.features}; this version has {IMAGE_FEATURES}")
        if not self.threshold > 0:
            raise ValueError(f"image description threshold must be positive, got {self.threshold}")

    @classmethod
    def fit(cls, train_features: np.ndarray) -> ImageDescription:
        """Describe training images from their :func:`image_features` rows (n, k); no threshold yet."""
        x = np.asarray(train_features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(IMAGE_FEATURES):
            raise ValueError(f"need an (n, {len(IMAGE_FEATURES)}) feature array, got {x.shape}")
        center = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-9, scale, 1.0)
        cov, shrinkage = ledoit_wolf((x - center) / scale)
        precision = np.linalg.inv(cov)
        return cls(
            features=IMAGE_FEATURES,
            center=tuple(float(v) for v in center),
            scale=tuple(float(v) for v in scale),
            precision=tuple(tuple(float(v) for v in row) for row in precision),
            shrinkage=shrinkage,
            n_train=int(x.shape[0]),
        )

    def score(self, features: np.ndarray) -> float | np.ndarray:
        """Mahalanobis distance of one feature vector (k,) (a float) or of rows (n, k) (an array)."""
        f = np.asarray(features, dtype=np.float64)
        z = (f - np.asarray(self.center)) / np.asarray(self.scale)
        d2 = np.einsum("...i,ij,...j->...", z, np.asarray(self.precision), z)
        d = np.sqrt(np.maximum(d2, 0.0))
        return float(d) if d.ndim == 0 else d

    def score_image(self, image: np.ndarray) -> float:
        """Mahalanobis distance of an image (uint8, at the model's working size as the description was fitted)
        from the training images."""
        return float(self.score(image_features(image)))

    def is_out_of_distribution(self, score: float) -> bool:
        return bool(score > self.threshold)

    def with_threshold(self, val_features: np.ndarray, quantile: float = 0.99) -> ImageDescription:
        """This description with its threshold set on validation images (rows (n, k), at least 3).

        The threshold is the ``quantile`` of a log-normal fitted to the validation distances (mean and standard
        deviation of their logarithm): a handful of held-out images cannot give a 99th percentile directly, and
        distances are positive and right-skewed.
        """
        scores = np.atleast_1d(self.score(np.asarray(val_features, dtype=np.float64)))
        if scores.size < 3:
            raise ValueError(f"need at least 3 validation images to set the threshold, got {scores.size}")
        logs = np.log(np.maximum(scores, 1e-9))
        z = _normal_quantile(quantile)
        threshold = float(np.exp(logs.mean() + z * logs.std(ddof=1)))
        return ImageDescription(**{**self.to_dict(raw=True), "threshold": threshold, "n_val": int(scores.size)})

    def to_dict(self, raw: bool = False) -> dict[str, Any]:
        """JSON-able form (``raw``: the dataclass fields as they are, for rebuilding)."""
        data = asdict(self)
        if raw:
            return data
        data["features"] = list(self.features)
        data["center"] = [round(v, 6) for v in self.center]
        data["scale"] = [round(v, 6) for v in self.scale]
        data["precision"] = [[round(v, 6) for v in row] for row in self.precision]
        data["shrinkage"] = round(self.shrinkage, 6)
        data["threshold"] = round(self.threshold, 6) if math.isfinite(self.threshold) else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageDescription:
        """Rebuild from :meth:`to_dict` (raises ``ValueError``/``KeyError`` naming what is wrong)."""
        threshold = data.get("threshold")
        return cls(
            features=tuple(data["features"]),
            center=tuple(float(v) for v in data["center"]),
            scale=tuple(float(v) for v in data["scale"]),
            precision=tuple(tuple(float(v) for v in row) for row in data["precision"]),
            shrinkage=float(data["shrinkage"]),
            threshold=float("inf") if threshold is None else float(threshold),
            n_train=int(data.get("n_train", 0)),
            n_val=int(data.get("n_val", 0)),
        )


def _normal_quantile(q: float) -> float:
    """Standard normal quantile (Acklam's rational approximation is overkill here: bisection on erf)."""
    if not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
