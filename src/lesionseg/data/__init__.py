"""Datasets in their official layouts, safe image reading, stored splits and joint transforms.

Everything here but :class:`SegmentationDataset` (loaded on first use, PEP 562) is numpy, OpenCV and Pillow: reading
and preparing images does not import torch.
"""

from __future__ import annotations

from typing import Any

from . import cvc, folder, isic, kvasir, montgomery, ph2  # noqa: F401  (register the layouts)
from .base import (
    LAYOUTS,
    PROBLEM_SEVERITY,
    Case,
    DataProblem,
    DatasetLayoutError,
    ScanResult,
    detect_layout,
    find_cases,
    index_images,
    list_layouts,
    load_case,
    load_case_mask,
    pair_by_id,
    read_groups_csv,
    register_layout,
    resize_pair,
    scan_cases,
)
from .cache import CACHE_VERSION, CaseCache, default_cache_dir, open_case_cache, resolve_cache_dir
from .check import BadDataError, CheckReport, check_case, check_cases, check_root, screen_cases
from .io import DEFAULT_MAX_PIXELS, ImageReadError, decode_image_bytes, decode_mask_bytes, read_image, read_mask
from .splits import (
    PROTOCOLS,
    Split,
    SplitDrawConfig,
    SplitProtocol,
    builtin_splits,
    case_groups,
    case_strata,
    ensure_split,
    kfold,
    load_split,
    make_split,
    official_split,
    protocol_splits,
    repeated_holdout,
    save_split,
    select_cases,
    split_cases,
)
from .synthetic import blob_pair, write_blob_dataset
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
    "LAYOUTS",
    "PROBLEM_SEVERITY",
    "PROTOCOLS",
    "ScanResult",
    "SegmentationDataset",
    "Split",
    "SplitDrawConfig",
    "SplitProtocol",
    "blob_pair",
    "build_train_transform",
    "builtin_splits",
    "case_groups",
    "case_strata",
    "check_case",
    "check_cases",
    "check_root",
    "decode_image_bytes",
    "default_cache_dir",
    "decode_mask_bytes",
    "detect_layout",
    "ensure_split",
    "find_cases",
    "index_images",
    "kfold",
    "list_layouts",
    "load_case",
    "load_case_mask",
    "load_split",
    "make_split",
    "official_split",
    "open_case_cache",
    "pair_by_id",
    "protocol_splits",
    "read_groups_csv",
    "read_image",
    "read_mask",
    "register_layout",
    "repeated_holdout",
    "resize_pair",
    "resolve_cache_dir",
    "save_split",
    "scan_cases",
    "screen_cases",
    "select_cases",
    "split_cases",
    "write_blob_dataset",
]


def __getattr__(name: str) -> Any:
    if name == "SegmentationDataset":
        from .dataset import SegmentationDataset

        return SegmentationDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
