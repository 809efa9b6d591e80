"""Fuzzing the readers: seeded mutations of valid PNG, JPEG, BMP, TIFF, GIF and WebP bytes.

Every mutated file must end as an array or as an :class:`ImageReadError`, never as any other exception, and each
within a time bound. A hang cannot be caught from Python while a decoder runs C code, so a faulthandler watchdog
kills the process with every thread's traceback if the whole run takes far longer than it should.
"""

from __future__ import annotations

import faulthandler
import io
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lesionseg.data.io import ImageReadError, decode_image_bytes, decode_mask_bytes

# (format, save options) of the seeds: several encoders per container, so the mutations reach several decoders.
SEEDS: tuple[tuple[str, str, dict], ...] = (
    ("png", "RGB", {}),
    ("png", "P", {}),
    ("png", "I;16", {}),
    ("jpeg", "RGB", {"quality": 90}),
    ("jpeg", "L", {"quality": 75, "progressive": True}),
    ("bmp", "RGB", {}),
    ("bmp", "P", {}),
    ("tiff", "RGB", {}),
    ("tiff", "RGB", {"compression": "tiff_lzw"}),
    ("tiff", "L", {"compression": "packbits"}),
    ("gif", "P", {}),
    ("webp", "RGB", {"quality": 80}),
    ("webp", "RGB", {"lossless": True}),
)
FORMATS = ("png", "jpeg", "bmp", "tiff", "gif", "webp")
MUTATIONS = ("truncate", "bitflip", "header", "duplicate", "splice_size")
# Per-case bound: a 40x32 image decodes in well under a millisecond; this only catches pathological loops.
CASE_SECONDS = 2.0


def seed_bytes(fmt: str, mode: str, options: dict, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    h, w = 32, 40
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 6, yy * 8, (xx + yy) * 3], axis=2).astype(np.uint8)
    base = np.clip(base.astype(int) + rng.integers(0, 20, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(base)
    if mode == "P":
        img = img.quantize(16)
    elif mode == "L":
        img = img.convert("L")
    elif mode == "I;16":
        img = Image.fromarray((base[..., 0].astype(np.uint16) * 257).astype(np.uint16))
    buf = io.BytesIO()
    img.save(buf, format=fmt.upper(), **options)
    return buf.getvalue()


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One seeded mutation of ``data``."""
    b = bytearray(data)
    n = len(b)
    if kind == "truncate":
        return bytes(b[: int(rng.integers(0, n))])
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(0, n))
            b[pos] ^= 1 << int(rng.integers(0, 8))
        return bytes(b)
    if kind == "header":
        # Overwrite bytes of the first 64 (where every format keeps its sizes, depths and offsets) with extremes.
        for _ in range(int(rng.integers(1, 5))):
            pos = int(rng.integers(0, min(64, n)))
            b[pos] = int(rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, int(rng.integers(0, 256))]))
        return bytes(b)
    if kind == "duplicate":
        start = int(rng.integers(0, n))
        length = int(rng.integers(1, max(2, min(512, n - start))))
        at = int(rng.integers(0, n))
        return bytes(b[:at] + b[start : start + length] * int(rng.integers(1, 4)) + b[at:])
    if kind == "splice_size":
        # A 16/32-bit field set to a large value, both byte orders: declared sizes, counts and offsets.
        pos = int(rng.integers(0, min(48, max(1, n - 4))))
        width = int(rng.choice([2, 4]))
        value = int(rng.choice([0xFFFF, 0x7FFF, 30000, 0x7FFFFFFF, 0xFFFFFFFF])) & ((1 << (8 * width)) - 1)
        order = "big" if rng.random() < 0.5 else "little"
        b[pos : pos + width] = value.to_bytes(width, order)
        return bytes(b)
    raise ValueError(kind)


def run_fuzz(cases_per_seed_and_mutation: int, seed: int = 0) -> dict:
    """Decode mutated bytes; returns counts by outcome and by format, the slowest case and the total time."""
    rng = np.random.default_rng(seed)
    outcome: Counter = Counter()
    by_format: Counter = Counter()
    others: list[str] = []
    slowest = 0.0
    start = time.perf_counter()
    for k, (fmt, mode, options) in enumerate(SEEDS):
        data = seed_bytes(fmt, mode, options, seed=k)
        for kind in MUTATIONS:
            for j in range(cases_per_seed_and_mutation):
                bad = mutate(data, kind, rng)
                name = f"fuzz_{fmt}_{mode}_{kind}_{j}.{fmt}"
                t0 = time.perf_counter()
                try:
                    if j % 3 == 2:
                        out = decode_mask_bytes(bad, name, 127)
                        assert out.ndim == 2 and out.dtype == np.uint8
                    else:
                        out = decode_image_bytes(bad, name, channels=1 if j % 3 == 1 else 3)
                        assert out.ndim == 3 and out.dtype == np.uint8
                    result = "read"
                except ImageReadError as err:
                    assert name in str(err), err
                    result = "refused"
                except Exception as err:  # noqa: BLE001  (the property under test: nothing else escapes)
                    result = "other"
                    others.append(f"{name}: {type(err).__name__}: {err}")
                slowest = max(slowest, time.perf_counter() - t0)
                outcome[result] += 1
                by_format[(fmt, result)] += 1
    return {
        "outcome": dict(outcome),
        "by_format": {f"{f}/{r}": c for (f, r), c in sorted(by_format.items())},
        "others": others,
        "slowest_seconds": slowest,
        "seconds": time.perf_counter() - start,
    }


def _check(report: dict, expected: int) -> None:
    print(
        f"\nfuzz: {sum(report['outcome'].values())} cases, read {report['outcome'].get('read', 0)}, refused "
        f"{report['outcome'].get('refused', 0)}, other {report['outcome'].get('other', 0)}, "
        f"{report['seconds']:.1f} s, slowest case {report['slowest_seconds'] * 1000:.1f} ms\n{report['by_format']}"
    )
    assert sum(report["outcome"].values()) == expected
    assert report["others"] == []
    assert report["slowest_seconds"] < CASE_SECONDS
    # The corpus must exercise both ends: mutations that still decode and mutations that are refused, per format.
    for fmt in FORMATS:
        assert report["by_format"].get(f"{fmt}/refused", 0) > 0, fmt
    assert report["outcome"].get("read", 0) > 0


def test_seeds_are_valid() -> None:
    for fmt, mode, options in SEEDS:
        out = decode_image_bytes(seed_bytes(fmt, mode, options), f"seed.{fmt}")
        assert out.shape == (32, 40, 3), (fmt, mode)


def test_fuzz_readers() -> None:
    n = 40  # 13 seeds x 5 mutations x 40 = 2600 cases, well under a second
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        report = run_fuzz(n, seed=0)
    finally:
        faulthandler.cancel_dump_traceback_later()
    _check(report, len(SEEDS) * len(MUTATIONS) * n)


@pytest.mark.heavy
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzz_readers_heavy(seed: int) -> None:
    n = 2000  # 130 000 cases per seed
    faulthandler.dump_traceback_later(1200, exit=True)
    try:
        report = run_fuzz(n, seed=seed)
    finally:
        faulthandler.cancel_dump_traceback_later()
    _check(report, len(SEEDS) * len(MUTATIONS) * n)
