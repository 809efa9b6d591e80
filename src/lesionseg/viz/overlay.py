"""Mask overlays on images."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["overlay_mask"]


def overlay_mask(
    image: np.ndarray,
    mask: np.ndarray,
    truth: np.ndarray | None = None,
    color: tuple[int, int, int] = (255, 64, 0),
    truth_color: tuple[int, int, int] = (0, 255, 0),
    alpha: float = 0.35,
) -> np.ndarray:
    """RGB uint8 image with the predicted mask tinted and outlined (and the ground truth outlined, if given)."""
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape[:2]}")
    out = image.astype(np.float32)
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(color, dtype=np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    thickness = max(1, round(min(image.shape[:2]) / 250))
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, thickness)
    if truth is not None:
        contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, truth_color, thickness)
    return out
