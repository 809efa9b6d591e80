"""Generic layout: ``images/`` and ``masks/`` folders paired by file stem.

A mask may carry one of the suffixes ``_mask``, ``_segmentation``, ``_Segmentation``, ``_gt`` after the image's stem.
Masks are thresholded at 0 (any non-zero value is lesion) unless they are JPEGs, which are thresholded at 127; the
choice is made per mask file, so a folder mixing PNG and JPEG masks reads each correctly.

A ``groups.csv`` beside the two folders (columns ``id,group``, e.g. patient or lesion ids) gives the cases their
group for grouped splits (``lesionseg data split --group-by group``).
"""

from __future__ import annotations

from pathlib import Path

from .base import Case, DatasetLayoutError, index_images, pair_by_id, read_groups_csv, register_layout

__all__ = ["find_folder_cases", "mask_threshold_for", "MASK_SUFFIXES", "JPEG_MASK_THRESHOLD", "GROUPS_FILE"]

JPEG_MASK_THRESHOLD = 127
MASK_SUFFIXES = ("_mask", "_segmentation", "_Segmentation", "_gt")
GROUPS_FILE = "groups.csv"


def _detect(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "masks").is_dir()


@register_layout("folder", _detect, "generic: images/<id>.* + masks/<id>[_mask|_segmentation|_gt].*")
def find_folder_cases(root: Path) -> list[Case]:
    """Cases of an ``images/`` + ``masks/`` folder pair, grouped by ``groups.csv`` when present."""
    if not _detect(root):
        raise DatasetLayoutError(f"{root}: expected images/ and masks/ folders")
    images = index_images(root / "images")
    masks = index_images(root / "masks", MASK_SUFFIXES)
    groups = read_groups_csv(root / GROUPS_FILE) if (root / GROUPS_FILE).is_file() else {}
    return pair_by_id(
        images, masks, mask_threshold_for, missing_hint=f"{root / 'masks'}/<id>[_mask].*", group=groups.get
    )


def mask_threshold_for(path: Path) -> int:
    """127 for a JPEG mask (compression noise around 0 and 255), 0 for a lossless one."""
    return JPEG_MASK_THRESHOLD if path.suffix.lower() in (".jpg", ".jpeg") else 0
