from __future__ import annotations

import numpy as np
import pytest
import torch

import lesionseg.data.base as base
from lesionseg.data import AugmentConfig, Case, SegmentationDataset, build_train_transform, find_cases


def test_samples_at_the_working_size(folder) -> None:
    ds = SegmentationDataset(find_cases(folder.root), size=(12, 16))
    assert len(ds) == 3 and ds.ids == ["case1", "case10", "case2"]
    for i in range(len(ds)):
        x, y, cid = ds[i]
        assert cid == ds.ids[i]
        assert x.dtype == torch.float32 and x.shape == (3, 12, 16)
        assert y.dtype == torch.float32 and y.shape == (1, 12, 16)
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
        assert y.sum() > 0


def test_normalisation(folder) -> None:
    ds = SegmentationDataset(find_cases(folder.root), size=(8, 10), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x, _, _ = ds[0]
    image, _ = ds.load_resized(0)
    np.testing.assert_allclose(x.numpy(), image.transpose(2, 0, 1) / 127.5 - 1.0, atol=1e-6)


def test_grayscale_input(folder) -> None:
    ds = SegmentationDataset(find_cases(folder.root), size=(8, 10), in_channels=1)
    x, y, _ = ds[2]
    assert x.shape == (1, 8, 10) and y.shape == (1, 8, 10)


@pytest.mark.parametrize("cache, reads", [(True, 1), (False, 3)])
def test_cache_avoids_rereading(folder, monkeypatch, cache, reads) -> None:
    calls: list[str] = []
    real = base.read_image

    def counting(path, channels=3):
        calls.append(str(path))
        return real(path, channels)

    monkeypatch.setattr(base, "read_image", counting)
    ds = SegmentationDataset(find_cases(folder.root), size=(8, 10), cache=cache)
    first = ds[0]
    for _ in range(2):
        again = ds[0]
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert len(calls) == reads


def test_transform_gets_a_fresh_draw_per_sample(folder) -> None:
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, affine=1.0, color=1.0)
    ds = SegmentationDataset(find_cases(folder.root), size=(16, 16), transform=build_train_transform(cfg))
    torch.manual_seed(0)
    a = [ds[0] for _ in range(3)]
    assert not torch.equal(a[0][0], a[1][0]) or not torch.equal(a[1][0], a[2][0])
    for _, y, _ in a:
        assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    torch.manual_seed(0)
    b = [ds[0] for _ in range(3)]
    for (xa, ya, _), (xb, yb, _) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_rejects_cases_without_masks(folder) -> None:
    cases = find_cases(folder.root)
    with pytest.raises(ValueError, match="no mask"):
        SegmentationDataset([Case("x", cases[0].image)])
    with pytest.raises(ValueError, match="no cases"):
        SegmentationDataset([])
