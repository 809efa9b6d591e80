"""Safe image and mask reading: every failure names the file and the problem.

Every reader checks the pixel count an image declares in its header against a limit *before* decoding it, so a small
file that declares 30000 x 30000 pixels (a decompression bomb) is refused without allocating its pixels. Every
exception a decoder raises on bad bytes (``OSError``, ``SyntaxError``, ``ValueError``, ``struct.error``,
``EOFError``, ``MemoryError``, Pillow's ``DecompressionBombError`` and ``DecompressionBombWarning``, ...) leaves as an
:class:`ImageReadError` naming the file; nothing else leaves a reader for a bad file.

:func:`decode_image_bytes` and :func:`decode_mask_bytes` apply the same checks to bytes held in memory (uploads).

Pillow reads every header and decodes every format, except complete 8-bit RGB or grayscale JPEGs, which OpenCV decodes
(1.5-2x faster on a 768x576 photograph, ``perf/predict_latency.py``) to the same pixels: both use libjpeg-turbo's
default (islow) IDCT and fancy upsampling, and the EXIF orientation Pillow reads from the header is applied alike. A
JPEG that does not end with its end-of-image marker (truncated, or carrying a trailer) goes to Pillow, which says
what is wrong with it; so does any JPEG OpenCV cannot decode.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

# The plugins of the accepted formats are imported by name, so that opening a file never runs ``Image.init()``, which
# imports all of Pillow's 40-odd plugins (0.1 s of a `lesionseg predict` start).
from PIL import (  # noqa: F401
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "decode_image_bytes",
    "decode_mask_bytes",
    "read_image",
    "read_mask",
    "read_mask_values",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")

# 80 megapixels: 2.6x the largest ISIC image (6748 x 4499) and 4x a Montgomery radiograph (4892 x 4020), 240 MB as
# RGB; a 30000 x 30000 bomb declares 900 megapixels. Kept under Pillow's own warning threshold (89.5 MP), so that
# Pillow never warns about an image this limit accepts.
DEFAULT_MAX_PIXELS = 80_000_000

# Decoders tried, by content (never by file extension); limiting them keeps rarely used decoders away from untrusted
# bytes. The JPEG decoder also opens MPO files (camera JPEGs with a second frame); DIB is a headerless BMP.
_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "GIF", "WEBP")

_T = TypeVar("_T")

_logger = logging.getLogger(__name__)


class ImageReadError(ValueError):
    """An image or mask file that cannot be used; the message names the file and the problem."""


def _check_max_pixels(max_pixels: int) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")


# PIL's exif_transpose, as array operations: orientation tag value -> (flip rows, flip columns, then transpose).
_ORIENTATION = {
    2: (False, True, False),
    3: (True, True, False),
    4: (True, False, False),
    5: (False, False, True),
    6: (True, False, True),
    7: (True, True, True),
    8: (False, True, True),
}


# OpenCV >= 4.10 decodes straight to RGB, which measured about twice as fast here as decoding to BGR (best of 60
# rounds: 1.8 ms against 3.1 ms for a 768x576 JPEG, Pillow 3.5 ms); older versions decode to BGR, swapped after.
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)


def _orient(arr: np.ndarray, orientation: int | None) -> np.ndarray:
    """``arr`` (H, W[, C]) displayed as its EXIF orientation says (as ``ImageOps.exif_transpose`` does)."""
    if orientation not in _ORIENTATION:
        return arr
    flip_rows, flip_cols, transpose = _ORIENTATION[orientation]
    out = arr[::-1] if flip_rows else arr
    out = out[:, ::-1] if flip_cols else out
    return np.ascontiguousarray(out.swapaxes(0, 1) if transpose else out)


def _opencv_jpeg(img: Image.Image, source: str | Path | bytes, gray: bool) -> np.ndarray | None:
    """A complete 8-bit RGB or grayscale JPEG decoded by OpenCV, EXIF orientation applied: uint8 (H, W) when
    ``gray`` (the JPEG's own luma, as Pillow's ``L`` mode; grayscale JPEGs only), else (H, W, 3) RGB. None for any
    other file, and for bytes OpenCV refuses (Pillow then decodes them, or names their problem)."""
    if img.format != "JPEG" or img.mode not in ("RGB", "L") or (gray and img.mode != "L"):
        return None
    data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else Path(source).read_bytes()
    if not data.endswith(b"\xff\xd9"):
        return None
    flags = (cv2.IMREAD_GRAYSCALE if gray else _IMREAD_RGB) | cv2.IMREAD_IGNORE_ORIENTATION
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if arr is None or arr.shape[:2] != (img.height, img.width):
        return None
    if arr.ndim == 3 and _IMREAD_RGB == cv2.IMREAD_COLOR:
        cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)
    return _orient(arr, img.getexif().get(0x0112))


def _decode(
    source: str | Path | bytes,
    name: str,
    max_pixels: int,
    convert: Callable[[Image.Image], _T],
    fast: Callable[[Image.Image, str | Path | bytes], _T | None] | None = None,
) -> _T:
    """Open ``source`` (a path or bytes), check its declared size, decode it and apply ``convert``.

    ``fast`` may decode the opened (not yet loaded) image another way; it returns None where it does not apply.
    Every failure, whatever the decoder raises, becomes an :class:`ImageReadError` naming ``name``.
    """
    _check_max_pixels(max_pixels)
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise ImageReadError(f"{name}: empty file")
        fp: str | Path | io.BytesIO = io.BytesIO(bytes(source))
    else:
        fp = Path(source)
        if not fp.is_file():
            raise ImageReadError(f"{name}: no such file")
        if fp.stat().st_size == 0:
            raise ImageReadError(f"{name}: empty file")
    size = "unknown size"
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Decoders warn about damage they step over (corrupt EXIF, oversized tags): kept for the log rather
            # than printed once per file of a large folder.
            warnings.simplefilter("always")
            # Pillow only warns between its own limit (89.5 MP) and twice it, and would then decode; the check
            # below refuses such an image before decoding with its declared size in the message, so the warning
            # is silenced here rather than raised from inside ``Image.open`` (where the size is not yet known).
            # Above twice its limit Pillow raises DecompressionBombError itself, whatever ``max_pixels`` says.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp, formats=_FORMATS) as img:
                width, height = img.size
                size = f"{width}x{height}"
                if width <= 0 or height <= 0:
                    raise ImageReadError(f"{name}: image declares zero size ({size})")
                if width * height > max_pixels:
                    raise ImageReadError(
                        f"{name}: image declares {size} = {width * height:,} pixels, over the limit of "
                        f"{max_pixels:,} pixels (a decompression bomb or a mislabelled file; raise max_pixels to "
                        "read it)"
                    )
                out = fast(img, source) if fast is not None else None
                if out is None:
                    img.load()
                    ImageOps.exif_transpose(img, in_place=True)
                    out = convert(img)
        for w in caught:
            _logger.debug("%s: decoder warning: %s", name, w.message)
        return out
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow refuses inside Image.open, before the size is known here; its message holds the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(err))
        declared = f"{int(found.group(1)):,} pixels" if found else size
        raise ImageReadError(
            f"{name}: image declares {declared}, over the limit of {max_pixels:,} pixels (refused by Pillow as a "
            "decompression bomb)"
        ) from err
    except Exception as err:
        # Decoders fed hostile bytes raise whatever their parsing code hits (OSError, SyntaxError, ValueError,
        # struct.error, EOFError, IndexError, MemoryError, ...): each is a property of the file, not a bug here.
        raise ImageReadError(
            f"{name}: not a readable image ({type(err).__name__}: {err}; declared size {size}, limit "
            f"{max_pixels:,} pixels)"
        ) from err


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    arr = arr.astype(np.float64)
    hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
    return np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _image_array(channels: int) -> Callable[[Image.Image], np.ndarray]:
    def convert(img: Image.Image) -> np.ndarray:
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = _to_uint8(np.asarray(img))
            arr = np.repeat(arr[..., None], 3, axis=2) if channels == 3 else arr[..., None]
            return np.ascontiguousarray(arr)
        mode = "RGB" if channels == 3 else "L"
        arr = np.asarray(img if img.mode == mode else img.convert(mode), dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[..., None]
        return np.ascontiguousarray(arr)

    return convert


def _image_fast(channels: int) -> Callable[[Image.Image, str | Path | bytes], np.ndarray | None]:
    def fast(img: Image.Image, source: str | Path | bytes) -> np.ndarray | None:
        arr = _opencv_jpeg(img, source, gray=channels == 1)
        return arr[..., None] if arr is not None and arr.ndim == 2 else arr

    return fast


def _mask_fast(img: Image.Image, source: str | Path | bytes) -> np.ndarray | None:
    arr = _opencv_jpeg(img, source, gray=img.mode == "L")
    return arr.max(axis=2) if arr is not None and arr.ndim == 3 else arr


def _mask_values(img: Image.Image) -> np.ndarray:
    if img.mode in ("P", "1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img)
    else:
        arr = np.asarray(img.convert("RGB")).max(axis=2)
    if arr.ndim != 2:
        raise ValueError(f"mask must be 2-D after conversion, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")


def read_image(path: str | Path, channels: int = 3, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as uint8 (H, W, channels), EXIF orientation applied.

    Accepts RGB, RGBA (alpha dropped), grayscale, 16-bit and palette images in PNG, JPEG, BMP, TIFF, GIF (first
    frame) or WebP, recognised by content.

    Args:
        path: image file.
        channels: 3 for RGB output, 1 for grayscale output.
        max_pixels: largest width x height accepted; checked on the header, before decoding.

    Raises:
        ImageReadError: the file is missing, empty, unreadable, truncated, or declares more than ``max_pixels``.
        ValueError: ``channels`` or ``max_pixels`` is invalid.
    """
    _check_channels(channels)
    return _decode(path, str(path), max_pixels, _image_array(channels), _image_fast(channels))


