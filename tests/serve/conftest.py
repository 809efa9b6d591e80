"""Fixtures for the server tests: a predictor (the shipped skin model, else a tiny one trained here), images, and the
app under a real uvicorn in a thread."""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lesionseg.data.synthetic import blob_pair

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def blob_image(size: tuple[int, int] = (72, 96), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipse (the lesion) on a dark textured background: uint8 (H, W, 3) image and {0, 1} mask."""
    return blob_pair(size, np.random.default_rng(seed), centre=(0.35, 0.65), radii=(0.15, 0.3))


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


@contextlib.contextmanager
def live_server(app) -> Iterator[tuple[str, int]]:
    """Run ``app`` under uvicorn in a thread on a socket bound here (no race for the port); yields (host, port)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
