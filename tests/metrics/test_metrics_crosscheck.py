"""Cross-checks of our per-image Dice, IoU and HD95 against MONAI and torchmetrics on seeded random masks.

"Ours" is what the evaluator reports: :class:`lesionseg.metrics.SegmentationMetrics` (``get_stats`` -> ``dice`` /
``iou`` and ``hd95_batch``). The masks are 40 x 40 pairs: ellipses, rectangles, rings (a hole), several components,
smoothed-noise blobs, blobs cut by the image border, a full image, single pixels, and the empty cases (empty
prediction, empty target, both empty). Both libraries are optional: the tests skip when either is absent.

Conventions, and what is asserted where they differ (float32 in both libraries, so equality is to ~1e-6):

1. Layout and ``include_background``. Ours scores one lesion channel and has no background term. The masks are given
   to MONAI as two-channel one-hot ``[background, lesion]`` with ``include_background=False`` (the default of
   ``compute_hausdorff_distance``; ``DiceMetric`` and ``MeanIoU`` default to True, which would average in the
   background channel), and to torchmetrics as index maps with ``num_classes=2, include_background=False``. Both
   then score the lesion channel only.
2. Dice / IoU with an empty target. Ours: 1 if the prediction is empty too, else 0 (from the formula).
   MONAI ``ignore_empty=False`` is the same rule, so it must agree on every pair, including all empty cases.
   MONAI's default ``ignore_empty=True`` gives NaN whenever the target is empty (whatever the prediction); asserted.
   torchmetrics ``segmentation.dice_score`` and ``segmentation.mean_iou`` divide with ``zero_division`` NaN, so both
   empty gives NaN (``mean_iou`` even reports its -1 sentinel instead, see the test) and an empty target with a
   non-empty prediction gives 0 like ours. ``classification.binary_jaccard_index(zero_division=1.0)`` matches ours
   on every pair. Global reduction (one confusion matrix over all images): ours equals torchmetrics
   ``dice_score(aggregation_level="global")``.
3. HD95 boundary: identical. Both take ``mask XOR binary_erosion(mask)`` with scipy's default 4-connected cross and
   background outside the image (MONAI crops to the union bounding box with a 1-pixel zero margin, so foreground on
   the image border is boundary in both).
4. HD95 pooling: ours pools the two directed boundary-distance sets and takes one 95th percentile (MedPy);
   MONAI's symmetric ``compute_hausdorff_distance(percentile=95)`` takes the maximum of the two directed 95th
   percentiles. Asserted: ours equals ``np.percentile(concatenate(MONAI's two directed distance sets), 95)`` from
   ``monai.metrics.utils.get_edge_surface_distance``; ours lies between MONAI's ``directed=True`` HD95 of the two
   directions (so never above MONAI's symmetric value, which equals the larger one); and the two coincide on pairs
   where both directed percentiles are equal (e.g. identical masks, which give 0).
5. HD95 empty masks. Ours: 0.0 when both are empty, NaN when exactly one is. MONAI: NaN in both cases (no distance at
   all, or every distance inf, whose linearly interpolated quantile is NaN). Asserted.
6. HD95 spacing: an anisotropic (row, col) spacing scales distances per axis identically in both; asserted.
7. torchmetrics has no percentile Hausdorff distance (``segmentation.hausdorff_distance`` is the maximum), so HD95 is
   checked against MONAI only.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import Tensor

from lesionseg.metrics import SegmentationMetrics, dice, get_stats

monai_metrics = pytest.importorskip("monai.metrics")
monai_utils = pytest.importorskip("monai.metrics.utils")
tm_segmentation = pytest.importorskip("torchmetrics.functional.segmentation")
tm_classification = pytest.importorskip("torchmetrics.functional.classification")

SIZE = 40
TOL = 1e-6


def _ellipse(rng: np.random.Generator, centre_range: tuple[float, float] = (0.2, 0.8)) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = rng.uniform(*centre_range, 2) * SIZE
    ry, rx = rng.uniform(0.06, 0.3, 2) * SIZE
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _rectangle(rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    r0, c0 = rng.integers(0, SIZE - 4, 2)
    h, w = rng.integers(2, SIZE // 2, 2)
    mask[r0 : r0 + h, c0 : c0 + w] = True
    return mask


def _ring(rng: np.random.Generator) -> np.ndarray:
    outer = _ellipse(rng)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = np.argwhere(outer).mean(axis=0)
    return outer & ~((yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(2, 5) ** 2)


def _noise_blob(rng: np.random.Generator) -> np.ndarray:
    # Box-smoothed noise thresholded at a quantile: irregular outlines, often several components.
    noise = rng.standard_normal((SIZE + 8, SIZE + 8))
    kernel = np.ones(9) / 9
    smooth = np.apply_along_axis(np.convolve, 0, noise, kernel, "valid")
    smooth = np.apply_along_axis(np.convolve, 1, smooth, kernel, "valid")
    return smooth > np.quantile(smooth, rng.uniform(0.6, 0.9))


def _random_mask(rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(0, 5)
    if kind == 0:
        return _ellipse(rng)
    if kind == 1:
        return _rectangle(rng)
    if kind == 2:
        return _ring(rng)
    if kind == 3:
        return _ellipse(rng) | _rectangle(rng)
    return _noise_blob(rng)


def _perturb(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    # A prediction near the target: shifted, then with a few spurious pixels added and some removed.
    dy, dx = rng.integers(-4, 5, 2)
    shifted = np.roll(mask, (int(dy), int(dx)), axis=(0, 1))
    flips = rng.random((SIZE, SIZE)) < 0.01
    return shifted ^ flips


def _pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(13)
    empty = np.zeros((SIZE, SIZE), dtype=bool)
    pixel_a, pixel_b = empty.copy(), empty.copy()
    pixel_a[7, 9] = True
    pixel_b[30, 2] = True
    corner = empty.copy()
    corner[0, 0] = True
    border_a = _ellipse(rng, centre_range=(0.0, 0.1))
    border_b = empty.copy()
    border_b[:12, :] = True
    blob = _ellipse(rng)
    pairs = [
        ("both_empty", empty, empty),
        ("empty_pred", empty, blob),
        ("empty_target", blob, empty),
        ("same_pixel", pixel_a, pixel_a),
        ("pixel_vs_pixel", pixel_a, pixel_b),
        ("pixel_vs_blob", pixel_a, blob),
        ("corner_pixel_vs_border_blob", corner, border_a),
        ("border_vs_border", border_a, border_b),
        ("full_vs_blob", ~empty, blob),
        ("full_vs_full", ~empty, ~empty),
        ("identical_blob", blob, blob),
    ]
    for i in range(24):
        target = _random_mask(rng)
        pred = _perturb(rng, target) if i % 2 else _random_mask(rng)
        pairs.append((f"random_{i}", pred, target))
    return pairs


PAIRS = _pairs()
IDS = [name for name, _, _ in PAIRS]


@pytest.fixture(scope="module")
def batch() -> tuple[Tensor, Tensor]:
    pred = torch.from_numpy(np.stack([p for _, p, _ in PAIRS]))[:, None]
    target = torch.from_numpy(np.stack([t for _, _, t in PAIRS]))[:, None]
    return pred, target


@pytest.fixture(scope="module")
def ours(batch: tuple[Tensor, Tensor]) -> dict[str, np.ndarray]:
    metrics = SegmentationMetrics(include_hd95=True)
    metrics.update(*batch, ids=IDS)
    rows = metrics.per_image_table()
    return {key: np.array([row[key] for row in rows], dtype=np.float64) for key in ("dice", "iou", "hd95")}


def _one_hot(mask: Tensor) -> Tensor:
    """(N, 1, H, W) bool -> (N, 2, H, W) float ``[background, lesion]``."""
    return torch.cat([~mask, mask], dim=1).float()


def _quiet(fn, *args, **kwargs) -> Tensor:
    # MONAI warns on every empty mask (deliberate here); torchmetrics' dice_score warns about a future default even
    # when ``average`` is given.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _empty_target(batch: tuple[Tensor, Tensor]) -> np.ndarray:
    return ~batch[1].flatten(1).any(dim=1).numpy()


def _both_empty(batch: tuple[Tensor, Tensor]) -> np.ndarray:
    return _empty_target(batch) & ~batch[0].flatten(1).any(dim=1).numpy()


def test_case_mix_covers_the_edge_cases(batch: tuple[Tensor, Tensor]) -> None:
    pred, target = batch
    border = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    assert _both_empty(batch).sum() == 1
    assert _empty_target(batch).sum() == 2
    assert (target[:, 0] & border).flatten(1).any(dim=1).sum() >= 4
    assert (pred[:, 0] & border).flatten(1).any(dim=1).sum() >= 4
    assert (target.flatten(1).sum(dim=1) == 1).sum() >= 2


def test_dice_matches_monai_dicemetric(batch: tuple[Tensor, Tensor], ours: dict[str, np.ndarray]) -> None:
    pred, target = batch
    metric = monai_metrics.DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    theirs = _quiet(metric, _one_hot(pred), _one_hot(target))[:, 0].double().numpy()
    np.testing.assert_allclose(ours["dice"], theirs, rtol=0, atol=TOL)

    default = monai_metrics.DiceMetric(include_background=False, reduction="none")
    theirs_default = _quiet(default, _one_hot(pred), _one_hot(target))[:, 0].double().numpy()
    empty = _empty_target(batch)
    assert np.isnan(theirs_default[empty]).all()
    np.testing.assert_allclose(ours["dice"][~empty], theirs_default[~empty], rtol=0, atol=TOL)


def test_iou_matches_monai_meaniou(batch: tuple[Tensor, Tensor], ours: dict[str, np.ndarray]) -> None:
    pred, target = batch
    metric = monai_metrics.MeanIoU(include_background=False, reduction="none", ignore_empty=False)
    theirs = _quiet(metric, _one_hot(pred), _one_hot(target))[:, 0].double().numpy()
    np.testing.assert_allclose(ours["iou"], theirs, rtol=0, atol=TOL)


def test_dice_and_iou_match_torchmetrics(batch: tuple[Tensor, Tensor], ours: dict[str, np.ndarray]) -> None:
    pred, target = batch
    index_pred, index_target = pred[:, 0].long(), target[:, 0].long()
    both_empty = _both_empty(batch)

    tm_dice = _quiet(
        tm_segmentation.dice_score,
        index_pred,
        index_target,
        num_classes=2,
        include_background=False,
        average="none",
        input_format="index",
    )[:, 0]
    tm_dice = tm_dice.double().numpy()
    assert np.isnan(tm_dice[both_empty]).all()
    np.testing.assert_allclose(ours["dice"][~both_empty], tm_dice[~both_empty], rtol=0, atol=TOL)

    tm_iou = tm_segmentation.mean_iou(
        index_pred, index_target, num_classes=2, include_background=False, per_class=True, input_format="index"
    )[:, 0]
    tm_iou = tm_iou.double().numpy()
    # mean_iou marks a class absent from both masks with its -1 sentinel rather than NaN.
    assert (tm_iou[both_empty] == -1).all()
    np.testing.assert_allclose(ours["iou"][~both_empty], tm_iou[~both_empty], rtol=0, atol=TOL)

    jaccard = np.array(
        [float(tm_classification.binary_jaccard_index(p, t, zero_division=1.0)) for p, t in zip(pred, target)]
    )
    np.testing.assert_allclose(ours["iou"], jaccard, rtol=0, atol=TOL)


def test_global_dice_matches_torchmetrics_global_aggregation(batch: tuple[Tensor, Tensor]) -> None:
    pred, target = batch
    stats = get_stats(pred, target)
    theirs = _quiet(
        tm_segmentation.dice_score,
        pred[:, 0].long(),
        target[:, 0].long(),
        num_classes=2,
        include_background=False,
        average="micro",
        input_format="index",
        aggregation_level="global",
    )
    assert float(dice(*stats.as_tuple(), "global")) == pytest.approx(float(theirs), abs=TOL)


def _monai_hd95(pred: Tensor, target: Tensor, directed: bool, spacing: tuple[float, float] | None = None) -> np.ndarray:
    values = _quiet(
        monai_metrics.compute_hausdorff_distance,
        _one_hot(pred),
        _one_hot(target),
        include_background=False,
        percentile=95,
        directed=directed,
        spacing=spacing,
    )
    return values[:, 0].double().numpy()


def _monai_pooled_hd95(pred: Tensor, target: Tensor, spacing: tuple[float, float] | None = None) -> np.ndarray:
    values = []
    for p, t in zip(pred[:, 0].float(), target[:, 0].float()):
        _, distances, _ = _quiet(monai_utils.get_edge_surface_distance, p, t, spacing=spacing, symmetric=True)
        pooled = np.concatenate([d.double().numpy() for d in distances])
        values.append(float(np.percentile(pooled, 95)))
    return np.array(values)


def test_hd95_equals_pooled_percentile_of_monai_edge_distances(
    batch: tuple[Tensor, Tensor], ours: dict[str, np.ndarray]
) -> None:
    pred, target = batch
    defined = pred.flatten(1).any(dim=1).numpy() & target.flatten(1).any(dim=1).numpy()
    theirs = _monai_pooled_hd95(pred[defined], target[defined])
    np.testing.assert_allclose(ours["hd95"][defined], theirs, rtol=TOL, atol=TOL)
    # Not a vacuous comparison: most pairs have a non-zero HD95, on a range of values.
    assert (ours["hd95"][defined] > 1).sum() >= 20
    assert len(np.unique(np.round(ours["hd95"][defined], 3))) >= 15


def test_hd95_lies_between_monai_directed_hd95s(batch: tuple[Tensor, Tensor], ours: dict[str, np.ndarray]) -> None:
    pred, target = batch
    defined = pred.flatten(1).any(dim=1).numpy() & target.flatten(1).any(dim=1).numpy()
    pred, target, mine = pred[defined], target[defined], ours["hd95"][defined]
    forward = _monai_hd95(pred, target, directed=True)
    backward = _monai_hd95(target, pred, directed=True)
    symmetric = _monai_hd95(pred, target, directed=False)
    np.testing.assert_allclose(symmetric, np.maximum(forward, backward), rtol=TOL, atol=TOL)
    assert (mine <= symmetric + TOL).all()
    assert (mine >= np.minimum(forward, backward) - TOL).all()
    same = np.isclose(forward, backward, rtol=0, atol=TOL)
    assert same.sum() >= 3  # identical masks at least
    np.testing.assert_allclose(mine[same], symmetric[same], rtol=TOL, atol=TOL)
    # The conventions do differ on these masks: MONAI's symmetric value is strictly larger on many pairs.
    assert (symmetric > mine + 0.1).sum() >= 5


def test_hd95_empty_mask_conventions(batch: tuple[Tensor, Tensor], ours: dict[str, np.ndarray]) -> None:
    pred, target = batch
    pred_any = pred.flatten(1).any(dim=1).numpy()
    target_any = target.flatten(1).any(dim=1).numpy()
    both_empty = ~pred_any & ~target_any
    one_empty = pred_any != target_any
    assert both_empty.sum() == 1 and one_empty.sum() == 2
    theirs = _monai_hd95(pred, target, directed=False)
    assert (ours["hd95"][both_empty] == 0.0).all()
    assert np.isnan(ours["hd95"][one_empty]).all()
    assert np.isnan(theirs[both_empty | one_empty]).all()
    assert not np.isnan(ours["hd95"][~(both_empty | one_empty)]).any()


def test_hd95_with_anisotropic_spacing_matches_monai(batch: tuple[Tensor, Tensor]) -> None:
    pred, target = batch
    defined = pred.flatten(1).any(dim=1).numpy() & target.flatten(1).any(dim=1).numpy()
    pred, target = pred[defined], target[defined]
    spacing = (0.5, 1.25)
    metrics = SegmentationMetrics(include_hd95=True, hd95_spacing=spacing)
    metrics.update(pred, target)
    mine = metrics.hd95_values().numpy()
    np.testing.assert_allclose(mine, _monai_pooled_hd95(pred, target, spacing=spacing), rtol=TOL, atol=TOL)
    # Not the unit or the transposed spacing: a (col, row) mix-up would fail the comparison above.
    assert not np.allclose(mine, _monai_pooled_hd95(pred, target, spacing=spacing[::-1]), rtol=TOL, atol=TOL)
