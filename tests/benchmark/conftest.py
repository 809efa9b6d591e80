"""A tiny benchmark on the synthetic blobs (the shared tiny U-Net config): two models x two seeds, two epochs each."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture
def bench_config(tmp_path: Path, blob_root: Path, blob_split: Path, tiny_config: dict) -> Path:
    """``bench.yaml``: unet_a and unet_b (two stages) x seeds 0, 1, fixed 2 epochs, a cross root, all figures."""
    unet = tmp_path / "unet_small.yaml"
    unet.write_text(yaml.safe_dump(tiny_config))
    bench = {
        "name": "blobs",
        "out_dir": str(tmp_path / "bench"),
        "results_dir": str(tmp_path / "results"),
        "data": {"root": str(blob_root), "layout": "folder"},
        "protocol": {"kind": "fixed", "split": str(blob_split)},
        "seeds": [0, 1],
        "precision": "fp32",
        "threads": 1,
        "models": [
            {"config": str(unet), "label": "unet_a", "epochs": 2},
            {"config": str(unet), "label": "unet_b", "epochs": 2, "set": ["model.kwargs.channels=[4, 8]"]},
        ],
        "cross": [{"name": "copy", "root": str(blob_root), "layout": "folder"}],
        "report": {
            "overlay_cases": 2,
            "feature_model": "unet_a",
            "feature_layer": "head",
            "bootstrap": 200,
            "latency_repeats": 2,
        },
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    return path
