"""Shared fixtures: a tiny synthetic dataset in the generic layout, and the real data root when present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lesionseg.data.synthetic import write_blob_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def make_blobs():
    return write_blob_dataset


@pytest.fixture
def blob_root(tmp_path: Path) -> Path:
    return write_blob_dataset(tmp_path / "blobs")


@pytest.fixture
def blob_split(blob_root: Path) -> Path:
    ids = sorted(p.stem for p in (blob_root / "images").iterdir())
    path = blob_root.parent / "split.json"
    path.write_text(json.dumps({"info": {}, "train": ids[:8], "val": ids[8:10], "test": ids[10:]}))
    return path


@pytest.fixture
def tiny_config(blob_root: Path, blob_split: Path, tmp_path: Path) -> dict:
    """A config mapping that trains a 3-stage 4-channel U-Net on the blobs in a second."""
    return {
        "data": {
            "layout": "folder",
            "root": str(blob_root),
            "split": str(blob_split),
            "image_size": [32, 32],
            "batch_size": 4,
        },
        "model": {"name": "unet_small", "kwargs": {"channels": [4, 8, 16]}},
        "optim": {"lr": 0.01},
        "train": {"epochs": 2, "out_dir": str(tmp_path / "runs"), "name": "tiny", "threads": 1},
    }


@pytest.fixture
def ph2_root() -> Path:
    root = SHARED_DATA / "ph2"
    if not root.is_dir():
        pytest.skip("real PH2 data not present at ../shared/data/ph2")
    return root
