"""Lesion measurements on shapes whose answers are worked out by hand."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from lesionseg.inference.measure import MEASUREMENT_FIELDS, check_pixel_size, lesion_perimeter, measure_lesion


def disc(r: float, size: int, cy: float | None = None, cx: float | None = None) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    cy = size // 2 if cy is None else cy
    cx = size // 2 if cx is None else cx
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.uint8)


def test_empty_mask_measures_zero():
    m = measure_lesion(np.zeros((20, 30), np.uint8))
    assert m.area == 0 and m.perimeter == 0 and m.components == 0 and m.max_feret_diameter == 0


def test_square_exact_values():
    mask = np.zeros((100, 100), np.uint8)
    mask[20:60, 30:70] = 1  # 40 x 40 pixels
    m = measure_lesion(mask)
    assert m.area == 1600
    assert m.perimeter == pytest.approx(4 * 40, rel=0.025)  # pixel edges; the 0.9-pixel blur rounds the corners
    assert m.perimeter < 4 * 40
    assert m.equivalent_diameter == pytest.approx(math.sqrt(4 * 1600 / math.pi))
    assert m.max_feret_diameter == pytest.approx(39 * math.sqrt(2) + 1)  # corner-to-corner centres + one pixel
    assert m.asymmetry_major == pytest.approx(0, abs=1e-9) and m.asymmetry_minor == pytest.approx(0, abs=1e-9)
    assert m.compactness == pytest.approx(m.perimeter**2 / (4 * math.pi * 1600))
    assert m.components == 1 and m.asymmetric_axes == 0


@pytest.mark.parametrize("r", [20, 50, 120])
def test_disc_matches_circle_formulas(r):
    m = measure_lesion(disc(r, 2 * r + 20))
    assert m.area == pytest.approx(math.pi * r * r, rel=0.02)
    assert m.perimeter == pytest.approx(2 * math.pi * r, rel=0.006)
    assert m.equivalent_diameter == pytest.approx(2 * r, rel=0.01)
    assert m.max_feret_diameter == pytest.approx(2 * r + 1, abs=1.0)
    assert m.compactness == pytest.approx(1.0, abs=0.015)
    assert m.asymmetry_major < 0.01 and m.asymmetry_minor < 0.01


def test_ellipse_axes_and_perimeter():
    a, b = 60, 30
    yy, xx = np.mgrid[:200, :200]
    mask = (((yy - 100) / b) ** 2 + ((xx - 100) / a) ** 2 <= 1).astype(np.uint8)
    m = measure_lesion(mask)
    ramanujan = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))
    assert m.area == pytest.approx(math.pi * a * b, rel=0.01)
    assert m.perimeter == pytest.approx(ramanujan, rel=0.005)
    assert m.max_feret_diameter == pytest.approx(2 * a + 1, abs=1.0)
    assert m.asymmetry_major < 0.01 and m.asymmetry_minor < 0.01
    assert m.compactness > 1.1  # an ellipse is less compact than a disc


def test_two_blobs_count_and_asymmetry():
    # Discs of radius 30 at x=60 and 15 at x=220 on one row: symmetric about the line joining them (major axis);
    # the centroid (x = 92) is so close to the big disc that the mirror about the minor axis misses both discs.
    mask = np.maximum(disc(30, 300, cy=100, cx=60), disc(15, 300, cy=100, cx=220))[:200]
    m = measure_lesion(mask)
    assert m.components == 2
    assert m.area == mask.sum()
    assert m.asymmetry_major == pytest.approx(0, abs=1e-9)
    assert m.asymmetry_minor == pytest.approx(1.0)
    assert m.asymmetric_axes == 1
    assert m.max_feret_diameter == pytest.approx(235 - 30 + 1, abs=1.0)  # leftmost to rightmost pixel centre
    assert m.perimeter == pytest.approx(2 * math.pi * (30 + 15), rel=0.005)


def test_right_triangle_is_symmetric_about_one_axis_only():
    mask = np.zeros((200, 200), np.uint8)
    for i in range(100):
        mask[50 + i, 50 : 50 + i + 1] = 1
    m = measure_lesion(mask)
    assert min(m.asymmetry_major, m.asymmetry_minor) < 0.02  # the axis through the right angle
    assert max(m.asymmetry_major, m.asymmetry_minor) > 0.2
    assert m.asymmetric_axes == 1


def test_millimetres_scale_lengths_and_areas():
    mask = np.zeros((50, 50), np.uint8)
    mask[10:30, 10:30] = 1
    d = measure_lesion(mask).to_dict(pixel_size=0.05)
    assert d["area_mm2"] == pytest.approx(400 * 0.05**2)
    assert d["perimeter_mm"] == pytest.approx(d["perimeter"] * 0.05, abs=1e-3)
    assert d["equivalent_diameter_mm"] == pytest.approx(d["equivalent_diameter"] * 0.05, abs=1e-3)
    assert set(d) == set(MEASUREMENT_FIELDS)
    for bad in (0, -0.1, float("nan"), float("inf"), 1e3, "abc"):
        with pytest.raises(ValueError, match="pixel size"):
            measure_lesion(mask).to_dict(pixel_size=bad)
    assert check_pixel_size("0.02") == 0.02


def test_any_nonzero_value_is_lesion_and_2d_only():
    mask = np.zeros((30, 30), np.uint8)
    mask[5:15, 5:15] = 255
    assert measure_lesion(mask).area == 100
    assert measure_lesion(mask.astype(bool)).area == 100
    with pytest.raises(ValueError, match="2-D"):
        measure_lesion(np.zeros((2, 3, 3)))


def test_holes_do_not_count_in_the_perimeter():
    mask = disc(60, 160)
    holed = mask.copy()
    holed[70:90, 70:90] = 0
    assert lesion_perimeter(holed) == pytest.approx(lesion_perimeter(mask), rel=1e-6)


@pytest.mark.parametrize("r", [40, 75])
def test_a_shape_drawn_twice_as_large_measures_twice_as_long(r):
    small, large = measure_lesion(disc(r, 2 * r + 30)), measure_lesion(disc(2 * r, 4 * r + 60))
    assert large.perimeter == pytest.approx(2 * small.perimeter, rel=0.005)
    assert large.compactness == pytest.approx(small.compactness, rel=0.01)

    # A lobed shape too: its irregularity is measured at the same relative scale at both sizes.
    def lobed(scale: int) -> np.ndarray:
        yy, xx = np.mgrid[: 200 * scale, : 200 * scale] / scale
        angle = np.arctan2(yy - 100, xx - 100)
        return (np.hypot(yy - 100, xx - 100) <= 60 + 8 * np.sin(7 * angle)).astype(np.uint8)

    one, two = measure_lesion(lobed(1)), measure_lesion(lobed(2))
    assert two.perimeter == pytest.approx(2 * one.perimeter, rel=0.01)
    assert two.compactness == pytest.approx(one.compactness, rel=0.02)
    assert one.compactness > 1.1


def test_an_upsampled_mask_measures_like_the_shape_drawn_at_full_resolution():
    # A lobed lesion drawn at 768x768, and the same lesion predicted at 256x256 and resized back (nearest, the
    # coarsest a predictor could do): compactness must agree, as for a prediction and its hand-drawn ground truth.
    def lobed(size: int) -> np.ndarray:
        yy, xx = np.mgrid[:size, :size] * (768 / size)
        angle = np.arctan2(yy - 384, xx - 384)
        return (np.hypot(yy - 384, xx - 384) <= 220 + 25 * np.sin(5 * angle)).astype(np.uint8)

    native = measure_lesion(lobed(768))
    upsampled = measure_lesion(cv2.resize(lobed(256), (768, 768), interpolation=cv2.INTER_NEAREST))
    assert upsampled.compactness == pytest.approx(native.compactness, rel=0.01)
    assert upsampled.perimeter == pytest.approx(native.perimeter, rel=0.01)


def test_border_smoothing_is_checked():
    with pytest.raises(ValueError, match="border_smoothing"):
        measure_lesion(disc(10, 30), border_smoothing=-1)
