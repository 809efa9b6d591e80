"""The PyTorch dataset over a list of cases: resized to a working size, cached, augmented, normalised."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import Case, channel_stats, load_case, normalize_image, resize_pair

if TYPE_CHECKING:
    from .cache import CaseCache

__all__ = ["SegmentationDataset"]


class SegmentationDataset(Dataset):
    """Cases resized to a working size, optionally cached in memory, then transformed per sample.

    Yields ``(image float32 (C, H, W), mask float32 {0, 1} (1, H, W), id)``. Decoding a large image costs
    10-400 ms, so with ``cache=True`` each case is decoded and resized once and kept as uint8; with a
    ``disk_cache`` that decoded, resized case is also stored on disk for every later run and process (the arrays
    are the same bit for bit).

    Args:
        cases: cases with masks.
        size: working size (H, W) every sample is resized to before augmentation.
        transform: callable ``(image uint8 HWC, mask uint8 HW, rng) -> (image, mask)`` drawing fresh
            random parameters from ``rng`` for every sample; None for none.
        mean: per-channel mean in [0, 1] units for normalisation.
        std: per-channel std in [0, 1] units.
        in_channels: 3 (RGB) or 1 (grayscale).
        cache: keep decoded, resized cases in memory.
        disk_cache: the data root's on-disk cache (:func:`~lesionseg.data.cache.open_case_cache`); None for none.
    """

    def __init__(
        self,
        cases: Iterable[Case],
        size: tuple[int, int] = (256, 256),
        transform: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        in_channels: int = 3,
        cache: bool = True,
        disk_cache: CaseCache | None = None,
    ) -> None:
        self.cases = list(cases)
        if not self.cases:
            raise ValueError("SegmentationDataset got no cases")
        for case in self.cases:
            if case.mask is None:
                raise ValueError(f"case {case.id} ({case.image}) has no mask")
        self.size = (int(size[0]), int(size[1]))
        self.transform = transform
        self.in_channels = in_channels
        self.mean, self.std = channel_stats(mean, std, in_channels)
        self.cache = cache
        self.disk_cache = disk_cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.cases]

    def load_resized(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The case at the working size, uint8, before any augmentation."""
        if index in self._cache:
            return self._cache[index]
        case = self.cases[index]
        if self.disk_cache is None:
            image, mask = self._decode(case)
        else:
            image, mask = self.disk_cache.get(case, self.size, self.in_channels, lambda: self._decode(case))
        if self.cache:
            self._cache[index] = (image, mask)
        return image, mask

    def _decode(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        image, mask = resize_pair(*load_case(case, self.in_channels), self.size)
        assert mask is not None
        return image, mask

    def normalize(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(normalize_image(image, self.mean, self.std))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        image, mask = self.load_resized(index)
        if self.transform is not None:
            # Seeded from torch's generator, so the trainer's seed and DataLoader worker seeding govern every draw.
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
            image, mask = self.transform(image, mask, rng)
        x = self.normalize(np.ascontiguousarray(image))
        y = torch.from_numpy(np.ascontiguousarray(mask)).unsqueeze(0).float()
        return x, y, self.cases[index].id
