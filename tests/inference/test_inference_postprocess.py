"""Post-processing steps and their nnU-Net-style choice on validation masks."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.inference.postprocess import (
    apply_postprocessing,
    fill_holes,
    keep_largest_component,
    select_postprocessing,
)


def blob_with_speck_and_hole() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((40, 40), np.uint8)
    truth[10:30, 10:30] = 1
    pred = truth.copy()
    pred[18:22, 18:22] = 0  # a hole
    pred[2:4, 35:37] = 1  # a speck
    return pred, truth


def test_largest_component_and_fill_holes():
    pred, truth = blob_with_speck_and_hole()
    lcc = keep_largest_component(pred)
    assert lcc[2:4, 35:37].sum() == 0 and lcc[10:30, 10:30].sum() == 400 - 16
    filled = fill_holes(lcc)
    assert np.array_equal(filled, truth)
    # A background region touching the border is not a hole.
    notch = truth.copy()
    notch[0:20, 18:22] = 0
    assert np.array_equal(fill_holes(notch), notch)
    assert keep_largest_component(np.zeros((5, 5), np.uint8)).sum() == 0


def test_apply_in_order_and_unknown_step():
    pred, truth = blob_with_speck_and_hole()
    assert np.array_equal(apply_postprocessing(pred, ["largest_component", "fill_holes"]), truth)
    assert np.array_equal(apply_postprocessing(pred, []), pred)
    with pytest.raises(ValueError, match="unknown post-processing step"):
        apply_postprocessing(pred, ["dilate"])


def test_selection_keeps_only_steps_that_raise_dice():
    pred, truth = blob_with_speck_and_hole()
    choice = select_postprocessing([pred] * 3, [truth] * 3)
    assert choice.steps == ["largest_component", "fill_holes"]
    assert choice.scores["+fill_holes"] == pytest.approx(1.0)
    assert choice.scores["none"] < choice.scores["+largest_component"] < 1.0


def test_selection_refuses_a_step_that_hurts():
    # Truth has two lesions: keeping only the largest component removes a true one, so it must be refused.
    truth = np.zeros((40, 40), np.uint8)
    truth[5:15, 5:15] = 1
    truth[25:35, 25:33] = 1
    choice = select_postprocessing([truth.copy()], [truth], reduction="global")
    assert choice.steps == []
    assert choice.scores["+largest_component"] < choice.scores["none"] == pytest.approx(1.0)
    assert choice.to_dict()["reduction"] == "global"


def test_selection_input_checks():
    with pytest.raises(ValueError):
        select_postprocessing([], [])
    with pytest.raises(ValueError, match="reduction"):
        select_postprocessing([np.zeros((2, 2))], [np.zeros((2, 2))], reduction="mean")


# ------------------------------------------------------------------------------------------------ bounding-box work
def _whole_image_largest(mask: np.ndarray) -> np.ndarray:
    """The definition, over the whole image: the 8-connected component of largest area (ties: the lowest label)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 2:
        return mask
    return (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)


def _whole_image_fill(mask: np.ndarray) -> np.ndarray:
    """The definition, over the whole image: 4-connected background regions that touch no image border."""
    import cv2

    n, labels = cv2.connectedComponents((mask == 0).astype(np.uint8), connectivity=4)
    border = set(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).tolist())
    holes = (mask == 0) & ~np.isin(labels, sorted(border))
    return (mask | holes).astype(np.uint8)


def test_bounding_box_steps_equal_the_whole_image_definitions():
    rng = np.random.default_rng(0)
    for i in range(1500):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        if i % 3:
            mask = (rng.random((h, w)) < rng.uniform(0.05, 0.8)).astype(np.uint8)
        else:  # equal squares at every parity of position: ties decided by the label order
            mask = np.zeros((h, w), np.uint8)
            for _ in range(int(rng.integers(1, 5))):
                y, x = rng.integers(0, h), rng.integers(0, w)
                mask[y : y + 2, x : x + 2] = 1
        np.testing.assert_array_equal(keep_largest_component(mask), _whole_image_largest(mask), err_msg=f"case {i}")
        np.testing.assert_array_equal(fill_holes(mask), _whole_image_fill(mask), err_msg=f"case {i}")


@pytest.mark.data
def test_bounding_box_steps_on_the_shipped_models_ph2_test_masks(ph2_root):
    from lesionseg.data import find_cases, load_case, load_split
    from lesionseg.inference import Predictor

    test_ids = set(load_split("ph2").test)
    predictor = Predictor.from_pretrained("skin", backend="auto")
    differing = 0
    for case in (c for c in find_cases(ph2_root, "ph2") if c.id in test_ids):
        image, _ = load_case(case)
        mask = predictor.predict_mask([image], postprocess=False)[0]
        for step, reference in (("largest_component", _whole_image_largest), ("fill_holes", _whole_image_fill)):
            differing += int(np.count_nonzero(apply_postprocessing(mask, [step]) != reference(mask)))
        both = apply_postprocessing(mask, ["largest_component", "fill_holes"])
        differing += int(np.count_nonzero(both != _whole_image_fill(_whole_image_largest(mask))))
    assert differing == 0
