"""Fit an ensemble's own settings from out-of-fold probabilities: threshold, post-processing, temperature and the
quality curves, written into its record (:class:`~lesionseg.models.hub.EnsembleRecord`).

The caller supplies per-case probabilities at the ensemble's working size. For a cross-validation fold ensemble they
are out-of-fold: each case predicted by the fold model that did not train on it, so that the fit sees the ensemble's
errors on unseen cases (nnU-Net chooses its ensemble's post-processing the same way). The file other code writes,
``oof.npz``:

- ``ids``: case ids (str, N);
- ``probs``: float16 (N, H, W), sigmoid probabilities at T = 1 at the working size, plain pass;
- ``probs_flip``: the same, flip TTA averaged (optional);
- ``truths``: uint8 (N, H, W) at the working size.

The choices reuse the trainer's: the threshold is kept at 0.5 unless a small grid around it raises the per-image
Dice; post-processing is :func:`~lesionseg.inference.postprocess.select_postprocessing` on the masks at that
threshold; the temperature is :func:`~lesionseg.inference.trust.fit_temperature` on the logits of the probabilities;
the quality curves are :mod:`~lesionseg.inference.trust_fit`'s, one per prediction mode (``flip`` only where
``probs_flip`` is given; it is fitted on the flip average, which is what the ensemble's flipped passes average to).
The out-of-distribution description is not refitted (out-of-fold files hold no images): an ensemble of models
trained on the same images keeps its first member's.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from ..models.hub import (
    CheckpointError,
    EnsembleRecord,
    PostProcessing,
    QualityCurve,
    QualityFit,
    checkpoint_stem,
    load_ensemble_members,
    load_record,
    write_ensemble_record,
)
from .postprocess import apply_postprocessing, select_postprocessing
from .trust import fit_temperature, spearman
from .trust_fit import _fit_quality

__all__ = [
    "THRESHOLDS",
    "EnsembleFit",
    "OutOfFold",
    "average_oof",
    "fit_ensemble",
    "fit_ensemble_from_oof",
    "pool_oof",
    "read_oof",
]

#: The threshold grid around 0.5 (0.5 is kept unless another raises the per-image Dice).
THRESHOLDS = (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65)

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit (float16 files hold exact 0s and 1s).
EPS = 1e-4


@dataclass
class OutOfFold:
    """Out-of-fold probabilities of one model (or their average over several).

    Attributes:
        ids: case ids (N).
        probs: float32 (N, H, W) plain-pass probabilities at T = 1.
        truths: uint8 (N, H, W) {0, 1}.
        probs_flip: float32 (N, H, W) flip-averaged probabilities, or None.
        source: where it was read from (named in errors).
        disagreement: per case, the members' weighted standard deviation of probability averaged over the pixels
            any member calls foreground (an average of several sets only; None otherwise).
    """

    ids: list[str]
    probs: np.ndarray
    truths: np.ndarray
    probs_flip: np.ndarray | None = None
    source: str = "oof"
    disagreement: np.ndarray | None = None

    def resized(self, size: tuple[int, int]) -> OutOfFold:
        """The same at working size ``size`` (H, W): probabilities bilinear, truths nearest."""
        if self.probs.shape[1:] == tuple(size):
            return self
        h, w = size

        def maps(a: np.ndarray | None, interp: int) -> np.ndarray | None:
            return None if a is None else np.stack([cv2.resize(x, (w, h), interpolation=interp) for x in a])

        return OutOfFold(
            self.ids,
            maps(self.probs, cv2.INTER_LINEAR),
            maps(self.truths, cv2.INTER_NEAREST),
            maps(self.probs_flip, cv2.INTER_LINEAR),
            self.source,
        )


def read_oof(path: str | Path) -> OutOfFold:
    """Read an ``oof.npz`` (no pickles: object arrays are refused).

    Raises:
        ValueError: not a readable npz, missing keys, or arrays of the wrong shapes or ranges; the message names the
            file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable out-of-fold file ({err})") from err
    missing = [k for k in ("ids", "probs", "truths") if k not in arrays]
    unknown = sorted(set(arrays) - {"ids", "probs", "probs_flip", "truths"})
    if missing or unknown:
        raise ValueError(
            f"{path}: missing keys {missing}, unknown keys {unknown} (expected ids, probs, truths[, probs_flip])"
        )
    ids, probs, truths = arrays["ids"], arrays["probs"], arrays["truths"]
    flip = arrays.get("probs_flip")
    if ids.ndim != 1 or probs.ndim != 3 or len(ids) != len(probs) or truths.shape != probs.shape:
        raise ValueError(
            f"{path}: ids {ids.shape}, probs {probs.shape}, truths {truths.shape}: expected N ids, N x H x W maps"
        )
    if flip is not None and flip.shape != probs.shape:
        raise ValueError(f"{path}: probs_flip {flip.shape} differs from probs {probs.shape}")
    if len(set(ids.tolist())) != len(ids) or len(ids) == 0:
        raise ValueError(f"{path}: ids must be unique and at least one")
    for name, a in (("probs", probs), ("probs_flip", flip)):
        if a is not None and not (np.all(np.isfinite(a)) and a.min() >= 0 and a.max() <= 1):
            raise ValueError(f"{path}: {name} must be probabilities in [0, 1]")
    return OutOfFold(
        [str(i) for i in ids],
        probs.astype(np.float32),
        (truths > 0).astype(np.uint8),
        None if flip is None else flip.astype(np.float32),
        str(path),
    )