def decode_image_bytes(
    data: bytes, name: str = "<bytes>", channels: int = 3, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """:func:`read_image` for bytes held in memory (e.g. an upload); ``name`` is what error messages call them.

    Raises:
        ImageReadError: the bytes are empty, not an image, truncated, or declare more than ``max_pixels``.
    """
    _check_channels(channels)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return _decode(data, name, max_pixels, _image_array(channels), _image_fast(channels))


def read_mask_values(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A mask's stored values (H, W) before thresholding: palette index, gray level or the largest RGB channel.

    Raises:
        ImageReadError: as :func:`read_image`, or the mask is not 2-D after conversion.
    """
    return _decode(path, str(path), max_pixels, _mask_values, _mask_fast)


def read_mask(path: str | Path, threshold: int = 0, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a binary mask as uint8 (H, W) of {0, 1}, EXIF orientation applied.

    A pixel is lesion when any channel of its value exceeds ``threshold`` (0 for clean masks; 127 for masks
    stored with lossy compression, e.g. Kvasir-SEG's JPEGs). Palette masks are read by palette index.

    Raises:
        ImageReadError: as :func:`read_image`.
    """
    return (read_mask_values(path, max_pixels=max_pixels) > threshold).astype(np.uint8)


def decode_mask_bytes(
    data: bytes, name: str = "<bytes>", threshold: int = 0, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """:func:`read_mask` for bytes held in memory."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return (_decode(data, name, max_pixels, _mask_values, _mask_fast) > threshold).astype(np.uint8)
