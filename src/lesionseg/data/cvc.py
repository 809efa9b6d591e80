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

The 612 frames come from 29 colonoscopy video sequences, numbered consecutively: every case of a frame numbered 1..612
gets ``group = "seqNN"`` (:func:`cvc_sequence`), so that grouped splits keep the near-identical frames of one
sequence on one side.
"""

from __future__ import annotations

import bisect
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

__all__ = ["find_cvc_clinicdb_cases", "CVC_MASK_THRESHOLD", "CVC_SEQUENCE_ENDS", "cvc_sequence"]

CVC_MASK_THRESHOLD = 127

# Last frame number of each of the 29 sequences (sequence k holds frames CVC_SEQUENCE_ENDS[k-2] + 1 ..
# CVC_SEQUENCE_ENDS[k-1]). The frame -> sequence correspondence is published with the dataset on its page
# (https://polyp.grand-challenge.org/CVCClinicDB/); we could not read that page ourselves and took the ranges from two
# independent public transcriptions that agree range for range: the Dataset Ninja page of CVC-612
# (https://datasetninja.com/cvc-612), as transcribed in a public CVC sequence-split module, and a public ClinicDB
# grouped-manifest builder that cites the grand-challenge page. The ranges are contiguous and cover 1..612 exactly
# (checked by a test). Anyone holding a different correspondence can pass it as a CSV: `data split --group-by FILE.csv`.
CVC_SEQUENCE_ENDS = (
    25, 50, 67, 78, 103, 126, 151, 177, 199, 205, 227, 252, 277, 297, 317,
    342, 363, 383, 408, 428, 447, 466, 478, 503, 528, 546, 571, 591, 612,
)  # fmt: skip

_IMAGES, _MASKS = "Original", "Ground Truth"


def _base(root: Path) -> Path | None:
    for top in (root, root / "CVC-ClinicDB"):
        for candidate in (top, top / "PNG", top / "TIF"):
            if (candidate / _IMAGES).is_dir() and (candidate / _MASKS).is_dir():
                return candidate
    return None


def cvc_sequence(frame: int | str) -> str | None:
    """The sequence (``seq01`` .. ``seq29``) of a CVC-ClinicDB frame number, None for a number outside 1..612."""
    text = str(frame)
    if not text.isdigit() or not 1 <= int(text) <= CVC_SEQUENCE_ENDS[-1]:
        return None
    return f"seq{bisect.bisect_left(CVC_SEQUENCE_ENDS, int(text)) + 1:02d}"


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
    """CVC-ClinicDB cases, frames and masks paired by number, masks thresholded at 127, grouped by sequence."""
    base = _base(root)
    if base is None:
        raise DatasetLayoutError(
            f"{root}: no '{_IMAGES}' and '{_MASKS}' folders (CVC-ClinicDB layout; also looked under CVC-ClinicDB/, "
            "PNG/ and TIF/)"
        )
    return pair_by_id(_by_number(base / _IMAGES), _by_number(base / _MASKS), CVC_MASK_THRESHOLD, group=cvc_sequence)