def pool_oof(sets: Sequence[OutOfFold]) -> list[OutOfFold]:
    """Group out-of-fold sets into model families and concatenate each family's folds.

    The folds of one cross-validation hold disjoint cases (each case is predicted by the one fold model that did not
    train on it); the sets of different families (architectures) hold the same cases. Sets are read in order: a set
    whose cases do not overlap the current family's joins it (its folds are pooled), a set that overlaps starts the
    next family. ``--oof A/fold_0/oof.npz ... A/fold_4/oof.npz B/fold_0/oof.npz ...`` gives two families of 120
    cases each, which :func:`average_oof` then averages per case.

    Raises:
        ValueError: folds of one family at different working sizes, or some with ``probs_flip`` and some without.
    """
    families: list[list[OutOfFold]] = []
    for s in sets:
        if families and not set(s.ids) & {i for f in families[-1] for i in f.ids}:
            families[-1].append(s)
        else:
            families.append([s])
    pooled = []
    for family in families:
        if len(family) == 1:
            pooled.append(family[0])
            continue
        first = family[0]
        for s in family[1:]:
            if s.probs.shape[1:] != first.probs.shape[1:]:
                raise ValueError(f"{s.source} and {first.source}: folds at different working sizes")
            if (s.probs_flip is None) != (first.probs_flip is None):
                raise ValueError(f"{s.source} and {first.source}: probs_flip in one fold file and not the other")
        pooled.append(
            OutOfFold(
                [i for s in family for i in s.ids],
                np.concatenate([s.probs for s in family]),
                np.concatenate([s.truths for s in family]),
                None if first.probs_flip is None else np.concatenate([s.probs_flip for s in family]),
                " + ".join(s.source for s in family),
            )
        )
    return pooled


