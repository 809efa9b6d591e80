from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from lesionseg.metrics import accuracy, dice, f1, get_stats, iou, precision, sensitivity, specificity

SCORES = [dice, iou, accuracy, sensitivity, specificity, precision, f1]


def counts(*rows: tuple[int, int, int, int]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor(col, dtype=torch.int64) for col in zip(*rows))


# Image A is the hand-counted 4x4 example of test_metrics_confusion.py: tp=3, fp=2, fn=1, tn=10.
A = (3, 2, 1, 10)
# Image B (4x4): target = first 6 pixels in row-major order, pred = pixel (0, 0) only -> tp=1, fp=0, fn=5, tn=10.
B = (1, 0, 5, 10)


def test_single_image_hand_values() -> None:
    c = counts(A)
    expected = {
        dice: Fraction(2 * 3, 2 * 3 + 2 + 1),  # 6/9 = 2/3
        iou: Fraction(3, 3 + 2 + 1),  # 1/2
        accuracy: Fraction(3 + 10, 16),  # 13/16
        sensitivity: Fraction(3, 3 + 1),  # 3/4
        specificity: Fraction(10, 10 + 2),  # 5/6
        precision: Fraction(3, 3 + 2),  # 3/5
        f1: Fraction(2, 3),
    }
    for fn, value in expected.items():
        for reduction in ("global", "per_image"):
            assert fn(*c, reduction).item() == pytest.approx(float(value), abs=1e-15), fn.__name__
        assert fn(*c, "none").shape == (1,)


def test_counts_from_masks_match_hand_counts() -> None:
    pred_b = torch.zeros(4, 4)
    pred_b[0, 0] = 1
    target_b = torch.zeros(16)
    target_b[:6] = 1
    stats = get_stats(pred_b[None], target_b.reshape(1, 4, 4))
    assert tuple(int(s) for s in stats.as_tuple()) == B


def test_global_differs_from_per_image_mean() -> None:
    c = counts(A, B)
    # Dice: A = 2/3, B = 2*1/(2+0+5) = 2/7; per-image mean = (2/3 + 2/7)/2 = 10/21.
    # Global counts tp=4, fp=2, fn=6, tn=20 -> 8/(8+2+6) = 1/2.
    assert dice(*c, "per_image").item() == pytest.approx(10 / 21, abs=1e-15)
    assert dice(*c, "global").item() == pytest.approx(1 / 2, abs=1e-15)
    # Sensitivity: A = 3/4, B = 1/6; mean = 11/24. Global 4/10 = 2/5.
    assert sensitivity(*c, "per_image").item() == pytest.approx(11 / 24, abs=1e-15)
    assert sensitivity(*c, "global").item() == pytest.approx(2 / 5, abs=1e-15)
    # Precision: A = 3/5, B = 1/1; mean = 4/5. Global 4/6 = 2/3.
    assert precision(*c, "per_image").item() == pytest.approx(4 / 5, abs=1e-15)
    assert precision(*c, "global").item() == pytest.approx(2 / 3, abs=1e-15)
    assert dice(*c, "none").tolist() == pytest.approx([2 / 3, 2 / 7], abs=1e-15)


def test_f1_matches_dice() -> None:
    c = counts(A, B, (0, 0, 0, 16), (0, 3, 0, 13), (0, 0, 4, 12), (0, 2, 2, 12), (7, 1, 0, 8))
    for reduction in ("global", "per_image", "none"):
        assert torch.allclose(f1(*c, reduction), dice(*c, reduction), rtol=0, atol=1e-12), reduction


def test_empty_target_empty_pred_is_perfect() -> None:
    c = counts((0, 0, 0, 16))
    for fn in SCORES:
        assert fn(*c, "none").item() == 1.0, fn.__name__


def test_empty_target_with_false_positives() -> None:
    c = counts((0, 3, 0, 13))
    assert dice(*c, "none").item() == 0.0
    assert iou(*c, "none").item() == 0.0
    assert f1(*c, "none").item() == 0.0
    assert precision(*c, "none").item() == 0.0
    # Sensitivity has a 0 denominator (no positives); the image has errors, so it scores 0.
    assert sensitivity(*c, "none").item() == 0.0
    assert specificity(*c, "none").item() == pytest.approx(13 / 16)
    assert accuracy(*c, "none").item() == pytest.approx(13 / 16)


def test_empty_prediction_on_lesion_and_no_negatives() -> None:
    missed = counts((0, 0, 4, 12))
    assert precision(*missed, "none").item() == 0.0
    assert dice(*missed, "none").item() == 0.0
    all_lesion = counts((10, 0, 6, 0))
    assert specificity(*all_lesion, "none").item() == 1.0


def test_invalid_arguments() -> None:
    c = counts(A)
    with pytest.raises(ValueError, match="reduction"):
        dice(*c, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="share one shape"):
        dice(torch.tensor([1, 2]), *c[1:], "none")
    with pytest.raises(ValueError, match="zero images"):
        dice(*(torch.zeros(0, dtype=torch.int64) for _ in range(4)), "global")
    with pytest.raises(ValueError, match="non-negative"):
        dice(torch.tensor([-1]), *c[1:], "none")
