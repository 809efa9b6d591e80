"""CVC-ClinicDB colonoscopy polyp frames (Bernal et al., "WM-DOVA maps for accurate polyp highlighting in
colonoscopy: validation vs. saliency maps from physicians", Comput. Med. Imaging Graph. 2015).

Official layout (612 frames, 384 x 288; the two official releases store them as ``.tif`` or as ``.png``)::

    CVC-ClinicDB/
      Original/<n>.tif|.png        (RGB frame, n = 1..612)
      Ground Truth/<n>.tif|.png    (polyp mask, same number)

The root may be ``CVC-ClinicDB`` or its parent. Some redistributions ship both formats side by side as
``PNG/{Original,Ground Truth}`` and ``TIF/{Original,Ground Truth}``: those are accepted too, PNG preferred when both
exist. Frames and masks are paired by number (``001.png`` pairs with ``1.tif``; the case id is the number without
leading zeros), never by listing order. The masks are meant to be 0/255 but some carry interpolation noise (values
near 0 and near 255), so they are thresholded at 127.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    Case,
    DataProblem,
    DatasetLayoutError,
    index_images,
    pair_by_id,
    register_layout,
    report_layout_problems,
)

__all__ = ["find_cvc_clinicdb_cases", "CVC_MASK_THRESHOLD"]

CVC_MASK_THRESHOLD = 127

_IMAGES, _MASKS = "Original", "Ground Truth"


def _base(root: Path) -> Path | None:
    for top in (root, root / "CVC-ClinicDB"):
        for candidate in (top, top / "PNG", top / "TIF"):
            if (candidate / _IMAGES).is_dir() and (candidate / _MASKS).is_dir():
                return candidate
    return None


def _by_number(folder: Path) -> dict[str, Path]:
    """id -> file, the id being the frame number without leading zeros (the stem when it is not a number)."""
    out: dict[str, Path] = {}
    for stem, path in index_images(folder).items():
        key = str(int(stem)) if stem.isdigit() else stem
        if key in out:
            message = f"{folder}: two files for frame {key}: {out[key].name} and {path.name}"
            report_layout_problems([DataProblem("duplicate_id", path, message, key)], message)
            continue
        out[key] = path
    return out


@register_layout(
    "cvc_clinicdb",
    lambda root: _base(root) is not None,
    "CVC-ClinicDB: CVC-ClinicDB/{Original,Ground Truth}/<n>.tif|.png",
)
def find_cvc_clinicdb_cases(root: Path) -> list[Case]:
    """CVC-ClinicDB cases, frames and masks paired by number, masks thresholded at 127."""
    base = _base(root)
    if base is None:
        raise DatasetLayoutError(
            f"{root}: no '{_IMAGES}' and '{_MASKS}' folders (CVC-ClinicDB layout; also looked under CVC-ClinicDB/, "
            "PNG/ and TIF/)"
        )
    return pair_by_id(_by_number(base / _IMAGES), _by_number(base / _MASKS), CVC_MASK_THRESHOLD)
