"""The report's figures, in two halves: what is kept with a run when it finishes, and drawing from what was kept.

Kept with a run (needs its checkpoint, done once by the runner): the predicted masks of the overlay cases
(:func:`predict_overlay_masks`) and, for the feature model, a :class:`~lesionseg.benchmark.results.FeatureSummary` of
one layer's activations on the first overlay case (:func:`feature_summary`). Drawn by the report (files only, so
``--report-only`` rebuilds them on a fresh clone): the per-image Dice distribution, the overlay grid and the feature
maps (:func:`draw_figures`).

The overlay and feature figures are drawn over the dataset's images, which are data and never committed: the runner
keeps the overlay cases' inputs at the evaluation size in the working folder (``out_dir/cases``). Where they are
absent (a fresh clone) the committed ``overlays.jpg`` / ``feature_maps.jpg`` are kept as they are and the report
text is the same, so ``--report-only`` still rebuilds ``report.md`` byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.splits import Split
from .results import FeatureSummary, RunResults, load_case_input, read_run_features

__all__ = ["draw_figures", "feature_summary", "overlay_case_ids", "predict_overlay_masks"]

_logger = logging.getLogger(__name__)

#: Longest side of a stored feature map (the figure shows each panel at about 230 pixels).
FEATURE_MAX_SIZE = 128
#: Single channels kept and drawn besides the channel mean.
FEATURE_CHANNELS = 7


def overlay_case_ids(split: Split, n: int) -> list[str]:
    """``n`` test ids of ``split``, evenly spaced over the sorted ids (all of them when there are fewer)."""
    test = sorted(split.test)
    if n <= 0:
        return []
    if n >= len(test):
        return test
    picks = np.linspace(0, len(test) - 1, n).round().astype(int)
    return [test[i] for i in picks]


def predict_overlay_masks(predictor: object, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Predicted {0, 1} masks of images already at the predictor's working size."""
    return [np.asarray(m, dtype=np.uint8) for m in predictor.predict_mask(list(images))]  # type: ignore[attr-defined]


def feature_summary(predictor: object, layer: str, image: np.ndarray, case_id: str) -> FeatureSummary:
    """One layer's activations on one image, reduced to what the feature-map figure draws.

    Raises:
        ValueError: ``layer`` is not a module of the model, or it never runs in the forward pass.
    """
    model = predictor.model  # type: ignore[attr-defined]
    try:
        module = model.get_submodule(layer)
    except AttributeError as err:
        raise ValueError(f"report.feature_layer {layer!r} is not a module of the model: {err}") from err
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, o: captured.append(o if torch.is_tensor(o) else o[0]))
    try:
        predictor.predict_mask([image])  # type: ignore[attr-defined]
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"report.feature_layer {layer!r} does not run in the model's forward pass")
    fmap = captured[0][0].detach().float().cpu()
    if fmap.ndim != 3:
        raise ValueError(f"report.feature_layer {layer!r} gives shape {tuple(fmap.shape)}, not (C, h, w)")
    h, w = fmap.shape[-2:]
    scale = FEATURE_MAX_SIZE / max(h, w)
    if scale < 1:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        fmap = F.adaptive_avg_pool2d(fmap[None], size)[0]
    energy = fmap.abs().mean(dim=(1, 2))
    top = torch.argsort(energy, descending=True, stable=True)[: min(FEATURE_CHANNELS, fmap.shape[0])]
    return FeatureSummary(layer, case_id, fmap.abs().mean(0).numpy(), fmap[top].numpy(), top.numpy())


def _first_showing(runs: Sequence[RunResults], cases: Sequence[str]) -> RunResults | None:
    """The first run (config order) whose stored masks cover every overlay case and had them as test cases."""
    for r in runs:
        if r.meta.get("overlay_in_test", True) and all(r.mask(c) is not None for c in cases):
            return r
    return None


def draw_figures(
    results_dir: Path,
    runs: Mapping[str, Sequence[RunResults]],
    dice: Mapping[str, Sequence[float]],
    cases: Sequence[str],
    feature_model: str | None,
    inputs_dir: Path | None = None,
) -> list[str]:
    """Draws the figures into ``results_dir`` from stored files; returns the report's markdown lines for them.

    Args:
        results_dir: the benchmark's results folder.
        runs: label -> finished runs, in config order.
        dice: label -> per-image Dice values for the distribution plot.
        cases: the overlay case ids.
        feature_model: label of the feature-map model, or None.
        inputs_dir: where the overlay cases' inputs are kept (``out_dir/cases``); None or absent = keep the
            committed overlay and feature figures instead of redrawing them.
    """
    from ..viz import plot_feature_panels, plot_overlay_grid, plot_score_distributions

    lines: list[str] = []
    scored = {label: values for label, values in dice.items() if len(values)}
    if scored:
        plot_score_distributions(scored, results_dir / "dice_per_image.png", "per-image Dice (all finished runs)")
        lines += ["![per-image Dice](dice_per_image.png)", ""]
    inputs = {c: load_case_input(inputs_dir, c) if inputs_dir else None for c in cases}
    shown = [(c, *inputs[c]) for c in cases if inputs[c] is not None]  # type: ignore[misc]
    drawable = bool(cases) and len(shown) == len(cases)
    if cases and (drawable or (results_dir / "overlays.jpg").is_file()):
        predictions: dict[str, list[np.ndarray]] = {}
        for label, rs in runs.items():
            r = _first_showing(rs, cases)
            if r is None:
                continue
            masks = [r.mask(c) for c in cases]
            predictions[f"{label} ({r.key})"] = masks  # type: ignore[assignment]
        if predictions:
            if drawable:
                plot_overlay_grid(shown, predictions, results_dir / "overlays.jpg", cell_inches=1.6, dpi=100)
            else:
                _logger.info("overlays.jpg kept as committed: the overlay cases' inputs are not in %s", inputs_dir)
            lines += [
                f"Test cases {', '.join(cases)}: ground truth (green), then each model's prediction (orange, truth "
                "outlined in green) from its first finished run, at the evaluation size.",
                "",
                "![overlays](overlays.jpg)",
                "",
            ]
    elif cases:
        _logger.warning("overlay figure skipped: the inputs of %s are not in %s", cases, inputs_dir)
    if feature_model and runs.get(feature_model):
        for r in runs[feature_model]:
            summary = read_run_features(r.path)
            if summary is None:
                continue
            stored = load_case_input(inputs_dir, summary.case) if inputs_dir else None
            if stored is None and not (results_dir / "feature_maps.jpg").is_file():
                break
            if stored is not None:
                panels = [("mean |activation|", summary.mean_abs)]
                panels += [(f"channel {int(i)}", summary.channels[k]) for k, i in enumerate(summary.index)]
                title = f"{feature_model} ({r.key}): {summary.layer} on {summary.case}"
                plot_feature_panels(stored[0], panels, results_dir / "feature_maps.jpg", title)
            lines += [
                f"Feature maps of `{summary.layer}` in {feature_model} ({r.key}) on test case {summary.case}: the "
                f"mean |activation| over channels and the {len(summary.index)} most active channels.",
                "",
                "![features](feature_maps.jpg)",
                "",
            ]
            break
    return lines
