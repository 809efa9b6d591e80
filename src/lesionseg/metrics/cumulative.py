"""Accumulation of per-image statistics over an evaluation run, and markdown reporting."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import torch
from torch import Tensor

from lesionseg.metrics.confusion import ConfusionStats, get_stats
from lesionseg.metrics.hd95 import _check_spacing, hd95_batch
from lesionseg.metrics.registry import METRICS, SCORE_FUNCTIONS, get_metric

__all__ = ["SCORE_FUNCTIONS", "SegmentationMetrics", "format_table"]

_ROW_LABELS = {
    "global": "global (one confusion matrix over all pixels)",
    "per_image": "per-image mean",
}
_COLUMN_LABELS = {m.name: m.column for m in METRICS}


class SegmentationMetrics:
    """Accumulates per-image confusion counts (and optionally HD95) of binary masks across batches.

    Scores are computed only in :meth:`aggregate`, from the stored counts, so both the global reduction (one confusion
    matrix over all pixels) and the per-image mean are available from a single pass.

    Args:
        include_hd95: Also compute HD95 per image (CPU, scipy; noticeably slower than the counts).
        hd95_spacing: Pixel size for HD95, a scalar or a (row, col) pair; None reports HD95 in pixels.

    Example:
        >>> metrics = SegmentationMetrics()
        >>> metrics.update(pred, target, ids=["img_001", "img_002"])  # doctest: +SKIP
        >>> metrics.aggregate()["global"]["dice"]  # doctest: +SKIP
    """

    def __init__(self, include_hd95: bool = False, hd95_spacing: float | Sequence[float] | None = None) -> None:
        self.include_hd95 = bool(include_hd95)
        # Checked now so a bad spacing fails at construction rather than after the first evaluated batch.
        _check_spacing(hd95_spacing)
        self.hd95_spacing = hd95_spacing
        self._stats: list[ConfusionStats] = []
        self._hd95: list[Tensor] = []
        self._ids: list[Hashable] = []

    def __len__(self) -> int:
        return len(self._ids)

    def reset(self) -> None:
        """Forgets every accumulated image."""
        self._stats.clear()
        self._hd95.clear()
        self._ids.clear()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, ids: Sequence[Hashable] | None = None) -> None:
        """Adds a batch of already-binarised predictions.

        Args:
            pred: Binary prediction, (N, 1, H, W) or (N, H, W), values in {0, 1}; threshold logits/probabilities first.
            target: Binary ground truth with the same shape as ``pred``.
            ids: One identifier per image (e.g. file stems) for :meth:`per_image_table`; None numbers the images in
                the order they were added.

        Raises:
            ValueError: If the masks are malformed or ``ids`` does not have one entry per image.
        """
        stats = get_stats(pred, target).to("cpu")
        n = len(stats)
        if ids is None:
            start = len(self._ids)
            batch_ids: list[Hashable] = list(range(start, start + n))
        else:
            batch_ids = list(ids)
            if len(batch_ids) != n:
                raise ValueError(f"ids has {len(batch_ids)} entries but the batch has {n} images")
        if self.include_hd95:
            self._hd95.append(hd95_batch(pred, target, spacing=self.hd95_spacing))
        self._stats.append(stats)
        self._ids.extend(batch_ids)

    def stats(self) -> ConfusionStats:
        """Returns the per-image counts of every accumulated image, each of shape (N,)."""
        return ConfusionStats.cat(self._stats)

    def hd95_values(self) -> Tensor:
        """Returns per-image HD95, shape (N,), NaN where exactly one mask is empty.

        Raises:
            ValueError: If the object was created with ``include_hd95=False``.
        """
        if not self.include_hd95:
            raise ValueError("hd95 was not computed; create SegmentationMetrics(include_hd95=True)")
        return torch.cat(self._hd95) if self._hd95 else torch.zeros(0, dtype=torch.float64)

    def aggregate(self) -> dict[str, dict[str, float]]:
        """Computes every score under both reductions.

        Returns:
            ``{"global": {score: value}, "per_image": {score: value}}`` with scores ``dice, iou, accuracy, sensitivity,
            specificity, precision, f1`` as fractions in [0, 1]. With ``include_hd95`` the ``"per_image"`` entry also
            holds ``"hd95"`` (NaN-aware mean over images where it is defined; NaN if none is) and ``"hd95_undefined"``
            (number of images with exactly one empty mask, as a float). HD95 has no global counterpart.

        Raises:
            RuntimeError: If no image has been added.
        """
        if len(self) == 0:
            raise RuntimeError("no images accumulated; call update() before aggregate()")
        counts = self.stats().as_tuple()
        results: dict[str, dict[str, float]] = {
            reduction: {name: float(fn(*counts, reduction)) for name, fn in SCORE_FUNCTIONS.items()}
            for reduction in ("global", "per_image")
        }
        if self.include_hd95:
            values = self.hd95_values()
            defined = values[~torch.isnan(values)]
            # Averaging by hand avoids numpy/torch warnings on an all-NaN slice; NaN itself signals "no defined value".
            results["per_image"]["hd95"] = float(defined.mean()) if defined.numel() else math.nan
            results["per_image"]["hd95_undefined"] = float(values.numel() - defined.numel())
        return results

    def per_image_table(self) -> list[dict[str, Hashable | float | int]]:
        """Returns one row per accumulated image.

        Returns:
            Rows in insertion order, each with ``"id"``, the raw counts ``"tp", "fp", "fn", "tn"`` (ints), every score
            of :data:`SCORE_FUNCTIONS` (fractions) and, with ``include_hd95``, ``"hd95"`` (NaN if undefined).
        """
        stats = self.stats()
        counts = stats.as_tuple()
        columns = {name: fn(*counts, "none").tolist() for name, fn in SCORE_FUNCTIONS.items()}
        if self.include_hd95:
            columns["hd95"] = self.hd95_values().tolist()
        raw = {name: c.tolist() for name, c in zip(("tp", "fp", "fn", "tn"), counts)}
        rows: list[dict[str, Hashable | float | int]] = []
        for i, image_id in enumerate(self._ids):
            row: dict[str, Hashable | float | int] = {"id": image_id}
            row.update({name: values[i] for name, values in raw.items()})
            row.update({name: values[i] for name, values in columns.items()})
            rows.append(row)
        return rows


def _format_cell(name: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{get_metric(name).show(value):.2f}"


def format_table(results: Mapping[str, Mapping[str, float]], title: str) -> str:
    """Renders :meth:`SegmentationMetrics.aggregate` output as a markdown table.

    One row per reduction, labelled so a reader cannot confuse them: ``"global (one confusion matrix over all
    pixels)"`` and ``"per-image mean"``. Scores are percentages with two decimals; HD95 (if present) stays in its own
    units (pixels unless a spacing was given) and is ``n/a`` for the global row. A footnote reports how many images
    had an undefined HD95.

    Args:
        results: Mapping with ``"global"`` and ``"per_image"`` entries of score name -> value in [0, 1].
        title: Caption written in bold above the table.

    Returns:
        The markdown text, ending with a newline.

    Raises:
        ValueError: If ``results`` lacks a reduction or a reduction has no known score.
    """
    missing = [key for key in _ROW_LABELS if key not in results]
    if missing:
        raise ValueError(f"results is missing reduction(s) {missing}; expected keys {list(_ROW_LABELS)}")
    columns = [name for name in _COLUMN_LABELS if any(name in results[key] for key in _ROW_LABELS)]
    if not columns:
        raise ValueError(f"results has no known score; expected some of {list(_COLUMN_LABELS)}")
    lines = [
        f"**{title}**",
        "",
        "| Reduction | " + " | ".join(_COLUMN_LABELS[name] for name in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for key, label in _ROW_LABELS.items():
        cells = [_format_cell(name, results[key].get(name)) for name in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    undefined = results["per_image"].get("hd95_undefined")
    if "hd95" in columns:
        note = "HD95: NaN-aware per-image mean (pooled symmetric 95th percentile, MedPy convention)"
        if undefined:
            note += f"; {int(undefined)} image(s) with exactly one empty mask excluded"
        lines += ["", note + "."]
    return "\n".join(lines) + "\n"
