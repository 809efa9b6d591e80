"""Decode an uploaded image from bytes, refusing decompression bombs before any pixel is decoded.

One function, :func:`decode_upload`, so that a shared bytes-level decoder can replace it later without touching the
app. Every failure is an :class:`UploadError` carrying the HTTP status the API answers with and a message naming the
file and the problem.

Two bounds: ``max_pixels`` refuses an image by the width x height its header declares; ``work_pixels`` caps what the
rest of the server works on. A bigger image is reduced to at most ``work_pixels`` as it is decoded (a JPEG by its
decoder's DCT scaling, so its full-size pixels never exist; other formats by an integer box reduction right after
decoding), so that a small, flat file declaring tens of megapixels costs the model, the post-processing and the
measurements no more than an image of ``work_pixels``.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["UploadError", "DecodedUpload", "decode_upload", "ACCEPTED_FORMATS", "ACCEPTED_CONTENT_TYPES"]

# PIL format names accepted after sniffing the bytes (the file name and the declared type are never trusted alone).
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
# Declared part types accepted; browsers send application/octet-stream (or nothing) for an unknown extension.
ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream")


class UploadError(ValueError):
    """An upload the API refuses; ``status`` is the HTTP status to answer with (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class DecodedUpload:
    """A decoded upload: the pixels the server works on and the image's own size.

    Attributes:
        image: uint8 (h, w, channels), EXIF orientation applied; the whole image, reduced when it has more than the
            decoder's ``work_pixels``.
        width: the image's own width (after EXIF orientation), which the returned mask has.
        height: the image's own height.
    """

    image: np.ndarray
    width: int
    height: int

    @property
    def reduced(self) -> bool:
        """Whether :attr:`image` is smaller than the image itself."""
        return self.image.shape[:2] != (self.height, self.width)


def _reduction(width: int, height: int, work_pixels: int) -> int:
    """The smallest integer factor that brings width x height (each side rounded up) to at most ``work_pixels``."""
    factor = max(1, math.ceil(math.sqrt(width * height / work_pixels)))
    while math.ceil(width / factor) * math.ceil(height / factor) > work_pixels:
        factor += 1
    return factor


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit and float images scaled into uint8 (as :func:`lesionseg.data.io.read_image` reads them)."""
    arr = arr.astype(np.float64)
    hi = 65535.0 if arr.max(initial=0) > 255 else 255.0
    return np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)


def decode_upload(
    data: bytes,
    name: str = "upload",
    max_pixels: int = 40_000_000,
    channels: int = 3,
    work_pixels: int | None = None,
) -> DecodedUpload:
    """Decode image bytes to uint8 (h, w, channels), EXIF orientation applied, at most ``work_pixels`` of them.

    The declared width x height is read from the header and checked against ``max_pixels`` before the pixel data is
    decoded, so a small file that would expand to gigabytes is refused cheaply.

    Args:
        data: the uploaded bytes.
        name: file name used in messages.
        max_pixels: largest width x height accepted.
        channels: 3 for RGB output, 1 for grayscale.
        work_pixels: an image with more pixels is reduced, aspect kept, to at most this many (see the module
            docstring); None keeps every image at its own size.

    Raises:
        UploadError: 422 for empty, truncated, corrupt or non-image data and unsupported formats; 413 for an image
            with more than ``max_pixels`` pixels.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if work_pixels is not None and work_pixels < 1:
        raise ValueError(f"work_pixels must be >= 1, got {work_pixels}")
    if not data:
        raise UploadError(422, f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            # PIL warns (and only raises past twice its own limit) on big images; our limit is checked right below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise UploadError(413, f"{name}: image too large to decode ({err})") from err
    except UnidentifiedImageError as err:
        raise UploadError(422, f"{name}: not a readable image (no known image format in its bytes)") from err
    except Exception as err:  # PIL raises many types on foreign data; none may escape as a server error
        raise UploadError(422, f"{name}: not a readable image ({type(err).__name__}: {err})") from err
    if img.format not in ACCEPTED_FORMATS:
        accepted = ", ".join(ACCEPTED_FORMATS)
        raise UploadError(422, f"{name}: {img.format} images are not accepted; send one of {accepted}")
    width, height = img.size
    if width <= 0 or height <= 0:
        raise UploadError(422, f"{name}: image has zero size ({width} x {height})")
    if width * height > max_pixels:
        raise UploadError(
            413, f"{name}: {width} x {height} = {width * height} pixels is over the limit of {max_pixels} pixels"
        )
    over = work_pixels is not None and width * height > work_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if over and img.format == "JPEG":
                # The decoder scales by 1/2, 1/4 or 1/8 while decoding, to the smallest size at least this large.
                factor = _reduction(width, height, work_pixels)
                img.draft(None, (math.ceil(width / factor), math.ceil(height / factor)))
            img.load()
            loaded = img.size
            # In place: without an orientation to apply, a copy of the full-size pixels would be made for nothing.
            ImageOps.exif_transpose(img, in_place=True)
            if img.size != loaded:  # EXIF orientation turned it a quarter
                width, height = height, width
            if work_pixels is not None and img.width * img.height > work_pixels:
                if img.mode in ("1", "P"):  # palette and 1-bit images have no box reduction in PIL
                    img = img.convert("RGB" if channels == 3 else "L")
                elif img.mode.startswith("I;16"):
                    img = img.convert("I")
                img = img.reduce(_reduction(img.width, img.height, work_pixels))
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = _to_uint8(np.asarray(img))
                arr = np.repeat(arr[..., None], 3, axis=2) if channels == 3 else arr[..., None]
            else:
                arr = np.asarray(img.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    except Image.DecompressionBombError as err:
        raise UploadError(413, f"{name}: image too large to decode ({err})") from err
    except MemoryError as err:
        raise UploadError(413, f"{name}: image too large to decode in memory") from err
    except Exception as err:  # truncated or corrupt pixel data, bad EXIF, odd modes
        raise UploadError(422, f"{name}: corrupt or truncated image data ({type(err).__name__}: {err})") from err
    if arr.ndim == 2:
        arr = arr[..., None]
    return DecodedUpload(np.ascontiguousarray(arr), int(width), int(height))
