"""Fit a model's trust parts on its training and validation ids, and measure them on test ids.

:func:`fit_trust` is what the trainer's end-of-training hook (and ``tools/ship_pretrained.py`` for a shipped model)
runs: the temperature and the quality estimator from the validation ids' logits and masks at the working size, the
image description from the training ids' images and its threshold from the validation ids' images
(:mod:`lesionseg.inference.trust` says what each is and why). :func:`evaluate_trust` is what ``lesionseg evaluate``
reports: ECE before and after the temperature, the quality estimate's Spearman with the true Dice and its AUROC
for Dice < 0.8, and the share of images flagged as unlike the training images. Both run through
:class:`~lesionseg.inference.Predictor`, the one way to run a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.base import Case, load_case, resize_pair
from ..metrics.calibration import CalibrationStats, ReliabilityDiagram
from ..models.hub import ModelRecord, QualityCurve, QualityFit, TrainingImages
from .postprocess import apply_postprocessing
from .predictor import Predictor
from .trust import (
    QUALITY_MODES,
    ImageDescription,
    QualityEstimator,
    apply_temperature,
    auroc,
    fit_temperature,
    image_features,
    spearman,
)

__all__ = ["SIGNAL_TEMPERATURES", "TrustEvaluation", "TrustFit", "case_features", "evaluate_trust", "fit_trust"]

#: Signal temperatures tried on the validation ids (the calibration temperature is added to them).
SIGNAL_TEMPERATURES = (0.5, 0.75, 1.0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = pred.astype(bool), truth.astype(bool)
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def _case_at_working_size(predictor: Predictor, case: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(working-size image, pass logits (P, h, w) float32 of the plain and two flipped passes, truth (h, w)
    uint8) of one case."""
    image, mask = load_case(case, predictor.in_channels)
    if mask is None:
        raise ValueError(f"case {case.id} ({case.image}) has no mask")
    work, truth = resize_pair(image, mask, predictor.image_size)
    assert truth is not None
    x = torch.from_numpy(predictor._to_batch([work], working=True))
    logits = predictor.pass_logits(x, flips=True)[:, 0, 0].numpy().astype(np.float32)
    return work, logits, truth


def _mask(predictor: Predictor, logits: np.ndarray) -> np.ndarray:
    """The predictor's working-size mask from T = 1 logits (h, w), post-processed."""
    return apply_postprocessing((_sigmoid(logits) > predictor.threshold).astype(np.uint8), predictor.postprocess)


def case_features(predictor: Predictor, cases: Sequence[Case], progress: bool = False, desc: str = "") -> np.ndarray:
    """The out-of-distribution statistics (n, k) of cases' images at the predictor's working size, as
    :meth:`Predictor.predict` computes them."""
    return np.array(
        [
            image_features(predictor.working_image(load_case(c, predictor.in_channels)[0]))
            for c in tqdm(cases, desc=desc, disable=not progress, leave=False)
        ]
    )


