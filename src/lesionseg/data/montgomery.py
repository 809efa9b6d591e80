"""Montgomery County chest X-ray set, lung-field masks (Jaeger et al., "Two public chest X-ray datasets for
computer-aided screening of pulmonary diseases", Quant. Imaging Med. Surg. 2014; Candemir et al., IEEE TMI 2014).

Official layout (138 posterior-anterior radiographs, 4020 x 4892 or 4892 x 4020, grayscale PNG)::

    MontgomerySet/
      CXR_png/MCUCXR_xxxx_y.png              (y = 0 normal, 1 tuberculosis)
      ManualMask/leftMask/MCUCXR_xxxx_y.png  (left lung, 0/255)
      ManualMask/rightMask/MCUCXR_xxxx_y.png (right lung, 0/255)
      ClinicalReadings/MCUCXR_xxxx_y.txt     (unused)

The root may be ``MontgomerySet`` or its parent. The segmentation target is the union of both lungs: ``Case.mask`` is
the left-lung mask and ``meta["extra_masks"]`` holds the right-lung mask, which :func:`~lesionseg.data.base.load_case`
OR-combines with it. Masks are paired with the radiograph by id, never by listing order; an image without either mask
is an error naming the image. ``meta["tuberculosis"]`` is the 0/1 label of the file name (usable for stratification).
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import Case, DataProblem, DatasetLayoutError, index_images, register_layout, report_layout_problems

__all__ = ["find_montgomery_cases"]

_IMAGES = "CXR_png"
_LEFT = Path("ManualMask") / "leftMask"
_RIGHT = Path("ManualMask") / "rightMask"
_ID = re.compile(r"MCUCXR_\d+_([01])")


def _base(root: Path) -> Path | None:
    for candidate in (root, root / "MontgomerySet"):
        if (candidate / _IMAGES).is_dir() and (candidate / "ManualMask").is_dir():
            return candidate
    return None


@register_layout(
    "montgomery",
    lambda root: _base(root) is not None,
    "Montgomery CXR: MontgomerySet/CXR_png + ManualMask/{leftMask,rightMask} (mask = union of both lungs)",
)
def find_montgomery_cases(root: Path) -> list[Case]:
    """Montgomery cases: radiograph, left-lung mask, right-lung mask in ``meta["extra_masks"]``."""
    base = _base(root)
    if base is None:
        raise DatasetLayoutError(f"{root}: no {_IMAGES}/ and ManualMask/ folders (Montgomery layout)")
    for sub in (_LEFT, _RIGHT):
        if not (base / sub).is_dir():
            raise DatasetLayoutError(f"{base / sub}: lung mask folder missing (Montgomery layout)")
    images = index_images(base / _IMAGES)
    left, right = index_images(base / _LEFT), index_images(base / _RIGHT)
    cases = []
    for cid in sorted(images):
        absent = [
            DataProblem(
                "image_without_mask", images[cid], f"{images[cid]}: no {side}-lung mask {base / folder / cid}.png", cid
            )
            for side, folder, masks in (("left", _LEFT, left), ("right", _RIGHT, right))
            if cid not in masks
        ]
        if absent:
            report_layout_problems(absent, absent[0].message)
            continue
        meta: dict[str, object] = {"extra_masks": (right[cid],)}
        m = _ID.fullmatch(cid)
        if m:
            meta["tuberculosis"] = int(m.group(1))
        cases.append(Case(id=cid, image=images[cid], mask=left[cid], meta=meta))
    orphans = sorted((set(left) | set(right)) - set(images))
    report_layout_problems(
        [
            DataProblem(
                "mask_without_image",
                (left.get(i) or right[i]),
                f"{left.get(i) or right[i]}: no image for mask id {i!r}",
                i,
            )
            for i in orphans
        ],
        None,
    )
    return cases
