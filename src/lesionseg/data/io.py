"""Safe image and mask reading: every failure names the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageReadError", "read_image", "read_mask", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


class ImageReadError(ValueError):
    """An image or mask file that cannot be used; the message names the file and the problem."""


def _open(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from err
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception as err:  # a corrupt EXIF block must not hide the image itself
        raise ImageReadError(f"{path}: bad EXIF orientation data ({err})") from err


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    arr = arr.astype(np.float64)
    hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
    return np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Read an image as uint8 (H, W, channels), EXIF orientation applied.

    Accepts RGB, RGBA (alpha dropped), grayscale, 16-bit and palette images.

    Args:
        path: image file.
        channels: 3 for RGB output, 1 for grayscale output.

    Raises:
        ImageReadError: the file is missing, unreadable or empty.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img = _open(path)
    if img.width == 0 or img.height == 0:
        raise ImageReadError(f"{path}: image has zero size")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = _to_uint8(np.asarray(img))
        arr = np.repeat(arr[..., None], 3, axis=2) if channels == 3 else arr[..., None]
        return np.ascontiguousarray(arr)
    img = img.convert("RGB" if channels == 3 else "L")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path, threshold: int = 0) -> np.ndarray:
    """Read a binary mask as uint8 (H, W) of {0, 1}, EXIF orientation applied.

    A pixel is lesion when any channel of its value exceeds ``threshold`` (0 for clean masks; 127 for masks
    stored with lossy compression, e.g. Kvasir-SEG's JPEGs). Palette masks are read by palette index.

    Raises:
        ImageReadError: the file is missing or unreadable.
    """
    img = _open(path)
    if img.mode in ("P", "1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img)
    else:
        arr = np.asarray(img.convert("RGB")).max(axis=2)
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: mask must be 2-D after conversion, got shape {arr.shape}")
    return (arr > threshold).astype(np.uint8)