def _mode_logits(z: np.ndarray, mode: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """For one image's passes (3, h, w): the logits its mask is cut from and those its quality signal reads, in
    ``mode`` (``single``: the plain pass; ``flip``: the flip average, and every pass)."""
    return (z[0], [z[0]]) if mode == "single" else (z.mean(0), list(z))


def _fit_quality(
    predictor: Predictor, z_all: np.ndarray, y_all: np.ndarray, temperature: float, mode: str
) -> tuple[QualityEstimator, dict[str, Any]]:
    """One mode's quality curve from the validation passes (N, 3, h, w) and truths, with its validation figures."""
    cut = [_mode_logits(z, mode) for z in z_all]
    masks = [_mask(predictor, mask_logits) for mask_logits, _ in cut]
    dice = np.array([_dice(m, y) for m, y in zip(masks, y_all)])
    candidates = sorted({*SIGNAL_TEMPERATURES, round(temperature, 6)})
    rho: dict[str, float | None] = {}
    best_t, best_rho, best_signals = 1.0, -np.inf, None
    for t in candidates:
        probe = QualityEstimator(signal_temperature=t, mode=mode)
        signals = np.array([probe.signal(inputs, m) for (_, inputs), m in zip(cut, masks)])
        r = spearman(signals, dice)
        rho[f"{t:g}"] = None if np.isnan(r) else round(r, 4)
        # Ties (and an undefined correlation) keep the earlier, i.e. t = 1 before larger ones after sorting.
        if np.isfinite(r) and (r > best_rho + 1e-9 or (abs(r - best_rho) <= 1e-9 and t == 1.0)):
            best_t, best_rho, best_signals = t, r, signals
    if best_signals is None:
        best_t = 1.0
        best_signals = np.array([QualityEstimator(mode=mode).signal(inputs, m) for (_, inputs), m in zip(cut, masks)])
    quality = QualityEstimator.fit(best_signals, dice, signal_temperature=best_t, mode=mode)
    figures = {
        "signal_temperature_spearman": rho,
        "quality_spearman": None if not np.isfinite(best_rho) else round(float(best_rho), 4),
        "n_dice_below_cut": int((dice < quality.dice_cut).sum()),
        "low_confidence_below": round(quality.low_confidence_below, 6),
    }
    return quality, figures


@dataclass
class TrustFit:
    """What :func:`fit_trust` chose, and the validation figures it saw.

    Attributes:
        temperature: the calibration temperature.
        quality: the quality estimator of each mode (:data:`~lesionseg.inference.trust.QUALITY_MODES`).
        description: the training images' description with its threshold.
        validation: validation figures (ECE before/after, per mode the signal temperatures' Spearman, flag rate).
    """

    temperature: float
    quality: dict[str, QualityEstimator]
    description: ImageDescription
    validation: dict[str, Any] = field(default_factory=dict)

    def quality_for(self, tta: bool) -> QualityEstimator:
        """The estimator of the mode a predictor with or without ``tta`` runs in."""
        return self.quality["flip" if tta else "single"]

    def apply_to(self, record: ModelRecord) -> ModelRecord:
        """``record`` with this fit's temperature, quality curves, image description and validation figures."""
        curves = {
            m: QualityCurve.from_dict(q.to_dict(), "quality fit", f"quality.{m}") for m, q in self.quality.items()
        }
        return replace(
            record,
            temperature=round(self.temperature, 6),
            quality=QualityFit(**curves),
            image_description=TrainingImages.from_dict(self.description.to_dict(), "image description"),
            trust_validation=self.validation,
        )


def fit_trust(
    predictor: Predictor,
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    progress: bool = False,
) -> TrustFit:
    """Fit temperature, one quality curve per mode and image description (training ids for the description only).

    Args:
        predictor: the model as it predicts (threshold, post-processing); its own temperature is ignored.
        train_cases: training ids (images only are read).
        val_cases: validation ids with masks (at least 3).
        progress: show progress bars.
    """
    if len(val_cases) < 3:
        raise ValueError(f"need at least 3 validation cases to fit the trust parts, got {len(val_cases)}")
    logits, truths, val_features = [], [], []
    for case in tqdm(val_cases, desc="trust (validation)", disable=not progress, leave=False):
        work, z, truth = _case_at_working_size(predictor, case)
        logits.append(z)
        truths.append(truth)
        val_features.append(image_features(work))
    z_all = np.stack(logits)  # (N, 3, h, w)
    y_all = np.stack(truths)
    # The temperature of what predict outputs by default: the plain pass.
    temperature = fit_temperature(z_all[:, 0], y_all)
    before, after = CalibrationStats(), CalibrationStats()
    before.update(_sigmoid(z_all[:, 0]), y_all)
    after.update(_sigmoid(z_all[:, 0] / temperature), y_all)

    quality, per_mode = {}, {}
    for mode in QUALITY_MODES:
        quality[mode], per_mode[mode] = _fit_quality(predictor, z_all, y_all, temperature, mode)

    train_features = case_features(predictor, train_cases, progress, "trust (training images)")
    description = ImageDescription.fit(train_features).with_threshold(np.stack(val_features))
    val_scores = np.atleast_1d(description.score(np.stack(val_features)))
    validation = {
        "n_val": len(val_cases),
        "n_train": len(train_cases),
        "ece_before": round(before.aggregate().ece, 6),
        "ece_after": round(after.aggregate().ece, 6),
        "quality": per_mode,
        "ood_flagged": round(float(np.mean(val_scores > description.threshold)), 4),
    }
    return TrustFit(temperature, quality, description, validation)


@dataclass
class TrustEvaluation:
    """Trust figures of a predictor on a set of cases (at the working size).

    Attributes:
        before: reliability diagram at T = 1.
        after: reliability diagram at the predictor's temperature.
        temperature: that temperature.
        rows: per image: ``id``, ``dice`` (working size, post-processed), ``predicted_dice``, ``low_confidence``,
            ``ood_score``, ``out_of_distribution``.
        dice_cut: the Dice under which an image counts as poor for the AUROC.
    """

    before: ReliabilityDiagram
    after: ReliabilityDiagram
    temperature: float
    rows: list[dict[str, Any]]
    dice_cut: float = 0.8

    def _column(self, key: str) -> np.ndarray:
        return np.array([r[key] for r in self.rows if r.get(key) is not None], dtype=np.float64)

    @property
    def spearman(self) -> float | None:
        """Spearman of predicted with true Dice (None without an estimator or with fewer than 2 images)."""
        pred = self._column("predicted_dice")
        if pred.size < 2:
            return None
        value = spearman(pred, [r["dice"] for r in self.rows])
        return None if np.isnan(value) else value

    @property
    def auroc(self) -> float | None:
        """AUROC of (1 - predicted Dice) for true Dice < ``dice_cut`` (None when one class is absent)."""
        pred = self._column("predicted_dice")
        if pred.size < 2:
            return None
        value = auroc(-pred, [r["dice"] < self.dice_cut for r in self.rows])
        return None if np.isnan(value) else value

    @property
    def n_poor(self) -> int:
        return sum(r["dice"] < self.dice_cut for r in self.rows)

    @property
    def ood_rate(self) -> float | None:
        flags = [r["out_of_distribution"] for r in self.rows if r.get("out_of_distribution") is not None]
        return float(np.mean(flags)) if flags else None

    @property
    def low_confidence_rate(self) -> float | None:
        flags = [r["low_confidence"] for r in self.rows if r.get("low_confidence") is not None]
        return float(np.mean(flags)) if flags else None

    def summary(self) -> dict[str, Any]:
        """The headline figures (JSON-able)."""

        def r4(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "images": len(self.rows),
            "bins": len(self.before.counts),
            "temperature": round(self.temperature, 4),
            "ece_before": round(self.before.ece, 5),
            "ece_after": round(self.after.ece, 5),
            "quality_spearman": r4(self.spearman),
            "quality_auroc_dice_below_cut": r4(self.auroc),
            "dice_cut": self.dice_cut,
            "images_below_cut": self.n_poor,
            "low_confidence_rate": r4(self.low_confidence_rate),
            "out_of_distribution_rate": r4(self.ood_rate),
        }

    def lines(self) -> list[str]:
        """The figures in words, for a terminal."""
        s = self.summary()

        def fmt(v: float | None, spec: str = ".3f") -> str:
            return "n/a" if v is None else format(v, spec)

        out = [
            f"calibration (pixel-level ECE, {s['bins']} bins, {s['images']} images at the working size): "
            f"{s['ece_before']:.4f} at T = 1, {s['ece_after']:.4f} at T = {s['temperature']:.3g}",
        ]
        if self.low_confidence_rate is not None:
            out.append(
                f"quality estimate: Spearman with true Dice {fmt(s['quality_spearman'])}, AUROC for Dice < "
                f"{self.dice_cut:g} {fmt(s['quality_auroc_dice_below_cut'])} ({s['images_below_cut']} of "
                f"{s['images']} images below); low confidence flagged on {100 * self.low_confidence_rate:.1f} %"
            )
        if self.ood_rate is not None:
            out.append(f"unlike the training images: {100 * self.ood_rate:.1f} % of {s['images']} images flagged")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "reliability_before": self.before.to_dict(),
            "reliability_after": self.after.to_dict(),
        }


