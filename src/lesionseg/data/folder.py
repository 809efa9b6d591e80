"""Generic layout: ``images/`` and ``masks/`` folders paired by file stem.

A mask may carry one of the suffixes ``_mask``, ``_segmentation``, ``_Segmentation``, ``_gt`` after the image's stem.
Masks are thresholded at 0 (any non-zero value is lesion) unless they are JPEGs, which are thresholded at 127.
"""

from __future__ import annotations

from pathlib import Path

from .base import Case, DatasetLayoutError, index_images, pair_by_id, register_layout

__all__ = ["find_folder_cases", "MASK_SUFFIXES"]

MASK_SUFFIXES = ("_mask", "_segmentation", "_Segmentation", "_gt")


def _detect(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "masks").is_dir()


@register_layout("folder", _detect, "generic: images/<id>.* + masks/<id>[_mask|_segmentation|_gt].*")
def find_folder_cases(root: Path) -> list[Case]:
    """Cases of an ``images/`` + ``masks/`` folder pair."""
    if not _detect(root):
        raise DatasetLayoutError(f"{root}: expected images/ and masks/ folders")
    images = index_images(root / "images")
    masks = index_images(root / "masks", MASK_SUFFIXES)
    jpeg = all(p.suffix.lower() in (".jpg", ".jpeg") for p in masks.values()) and bool(masks)
    return pair_by_id(images, masks, 127 if jpeg else 0)
