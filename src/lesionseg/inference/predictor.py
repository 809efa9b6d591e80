"""Predict lesion probabilities for images of any size with a trained model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import resize_pair
from ..data.io import read_image

__all__ = ["Predictor", "autocast_context"]


def autocast_context(precision: str, device: torch.device | str = "cpu"):
    """bf16 autocast for ``precision == "bf16"``, a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return contextlib.nullcontext()


class Predictor:
    """Resize to the model's working size, predict, resize the probabilities back to the image's own size.

    Args:
        model: a segmentation model returning logits.
        image_size: working size (H, W) the model was trained at.
        mean: normalisation mean in [0, 1] units.
        std: normalisation std in [0, 1] units.
        threshold: probability threshold of the binary mask.
        in_channels: 3 (RGB) or 1 (grayscale).
        precision: ``fp32`` or ``bf16``.
        tta: average over horizontal and vertical flips.
    """

    def __init__(
        self,
        model: nn.Module,
        image_size: Sequence[int] = (256, 256),
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        threshold: float = 0.5,
        in_channels: int = 3,
        precision: str = "fp32",
        tta: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.threshold = threshold
        self.in_channels = in_channels
        self.precision = precision
        self.tta = tta

    @classmethod
    def from_checkpoint(cls, path: str | Path, **overrides: Any) -> Predictor:
        """A predictor configured from a checkpoint's record (``overrides`` replace record values)."""
        from ..engine.checkpoint import load_model

        model, record = load_model(path)
        kwargs = {
            "image_size": record.get("image_size", (256, 256)),
            "mean": record.get("mean", (0.485, 0.456, 0.406)),
            "std": record.get("std", (0.229, 0.224, 0.225)),
            "threshold": record.get("threshold", 0.5),
            "in_channels": record.get("in_channels", 3),
        }
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model, **kwargs)

    def _to_tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        batch = np.stack([resize_pair(im, None, self.image_size)[0] for im in images])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
        return ((x - self.mean) / self.std).to(self.device)

    @torch.inference_mode()
    def logits_at_working_size(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, h, w) for a normalised batch at the working size (flip-averaged with TTA)."""
        with autocast_context(self.precision, self.device):
            out = self.model(x).float()
            if self.tta:
                out = out + self.model(x.flip(-1)).float().flip(-1)
                out = out + self.model(x.flip(-2)).float().flip(-2)
                out = out / 3
        return out

    def predict_proba(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Foreground probabilities float32 (H, W) at each image's own size, for uint8 (H, W, C) images."""
        probs = torch.sigmoid(self.logits_at_working_size(self._to_tensor(images)))
        out = []
        for p, im in zip(probs, images):
            h, w = im.shape[:2]
            p = F.interpolate(p[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            out.append(p.cpu().numpy())
        return out

    def predict_mask(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Binary masks uint8 {0, 1} (H, W) at each image's own size."""
        return [(p > self.threshold).astype(np.uint8) for p in self.predict_proba(images)]

    def predict_files(self, paths: Iterable[str | Path]) -> Iterable[tuple[Path, np.ndarray, np.ndarray]]:
        """Yield ``(path, image, probability)`` per file, one image at a time (images differ in size)."""
        for path in paths:
            image = read_image(path, self.in_channels)
            yield Path(path), image, self.predict_proba([image])[0]
