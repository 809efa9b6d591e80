"""A synthetic dataset in the generic ``images/ + masks/`` layout: bright ellipses ("lesions") on dark texture.

Used by the tests (a model must learn it in a few steps), by ``perf/gpu_check.py`` (a dataset that needs no download
on a bare GPU machine) and by anyone trying the package without data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["blob_pair", "write_blob_dataset"]


def blob_pair(
    shape: tuple[int, int],
    rng: np.random.Generator,
    centre: tuple[float, float] = (0.3, 0.7),
    radii: tuple[float, float] = (0.12, 0.3),
) -> tuple[np.ndarray, np.ndarray]:
    """One image and its mask: uniform noise in [0, 60) with one ellipse brightened by (150, 90, 40).

    Args:
        shape: (H, W).
        rng: the generator (draws centre, radii, then the noise).
        centre: range of the ellipse's centre, as fractions of (H, W).
        radii: range of its radii, as fractions of (H, W).

    Returns:
        uint8 image (H, W, 3) and {0, 1} uint8 mask (H, W).
    """
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(*centre, 2) * (h, w)
    ry, rx = rng.uniform(*radii, 2) * (h, w)
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img = rng.integers(0, 60, (h, w, 3))
    img[mask] += np.array([150, 90, 40])
    return np.clip(img, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def write_blob_dataset(root: str | Path, n: int = 12, size: int = 40, seed: int = 0) -> Path:
    """Write ``n`` RGB images and their binary masks under ``root/images`` and ``root/masks``.

    Each image is a :func:`blob_pair` of ``size`` x ``size`` (centre in the middle 40%, radii 12-30% of the size); the
    mask PNG is that ellipse (0 / 255). Case ids are ``case000``,
    ``case001``, ... (zero-padded to at least three digits, so they sort in order). The same ``seed`` gives the same
    files.

    Args:
        root: folder to create (parents too); existing files of the same names are overwritten.
        n: number of cases (>= 1).
        size: image side in pixels (>= 8).
        seed: seed of the generator.

    Returns:
        ``root`` as a Path.

    Raises:
        ValueError: ``n`` < 1 or ``size`` < 8.
    """
    if n < 1 or size < 8:
        raise ValueError(f"write_blob_dataset needs n >= 1 and size >= 8, got n={n}, size={size}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(n - 1)))
    for i in range(n):
        image, mask = blob_pair((size, size), rng)
        name = f"case{i:0{width}d}.png"
        Image.fromarray(image).save(root / "images" / name)
        Image.fromarray(mask * 255).save(root / "masks" / name)
    return root