def average_oof(
    sets: Sequence[OutOfFold], size: tuple[int, int] | None = None, weights: Sequence[float] | None = None
) -> OutOfFold:
    """Several models' out-of-fold probabilities averaged per case (a mixed ensemble's), at working size ``size``
    (None: the first set's); cases in the first set's order. ``probs_flip`` is kept only where every set has it.

    Raises:
        ValueError: sets that do not hold the same cases, or whose truths differ.
    """
    if not sets:
        raise ValueError("need at least one out-of-fold file")
    size = tuple(size or sets[0].probs.shape[1:])
    # Truths are taken from a set written at the working size where there is one (resized truths move at edges).
    at_size = [s.probs.shape[1:] == size for s in sets]
    sets = [s.resized(size) for s in sets]
    weights = [1.0] * len(sets) if weights is None else [float(w) for w in weights]
    total = sum(weights)
    first = sets[at_size.index(True)] if any(at_size) else sets[0]
    probs = np.zeros_like(first.probs)
    second = np.zeros_like(first.probs)  # the weighted mean of squares, for the members' spread
    union = np.zeros(first.probs.shape, bool)
    flip = None if any(s.probs_flip is None for s in sets) else np.zeros_like(first.probs)
    for s, w, native in zip(sets, weights, at_size):
        if set(s.ids) != set(first.ids):
            only = sorted(set(s.ids) ^ set(first.ids))[:5]
            raise ValueError(f"{s.source} and {first.source} hold different cases (e.g. {only})")
        where = {i: k for k, i in enumerate(s.ids)}
        order = [where[i] for i in first.ids] if s.ids != first.ids else slice(None)
        disagree = int((s.truths[order] != first.truths).sum())
        # Exact at the same size; a resized set's truths may differ along the edges only.
        if disagree > first.truths.size // (1000 if native else 20):
            raise ValueError(f"{s.source} and {first.source}: the truths differ ({disagree} pixels)")
        member = s.probs[order]
        probs += member * (w / total)
        second += member**2 * (w / total)
        union |= member > 0.5
        if flip is not None:
            flip += s.probs_flip[order] * (w / total)
    disagreement = None
    if len(sets) > 1:
        spread = np.sqrt(np.clip(second - probs**2, 0, None))
        counts = union.sum(axis=(1, 2))
        disagreement = np.where(counts > 0, (spread * union).sum(axis=(1, 2)) / np.maximum(counts, 1), 0.0)
    return OutOfFold(first.ids, probs, first.truths, flip, " + ".join(s.source for s in sets), disagreement)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def _per_image_dice(masks: Sequence[np.ndarray], truths: np.ndarray) -> float:
    scores = []
    for m, t in zip(masks, truths):
        m, t = m.astype(bool), t.astype(bool)
        total = int(m.sum()) + int(t.sum())
        scores.append(1.0 if total == 0 else 2.0 * int((m & t).sum()) / total)
    return float(np.mean(scores))


@dataclass
class EnsembleFit:
    """What :func:`fit_ensemble` chose and the out-of-fold figures it saw.

    Attributes:
        threshold: the mask threshold at T = 1.
        postprocess: the post-processing steps and their out-of-fold Dice.
        temperature: the calibration temperature.
        quality: the quality curve of each mode fitted (``single``; ``flip`` with flip probabilities).
        validation: the figures (Dice by threshold, by post-processing, quality Spearman per mode, case count).
    """

    threshold: float
    postprocess: PostProcessing
    temperature: float
    quality: QualityFit
    validation: dict[str, Any] = field(default_factory=dict)

    def apply_to(self, record: EnsembleRecord) -> EnsembleRecord:
        """``record`` with these settings."""
        return replace(
            record,
            threshold=self.threshold,
            postprocess=self.postprocess,
            temperature=round(self.temperature, 6),
            quality=self.quality,
            trust_validation=self.validation,
        )


