"""Lesion measurements from a binary mask: size, shape, asymmetry and border, in pixels or millimetres.

Conventions (pixel units; multiply by the pixel size for millimetres, its square for areas):

- ``area``: number of foreground pixels.
- ``perimeter``: summed length of the outer borders of every component, measured at a smoothing scale tied to the
  lesion's size, not to the pixel grid (:func:`lesion_perimeter`): holes are filled, the mask is blurred with a
  Gaussian of standard deviation ``border_smoothing`` (2 %) of its equivalent diameter (at least one pixel), and the
  perimeter is the length of the blurred mask's 0.5 level line (marching squares, linear interpolation). A disc of
  radius r measures 2 pi r within 0.5 %, an s x s square (s >= 40) 4 s less 2 % (the blur rounds its corners), and
  a shape drawn twice as large measures twice as long, so compactness does not depend on the resolution.

  Why this scale: a predicted mask is resized up from the model's working size (e.g. 256x256) and carries no border
  detail finer than one working pixel (3 image pixels for a 768x576 image), while its ground truth is drawn by hand at
  the image's own resolution. Traced pixel by pixel, the upsampled border's zigzag alone doubled the compactness of
  predicted masks (PH2 test ids, mean 3.67 against 1.47 on their ground truth). Any fixed tolerance in pixels measures
  the two differently as soon as the image size or the working size changes; a scale relative to the lesion measures
  the shape, whatever grid it was drawn on. At 2 % the mean compactness of the shipped skin model's masks agrees with
  the ground truth's within 1 % on the PH2 test ids, and border irregularity coarser than that (lobes, notches) still
  counts.
- ``equivalent_diameter``: diameter of the disc of the same area, sqrt(4 area / pi).
- ``max_feret_diameter``: largest distance between two foreground pixel centres (over the convex hull), plus one
  pixel so that a run of n pixels measures n.
- ``asymmetry_major`` / ``asymmetry_minor``: the fraction of the lesion that does not overlap its mirror image about
  the major / minor principal axis through the centroid (axes from the second moments, as the A of dermoscopy's ABCD
  rule): 0 for a shape symmetric about that axis, up to 1. ``asymmetric_axes`` counts the axes above
  ``asymmetry_tolerance``.
- ``compactness``: border irregularity perimeter^2 / (4 pi area): 1 for a disc, larger for ragged borders.
- ``components``: number of 8-connected foreground components.

An empty mask gives zeros (and ``components == 0``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

__all__ = [
    "BORDER_SMOOTHING",
    "LesionMeasurements",
    "MEASUREMENT_FIELDS",
    "check_pixel_size",
    "lesion_perimeter",
    "measure_lesion",
]

#: Gaussian smoothing of the border before its length is measured, as a fraction of the lesion's equivalent diameter.
BORDER_SMOOTHING = 0.02

_LENGTHS = ("perimeter", "equivalent_diameter", "max_feret_diameter")


@dataclass(frozen=True)
class LesionMeasurements:
    """Measurements of one mask; lengths in pixels, area in pixels^2 (see the module docstring)."""

    area: float
    perimeter: float
    equivalent_diameter: float
    max_feret_diameter: float
    asymmetry_major: float
    asymmetry_minor: float
    asymmetric_axes: int
    compactness: float
    components: int

    def to_dict(self, pixel_size: float | None = None, digits: int = 4) -> dict[str, float | int]:
        """Plain values; with ``pixel_size`` (mm per pixel) also ``area_mm2`` and ``<length>_mm`` fields."""
        out: dict[str, float | int] = {
            k: (round(v, digits) if isinstance(v, float) else v) for k, v in asdict(self).items()
        }
        if pixel_size is not None:
            pixel_size = check_pixel_size(pixel_size)
            out["area_mm2"] = round(self.area * pixel_size**2, digits)
            for name in _LENGTHS:
                out[f"{name}_mm"] = round(getattr(self, name) * pixel_size, digits)
        return out


MEASUREMENT_FIELDS = tuple(LesionMeasurements.__dataclass_fields__) + ("area_mm2",) + tuple(f"{n}_mm" for n in _LENGTHS)


def check_pixel_size(pixel_size: float) -> float:
    """The pixel size (millimetres per pixel) as a float, or ``ValueError`` saying why it is refused.

    Refused: zero, negative, not finite, or 1000 mm and above (no image of a lesion has metre-sized pixels: such a
    value is a unit mistake).
    """
    try:
        value = float(pixel_size)
    except (TypeError, ValueError):
        raise ValueError(f"pixel size must be a number of millimetres per pixel, got {pixel_size!r}") from None
    if not (math.isfinite(value) and 0.0 < value < 1e3):
        raise ValueError(f"pixel size must be a positive number of millimetres per pixel below 1000, got {pixel_size}")
    return value


def _level_line_length(field: np.ndarray, level: float = 0.5) -> float:
    """Length of the ``level`` line of a 2-D field sampled at pixel centres (marching squares, linear interpolation).

    Only the length is needed, so segments are summed cell by cell and never linked into contours. A saddle cell
    (four crossings) joins the corners on the side of its centre value, the usual disambiguation.
    """
    a, b, c, d = field[:-1, :-1], field[:-1, 1:], field[1:, 1:], field[1:, :-1]  # corners clockwise from top left
    above = [x >= level for x in (a, b, c, d)]
    crossings = [above[0] != above[1], above[1] != above[2], above[3] != above[2], above[0] != above[3]]
    count = sum(x.astype(np.int8) for x in crossings)
    cells = np.nonzero(count)
    a, b, c, d = a[cells], b[cells], c[cells], d[cells]
    top, right, bottom, left = (x[cells] for x in crossings)
    count = count[cells]
    one, zero = np.ones_like(a), np.zeros_like(a)
    with np.errstate(divide="ignore", invalid="ignore"):  # edges without a crossing give inf/NaN, never used
        points = {
            "t": (np.stack([(level - a) / (b - a), zero], -1), top),
            "r": (np.stack([one, (level - b) / (c - b)], -1), right),
            "b": (np.stack([(level - d) / (c - d), one], -1), bottom),
            "l": (np.stack([zero, (level - a) / (d - a)], -1), left),
        }

    def segment(p: str, q: str) -> np.ndarray:
        (pp, has_p), (qq, has_q) = points[p], points[q]
        return np.where(has_p & has_q, np.hypot(*(pp - qq).T), 0.0)

    two = count == 2
    total = sum(float(segment(p, q)[two].sum()) for p, q in ("tr", "tb", "tl", "rb", "rl", "bl"))
    four = count == 4
    if four.any():
        joins_a = ((a + b + c + d) / 4 >= level) == (a >= level)  # centre on a's side: cut off corners b and d
        pairs = np.where(joins_a, segment("t", "r") + segment("b", "l"), segment("l", "t") + segment("r", "b"))
        total += float(pairs[four].sum())
    return total


def lesion_perimeter(mask: np.ndarray, border_smoothing: float = BORDER_SMOOTHING) -> float:
    """Perimeter in pixels of the outer borders of a mask's foreground at a smoothing scale relative to its size.

    Holes are filled; the mask is blurred with a Gaussian of standard deviation ``border_smoothing`` times its
    equivalent diameter (at least one pixel, below which the pixel staircase would count); the perimeter is the
    length of the blurred mask's 0.5 level line. See the module docstring for why.

    Args:
        mask: binary mask (H, W); any non-zero value is lesion.
        border_smoothing: standard deviation of the blur as a fraction of the equivalent diameter.
    """
    if not (math.isfinite(border_smoothing) and border_smoothing >= 0):
        raise ValueError(f"border_smoothing must be a fraction >= 0 of the lesion's diameter, got {border_smoothing}")
    binary = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    if binary.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {binary.shape}")
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0
    # Holes filled: the outer borders only. Drawn into the lesion's bounding box, padded with background so that a
    # border on the image edge closes there.
    x0, y0, w, h = cv2.boundingRect(np.concatenate(contours))
    filled = np.zeros((h, w), np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED, offset=(-x0, -y0))
    sigma = max(border_smoothing * math.sqrt(4 * int(filled.sum()) / math.pi), 1.0)
    # A wide blur is computed on a grid q times coarser (q <= sigma / 2, area averaging): the blurred mask varies
    # over sigma, so the coarse grid keeps its level line (to 0.2 %) at a fraction of the cost. The box average adds
    # q^2 / 12 to the Gaussian's variance, taken off.
    q = max(1, int(sigma // 2))
    pad = int(math.ceil(4 * sigma)) + 2 * q
    field = np.pad(filled.astype(np.float32), ((pad, pad + (-(h + 2 * pad)) % q), (pad, pad + (-(w + 2 * pad)) % q)))
    if q > 1:
        field = cv2.resize(field, (field.shape[1] // q, field.shape[0] // q), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(field, (0, 0), math.sqrt(sigma**2 - q**2 / 12) / q, borderType=cv2.BORDER_CONSTANT)
    return q * _level_line_length(blurred)


def _mirror_asymmetry(mask: np.ndarray, area: int, cx: float, cy: float, axis: np.ndarray) -> float:
    """Fraction of the foreground whose mirror image about the line through (cx, cy) along ``axis`` is background."""
    ux, uy = float(axis[0]), float(axis[1])
    # Reflection about a line through c with unit direction u: p' = c + (2 u u^T - I)(p - c); it is its own inverse.
    r = np.array([[2 * ux * ux - 1, 2 * ux * uy], [2 * ux * uy, 2 * uy * uy - 1]])
    t = np.array([cx, cy]) - r @ np.array([cx, cy])
    mirrored = cv2.warpAffine(mask, np.hstack([r, t[:, None]]), mask.shape[::-1], flags=cv2.INTER_NEAREST)
    overlap = cv2.countNonZero(cv2.bitwise_and(mask, mirrored))
    return 1.0 - overlap / area


def measure_lesion(
    mask: np.ndarray, asymmetry_tolerance: float = 0.1, border_smoothing: float = BORDER_SMOOTHING
) -> LesionMeasurements:
    """Measure the foreground of a {0, 1} (or boolean, or {0, 255}) mask (H, W).

    ``lesionseg predict``, the web API and this function measure with the same defaults, so one mask gives one set of
    numbers whichever way it is measured.

    Args:
        mask: binary mask; any non-zero value is lesion.
        asymmetry_tolerance: mirror mismatch above which an axis counts as asymmetric.
        border_smoothing: smoothing of the border before its length is measured, as a fraction of the lesion's
            equivalent diameter (see :func:`lesion_perimeter`).
    """
    mask = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    area = int(mask.sum())
    if area == 0:
        return LesionMeasurements(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, 0)
    components = cv2.connectedComponents(mask, connectivity=8)[0] - 1
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = lesion_perimeter(mask, border_smoothing)
    points = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if len(hull) > 1:
        diffs = hull[:, None, :] - hull[None, :, :]
        feret = float(np.sqrt((diffs**2).sum(-1)).max()) + 1.0
    else:
        feret = 1.0
    m = cv2.moments(mask, binaryImage=True)
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / m["m00"]
    _, eigvecs = np.linalg.eigh(cov)  # ascending eigenvalues: column 1 is the major axis (x, y)
    asym_major = _mirror_asymmetry(mask, area, cx, cy, eigvecs[:, 1])
    asym_minor = _mirror_asymmetry(mask, area, cx, cy, eigvecs[:, 0])
    compactness = perimeter**2 / (4 * math.pi * area) if perimeter > 0 else 0.0
    return LesionMeasurements(
        area=float(area),
        perimeter=perimeter,
        equivalent_diameter=math.sqrt(4 * area / math.pi),
        max_feret_diameter=feret,
        asymmetry_major=asym_major,
        asymmetry_minor=asym_minor,
        asymmetric_axes=int(asym_major > asymmetry_tolerance) + int(asym_minor > asymmetry_tolerance),
        compactness=compactness,
        components=int(components),
    )
