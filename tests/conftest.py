"""Shared fixtures: a tiny synthetic dataset in the generic layout, and the real data root when present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def make_blob_dataset(root: Path, n: int = 12, size: int = 40, seed: int = 0) -> Path:
    """``images/`` + ``masks/`` of random bright ellipses on a dark textured background."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        ry, rx = rng.uniform(0.12, 0.3, 2) * size
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img = rng.integers(0, 60, (size, size, 3))
        img[mask] += np.array([150, 90, 40])
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"case{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"case{i:03d}.png")
    return root


@pytest.fixture
def make_blobs():
    return make_blob_dataset


@pytest.fixture
def blob_root(tmp_path: Path) -> Path:
    return make_blob_dataset(tmp_path / "blobs")


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
