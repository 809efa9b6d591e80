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