def evaluate_trust(
    predictor: Predictor,
    cases: Sequence[Case],
    progress: bool = False,
    dice_cut: float = 0.8,
) -> TrustEvaluation:
    """ECE before/after the predictor's temperature, and its quality and out-of-distribution calls, on ``cases``.

    Everything at the working size, where the temperature and the estimator were fitted; the probabilities, the
    mask and the quality signal are those of the predictor's configuration (flip-averaged with ``tta``, whose
    quality curve is the ``flip`` one).
    """
    if not cases:
        raise ValueError("no cases to evaluate the trust parts on")
    before, after = CalibrationStats(), CalibrationStats()
    rows = []
    for case in tqdm(cases, desc="trust", disable=not progress, leave=False):
        work, passes, truth = _case_at_working_size(predictor, case)
        z = passes.mean(0) if predictor.tta else passes[0]
        prob = _sigmoid(z)
        before.update(prob, truth)
        after.update(apply_temperature(prob, predictor.temperature), truth)
        mask = _mask(predictor, z)
        row: dict[str, Any] = {"id": case.id, "dice": _dice(mask, truth)}
        if predictor.quality is not None:
            signal = predictor.quality.signal(predictor.quality_inputs(passes), mask)
            predicted = float(predictor.quality.predict(signal))
            row["predicted_dice"] = predicted
            row["low_confidence"] = predictor.quality.is_low_confidence(predicted)
        if predictor.description is not None:
            score = predictor.description.score_image(work)
            row["ood_score"] = score
            row["out_of_distribution"] = predictor.description.is_out_of_distribution(score)
        rows.append(row)
    return TrustEvaluation(before.aggregate(), after.aggregate(), predictor.temperature, rows, dice_cut)
