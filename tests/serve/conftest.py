"""Fixtures for the server tests: a predictor (the shipped skin model, else a tiny one trained here) and images."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def blob_image(size: tuple[int, int] = (72, 96), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipse (the lesion) on a dark textured background: uint8 (H, W, 3) image and {0, 1} mask."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.35, 0.65, 2) * (h, w)
    ry, rx = rng.uniform(0.15, 0.3, 2) * (h, w)
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img = rng.integers(0, 60, (h, w, 3))
    img[mask] += np.array([150, 90, 40])
    return np.clip(img, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def encode(image: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of zeros: a few kilobytes that decode to width x height pixels."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 256) for _ in range(height // 256)]
    parts += [comp.compress(row * (height % 256)), comp.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def _tiny_checkpoint(stem: Path) -> Path:
    """Train a 3-stage U-Net on synthetic blobs for a few steps and save it as a checkpoint (as the trainer does)."""
    from lesionseg.data.base import channel_stats, normalize_image
    from lesionseg.models import create_model
    from lesionseg.models.hub import ModelRecord, save_checkpoint

    torch.manual_seed(0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    record = ModelRecord(
        model="unet_small", model_kwargs={"channels": [4, 8, 16]}, image_size=(64, 64), mean=mean, std=std
    )
    model = create_model("unet_small", channels=(4, 8, 16))
    pairs = [blob_image((64, 64), seed) for seed in range(16)]
    stats = channel_stats(mean, std, 3)
    x = torch.from_numpy(np.stack([normalize_image(im, *stats) for im, _ in pairs]))
    y = torch.from_numpy(np.stack([m[None] for _, m in pairs]).astype(np.float32))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        opt.step()
    return save_checkpoint(stem, model.eval(), record)


@pytest.fixture(scope="session")
def model_stem(tmp_path_factory) -> str:
    """The shipped skin model's tag when the package has it, else a tiny checkpoint trained for the tests."""
    from lesionseg.models.hub import list_pretrained

    if "skin" in list_pretrained():
        return "skin"
    return str(_tiny_checkpoint(tmp_path_factory.mktemp("serve_model") / "skin" / "best"))


@pytest.fixture(scope="session")
def predictor(model_stem: str):
    from lesionseg.inference import Predictor

    return Predictor.from_checkpoint(model_stem)


@pytest.fixture
def ph2_image() -> Path:
    """One PH2 dermoscopy image (skips when the real data is absent)."""
    root = SHARED_DATA / "ph2"
    if not root.is_dir():
        pytest.skip("real PH2 data not present at ../shared/data/ph2")
    from lesionseg.data.ph2 import find_ph2_cases

    cases = find_ph2_cases(root)
    if not cases:
        pytest.skip("no PH2 cases found")
    return Path(cases[0].image).resolve()
