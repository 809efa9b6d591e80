"""Datasets in their official layouts, safe image reading, stored splits and joint transforms."""

from __future__ import annotations

from . import cvc, folder, isic, kvasir, montgomery, ph2  # noqa: F401  (register the layouts)
from .base import (
    PROBLEM_SEVERITY,
    Case,
    DataProblem,
    DatasetLayoutError,
    ScanResult,
    SegmentationDataset,
    detect_layout,
    find_cases,
    index_images,
    list_layouts,
    load_case,
    pair_by_id,
    register_layout,
    resize_pair,
    scan_cases,
)
from .cache import CACHE_VERSION, CaseCache, default_cache_dir, open_case_cache, resolve_cache_dir
from .check import BadDataError, CheckReport, check_case, check_cases, check_root, screen_cases
from .io import DEFAULT_MAX_PIXELS, ImageReadError, decode_image_bytes, decode_mask_bytes, read_image, read_mask
from .splits import Split, builtin_splits, kfold, load_split, make_split, repeated_holdout, save_split
from .transforms import AugmentConfig, build_train_transform

__all__ = [
    "AugmentConfig",
    "BadDataError",
    "CACHE_VERSION",
    "Case",
    "CaseCache",
    "CheckReport",
    "DEFAULT_MAX_PIXELS",
    "DataProblem",
    "DatasetLayoutError",
    "ImageReadError",
    "PROBLEM_SEVERITY",
    "ScanResult",
    "SegmentationDataset",
    "Split",
    "build_train_transform",
    "builtin_splits",
    "check_case",
    "check_cases",
    "check_root",
    "decode_image_bytes",
    "default_cache_dir",
    "decode_mask_bytes",
    "detect_layout",
    "find_cases",
    "index_images",
    "kfold",
    "list_layouts",
    "load_case",
    "load_split",
    "make_split",
    "open_case_cache",
    "pair_by_id",
    "read_image",
    "read_mask",
    "register_layout",
    "repeated_holdout",
    "resize_pair",
    "resolve_cache_dir",
    "save_split",
    "scan_cases",
    "screen_cases",
]
