"""Joint image/mask augmentations with a fresh random draw per sample.

Every transform is called as ``t(image, mask, rng)`` with ``image`` uint8 (H, W, C), ``mask`` uint8 (H, W) and a
``numpy.random.Generator`` the dataset seeds per sample, and returns the pair transformed together: geometry is applied
to both (bilinear for the image, nearest for the mask), colour only to the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "AugmentConfig",
    "Compose",
    "HorizontalFlip",
    "VerticalFlip",
    "RandomRotate90",
    "RandomAffine",
    "ColorJitter",
    "build_train_transform",
]

Pair = tuple[np.ndarray, np.ndarray]


class Compose:
    def __init__(self, transforms: Sequence) -> None:
        self.transforms = tuple(transforms)

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask

    def __repr__(self) -> str:
        return f"Compose({', '.join(repr(t) for t in self.transforms)})"


def _check_p(p: float) -> float:
    if not 0 <= p <= 1:
        raise ValueError(f"probability must be in [0, 1], got {p}")
    return p


@dataclass(frozen=True)
class HorizontalFlip:
    p: float = 0.5

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
        if rng.random() < _check_p(self.p):
            return image[:, ::-1], mask[:, ::-1]
        return image, mask


@dataclass(frozen=True)
class VerticalFlip:
    p: float = 0.5

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
        if rng.random() < _check_p(self.p):
            return image[::-1], mask[::-1]
        return image, mask


@dataclass(frozen=True)
class RandomRotate90:
    """Rotate by k * 90 degrees, k uniform in {0, 1, 2, 3}; only square inputs keep their size."""

    p: float = 0.5

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
        if image.shape[0] != image.shape[1] or rng.random() >= _check_p(self.p):
            return image, mask
        k = int(rng.integers(1, 4))
        return np.rot90(image, k), np.rot90(mask, k)


@dataclass(frozen=True)
class RandomAffine:
    """Rotation by an angle in [-degrees, degrees] and isotropic scaling in ``scale``, about the centre.

    Borders are reflected for both image and mask so that a lesion touching the edge stays consistent.
    """

    degrees: float = 30.0
    scale: tuple[float, float] = (0.8, 1.2)
    p: float = 0.5

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
        if rng.random() >= _check_p(self.p):
            return image, mask
        h, w = mask.shape
        angle = float(rng.uniform(-self.degrees, self.degrees))
        scale = float(rng.uniform(*self.scale))
        m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, scale)
        out = cv2.warpAffine(
            np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        if out.ndim == 2:
            out = out[..., None]
        mask = cv2.warpAffine(
            np.ascontiguousarray(mask), m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101
        )
        return out, mask


@dataclass(frozen=True)
class ColorJitter:
    """Random brightness, contrast, saturation (factors in [1 - x, 1 + x]) and hue shift (fraction of a turn)."""

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    p: float = 0.8

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Pair:
        if rng.random() >= _check_p(self.p):
            return image, mask
        x = image.astype(np.float32)
        if self.brightness:
            x *= rng.uniform(1 - self.brightness, 1 + self.brightness)
        if self.contrast:
            mean = x.mean()
            x = (x - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        if x.shape[2] == 3 and self.saturation:
            gray = x.mean(axis=2, keepdims=True)
            x = (x - gray) * rng.uniform(1 - self.saturation, 1 + self.saturation) + gray
        x = np.clip(x, 0, 255).astype(np.uint8)
        if x.shape[2] == 3 and self.hue:
            hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
            shift = int(round(rng.uniform(-self.hue, self.hue) * 180))
            hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return x, mask


@dataclass
class AugmentConfig:
    """Training augmentation; every probability 0 disables that transform."""

    hflip: float = 0.5
    vflip: float = 0.5
    rotate90: float = 0.0
    affine: float = 0.5
    degrees: float = 30.0
    scale: tuple[float, float] = (0.8, 1.2)
    color: float = 0.8
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02


def build_train_transform(cfg: AugmentConfig) -> Compose:
    """The augmentation pipeline of a training config (probability-0 steps left out)."""
    steps: list = []
    if cfg.hflip:
        steps.append(HorizontalFlip(cfg.hflip))
    if cfg.vflip:
        steps.append(VerticalFlip(cfg.vflip))
    if cfg.rotate90:
        steps.append(RandomRotate90(cfg.rotate90))
    if cfg.affine:
        steps.append(RandomAffine(cfg.degrees, tuple(cfg.scale), cfg.affine))
    if cfg.color:
        steps.append(ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.color))
    return Compose(steps)
