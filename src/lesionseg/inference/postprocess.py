"""Mask post-processing chosen on validation data, as nnU-Net decides it.

Two steps exist: ``largest_component`` (keep the largest 8-connected foreground component) and ``fill_holes`` (fill
background regions not connected to the image border). At the end of training :func:`select_postprocessing` tries
each on the validation predictions, in that order, and keeps a step only if it raises the validation Dice (the
monitored reduction) by more than a tolerance; the chosen list is stored in the checkpoint record under
``postprocess`` and applied by ``predict``, ``evaluate`` and the benchmark unless switched off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "POSTPROCESS_STEPS",
    "PostprocessChoice",
    "apply_postprocessing",
    "check_postprocess_steps",
    "fill_holes",
    "keep_largest_component",
    "select_postprocessing",
]


def _foreground_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the non-zero pixels of a uint8 mask; w == 0 for an empty mask."""
    return cv2.boundingRect(mask)


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected foreground component of a {0, 1} mask (ties: the lowest label); empty stays empty.

    Labelled inside the foreground's bounding box only (every component lies in it), with the box's corner moved to
    even coordinates: OpenCV labels 2x2 blocks in raster order, so the labels, and the tie-break, are those of the
    whole image, at a fraction of the cost for a lesion that fills part of the image.
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    x, y, w, h = _foreground_box(mask)
    if w == 0:
        return mask
    x0, y0 = x - x % 2, y - y % 2
    box = (slice(y0, y + h), slice(x0, x + w))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask[box], connectivity=8)
    if n <= 2:
        return mask
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    out = np.zeros_like(mask)
    out[box] = labels == largest
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions of a {0, 1} mask that do not touch the image border (4-connected background).

    Worked inside the foreground's bounding box framed by one pixel of background: every background pixel outside
    the box reaches the image border in a straight line, so a background region reaches the border exactly when it
    reaches the frame. One flood fill of the frame's region leaves the holes.
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    x, y, w, h = _foreground_box(mask)
    if w == 0:
        return mask
    framed = np.zeros((h + 2, w + 2), np.uint8)
    framed[1:-1, 1:-1] = mask[y : y + h, x : x + w] != 0
    cv2.floodFill(framed, None, (0, 0), 1, flags=4)  # the frame's background region becomes foreground
    out = mask.copy()
    out[y : y + h, x : x + w] |= framed[1:-1, 1:-1] == 0  # what is still background is a hole
    return out


POSTPROCESS_STEPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "largest_component": keep_largest_component,
    "fill_holes": fill_holes,
}


def check_postprocess_steps(steps: Sequence[str], source: str = "post-processing") -> None:
    """Refuse unknown step names, naming ``source`` (e.g. a checkpoint record's file and field).

    Raises:
        ValueError: the first unknown step, with the known ones.
    """
    for step in steps:
        if step not in POSTPROCESS_STEPS:
            raise ValueError(f"{source}: unknown post-processing step {step!r}; known: {sorted(POSTPROCESS_STEPS)}")


def apply_postprocessing(mask: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    """Apply the named steps in order to a {0, 1} mask."""
    for step in steps:
        if step not in POSTPROCESS_STEPS:
            raise ValueError(f"unknown post-processing step {step!r}; known: {sorted(POSTPROCESS_STEPS)}")
        mask = POSTPROCESS_STEPS[step](mask)
    return mask


def _dice(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """(2|P and G|, |P| + |G|) of one image."""
    pred = pred.astype(bool)
    gt = gt.astype(bool)
    return 2 * int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))


def _score(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], reduction: str) -> float:
    parts = [_dice(p, g) for p, g in zip(preds, gts)]
    if reduction == "global":
        num = sum(a for a, _ in parts)
        den = sum(b for _, b in parts)
        return 1.0 if den == 0 else num / den
    # Per image: an image with both masks empty scores 1, as the project's metrics do.
    return float(np.mean([1.0 if b == 0 else a / b for a, b in parts]))


@dataclass
class PostprocessChoice:
    """What :func:`select_postprocessing` decided and the validation scores it saw.

    Attributes:
        steps: the kept steps, in order.
        reduction: ``per_image`` or ``global`` Dice.
        scores: validation Dice of the baseline and of each tried list, keyed ``none`` / ``+step``.
    """

    steps: list[str] = field(default_factory=list)
    reduction: str = "per_image"
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"steps": list(self.steps), "reduction": self.reduction, "val_dice": dict(self.scores)}


def select_postprocessing(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    reduction: str = "per_image",
    candidates: Sequence[str] = ("largest_component", "fill_holes"),
    min_gain: float = 1e-4,
) -> PostprocessChoice:
    """Greedy nnU-Net-style choice: try each step on top of those kept, keep it if the Dice rises by ``min_gain``.

    Args:
        preds: predicted {0, 1} masks of the validation cases.
        gts: their ground-truth {0, 1} masks, same shapes.
        reduction: ``per_image`` (mean of per-image Dice) or ``global`` (one Dice over all pixels).
        candidates: steps to try, in order.
        min_gain: smallest improvement that keeps a step (ties keep the simpler mask).
    """
    if reduction not in ("per_image", "global"):
        raise ValueError(f"reduction must be per_image or global, got {reduction!r}")
    if len(preds) != len(gts) or not preds:
        raise ValueError(f"need as many predictions as masks, and at least one (got {len(preds)} and {len(gts)})")
    choice = PostprocessChoice(reduction=reduction)
    current = [np.asarray(p, dtype=np.uint8) for p in preds]
    best = _score(current, gts, reduction)
    choice.scores["none"] = round(best, 6)
    for step in candidates:
        trial = [apply_postprocessing(p, [step]) for p in current]
        score = _score(trial, gts, reduction)
        choice.scores["+" + step] = round(score, 6)
        if score > best + min_gain:
            best, current = score, trial
            choice.steps.append(step)
    return choice