def fit_ensemble(
    probs: np.ndarray,
    truths: np.ndarray,
    probs_flip: np.ndarray | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
    min_gain: float = 1e-3,
    disagreement: np.ndarray | None = None,
) -> EnsembleFit:
    """Choose threshold, post-processing, temperature and quality curves from per-case probabilities.

    Args:
        probs: float (N, H, W) combined plain-pass probabilities at T = 1 (out-of-fold for a fold ensemble).
        truths: {0, 1} (N, H, W).
        probs_flip: the flip-averaged probabilities (fits the ``flip`` quality curve), or None.
        thresholds: the grid tried; 0.5 is kept unless another raises the per-image Dice by ``min_gain``.
        min_gain: smallest per-image Dice gain that moves the threshold off 0.5.
        disagreement: per-case members' disagreement (:attr:`OutOfFold.disagreement`); measured, not yet used: its
            Spearman with the true Dice is reported beside the quality signal's (``validation["disagreement"]``).

    Raises:
        ValueError: shapes that differ, or fewer than 3 cases.
    """
    probs = np.asarray(probs, dtype=np.float32)
    truths = (np.asarray(truths) > 0).astype(np.uint8)
    if probs.ndim != 3 or probs.shape != truths.shape:
        raise ValueError(f"probs {probs.shape} and truths {truths.shape}: expected two N x H x W arrays")
    if probs_flip is not None and np.shape(probs_flip) != probs.shape:
        raise ValueError(f"probs_flip {np.shape(probs_flip)} differs from probs {probs.shape}")
    if len(probs) < 3:
        raise ValueError(f"need at least 3 cases to fit an ensemble's settings, got {len(probs)}")
    by_threshold = {f"{t:g}": _per_image_dice([p > t for p in probs], truths) for t in thresholds}
    threshold = 0.5
    best = by_threshold.get("0.5", _per_image_dice([p > 0.5 for p in probs], truths))
    for t in thresholds:
        if by_threshold[f"{t:g}"] > best + min_gain:
            threshold, best = float(t), by_threshold[f"{t:g}"]
    choice = select_postprocessing([(p > threshold).astype(np.uint8) for p in probs], list(truths))
    postprocess = PostProcessing(steps=tuple(choice.steps), reduction=choice.reduction, val_dice=dict(choice.scores))

    z = _logit(probs)
    temperature = fit_temperature(z, truths)
    # The trust fit's quality curve, read through what it needs of a predictor: the threshold and the steps.
    cutter = SimpleNamespace(threshold=threshold, postprocess=postprocess.steps)
    curves, figures = {}, {}
    modes = {"single": z[:, None]}
    if probs_flip is not None:
        modes["flip"] = _logit(np.asarray(probs_flip, dtype=np.float32))[:, None]
    for mode, z_all in modes.items():
        estimator, figures[mode] = _fit_quality(cutter, z_all, truths, temperature, mode)  # type: ignore[arg-type]
        curves[mode] = QualityCurve.from_dict(estimator.to_dict(), "ensemble fit", f"quality.{mode}")
    masks = [apply_postprocessing((p > threshold).astype(np.uint8), postprocess.steps) for p in probs]
    validation = {
        "n_cases": len(probs),
        "dice_per_image_by_threshold": {k: round(v, 6) for k, v in by_threshold.items()},
        "dice_per_image": round(_per_image_dice(masks, truths), 6),
        "quality": figures,
    }
    if disagreement is not None:
        dice = [_per_image_dice([m], t[None]) for m, t in zip(masks, truths)]
        rho = spearman(-np.asarray(disagreement, dtype=np.float64), dice)
        validation["disagreement"] = {
            "spearman_with_dice": None if np.isnan(rho) else round(float(rho), 4),
            "mean": round(float(np.mean(disagreement)), 6),
        }
    return EnsembleFit(threshold, postprocess, temperature, QualityFit(**curves), validation)


def fit_ensemble_from_oof(record_path: str | Path, oof_files: Sequence[str | Path]) -> EnsembleRecord:
    """Fit an ensemble's settings on out-of-fold files and write them into its record.

    Files holding disjoint cases (the folds of one cross-validation) are pooled first (:func:`pool_oof`); the
    families that result (one per model family of a mixed ensemble, each out-of-fold over its own folds) are
    averaged per case with the ensemble's member weights when there is one file per member, equally otherwise. An
    ensemble record without an image description takes its first member's.

    Returns:
        The record as written.

    Raises:
        CheckpointError: the ensemble record is not one, or a member is missing.
        ValueError: unreadable or inconsistent out-of-fold files.
    """
    stem = checkpoint_stem(record_path)
    record = load_record(stem)
    if not isinstance(record, EnsembleRecord):
        raise CheckpointError(f'{stem}.json: not an ensemble record (no "kind": "ensemble")')
    members = load_ensemble_members(stem, record)
    sets = pool_oof([read_oof(p) for p in oof_files])
    weights = record.member_weights() if len(sets) == len(record.members) and len(sets) > 1 else None
    oof = average_oof(sets, record.image_size, weights)
    fit = fit_ensemble(oof.probs, oof.truths, oof.probs_flip, disagreement=oof.disagreement)
    record = fit.apply_to(record)
    if record.image_description is None:
        described = next((r.image_description for _, r in members if r.image_description is not None), None)
        record = replace(record, image_description=described)
    record = replace(record, oof={"files": [str(p) for p in oof_files], "n_cases": len(oof.ids)})
    write_ensemble_record(stem, record)
    return record
