"""Kvasir-SEG polyp dataset (Jha et al., MMM 2020).

Official layout: ``Kvasir-SEG/images/<id>.jpg`` and ``Kvasir-SEG/masks/<id>.jpg`` with the same names. The masks are
JPEGs with compression noise, so they are thresholded at 127. The root may be ``Kvasir-SEG`` or its parent.
"""

from __future__ import annotations

from pathlib import Path

from .base import Case, DatasetLayoutError, index_images, pair_by_id, register_layout

__all__ = ["find_kvasir_cases", "JPEG_MASK_THRESHOLD"]

JPEG_MASK_THRESHOLD = 127


def _base(root: Path) -> Path | None:
    for candidate in (root / "Kvasir-SEG", root):
        if (candidate / "images").is_dir() and (candidate / "masks").is_dir() and candidate.name == "Kvasir-SEG":
            return candidate
    return None


@register_layout("kvasir_seg", lambda root: _base(root) is not None, "Kvasir-SEG: Kvasir-SEG/{images,masks}/<id>.jpg")
def find_kvasir_cases(root: Path) -> list[Case]:
    """Kvasir-SEG cases, paired by file stem, masks thresholded at 127."""
    base = _base(root)
    if base is None:
        raise DatasetLayoutError(f"{root}: no Kvasir-SEG/images and Kvasir-SEG/masks folders")
    return pair_by_id(
        index_images(base / "images"),
        index_images(base / "masks"),
        JPEG_MASK_THRESHOLD,
        missing_hint=f"expected {base / 'masks'}/<id>.jpg",
    )
