"""Datasets in their official layouts, safe image reading, stored splits and joint transforms."""

from __future__ import annotations

from . import cvc, folder, isic, kvasir, montgomery, ph2  # noqa: F401  (register the layouts)
from .base import (
    Case,
    DatasetLayoutError,
    SegmentationDataset,
    detect_layout,
    find_cases,
    index_images,
    list_layouts,
    load_case,
    pair_by_id,
    register_layout,
    resize_pair,
)
from .io import ImageReadError, read_image, read_mask
from .splits import Split, builtin_splits, kfold, load_split, make_split, repeated_holdout, save_split
from .transforms import AugmentConfig, build_train_transform

__all__ = [
    "AugmentConfig",
    "Case",
    "DatasetLayoutError",
    "ImageReadError",
    "SegmentationDataset",
    "Split",
    "build_train_transform",
    "builtin_splits",
    "detect_layout",
    "find_cases",
    "index_images",
    "kfold",
    "list_layouts",
    "load_case",
    "load_split",
    "make_split",
    "pair_by_id",
    "read_image",
    "read_mask",
    "register_layout",
    "repeated_holdout",
    "resize_pair",
    "save_split",
]
