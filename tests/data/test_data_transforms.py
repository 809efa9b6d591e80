from __future__ import annotations

import numpy as np
import pytest

from lesionseg.data import AugmentConfig, build_train_transform
from lesionseg.data.transforms import (
    ColorJitter,
    Compose,
    HorizontalFlip,
    RandomAffine,
    RandomRotate90,
    VerticalFlip,
)

S = 48


def _pair() -> tuple[np.ndarray, np.ndarray]:
    """A mask (disc + off-centre bar) and an image whose colour encodes it: image = mask * 255 in 3 channels."""
    yy, xx = np.mgrid[:S, :S]
    mask = (((yy - 20) ** 2 + (xx - 28) ** 2) < 100).astype(np.uint8)
    mask[35:42, 4:20] = 1
    image = np.repeat(mask[..., None] * 255, 3, axis=2).astype(np.uint8)
    return image, mask


def _agreement(image: np.ndarray, mask: np.ndarray) -> float:
    return float(((image.mean(axis=2) > 127) == (mask > 0)).mean())


GEOMETRIC = [
    HorizontalFlip(1.0),
    VerticalFlip(1.0),
    RandomRotate90(1.0),
    RandomAffine(30.0, (0.8, 1.2), 1.0),
    build_train_transform(AugmentConfig(rotate90=0.5, affine=1.0, color=0.0)),
]


@pytest.mark.parametrize("t", GEOMETRIC, ids=lambda t: type(t).__name__)
def test_geometry_moves_image_and_mask_together(t) -> None:
    image, mask = _pair()
    for seed in range(8):
        out, m = t(image, mask, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.uint8
        assert m.shape == mask.shape and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 1}
        assert _agreement(out, m) > 0.98, seed
        assert m.sum() > 0


def test_flips_are_exact() -> None:
    image, mask = _pair()
    out, m = HorizontalFlip(1.0)(image, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out, image[:, ::-1])
    np.testing.assert_array_equal(m, mask[:, ::-1])
    out, m = VerticalFlip(0.0)(image, mask, np.random.default_rng(0))
    assert out is image and m is mask


def test_affine_actually_moves_things() -> None:
    image, mask = _pair()
    _, m = RandomAffine(30.0, (0.8, 1.2), 1.0)(image, mask, np.random.default_rng(3))
    assert (m != mask).any()


def test_colour_changes_only_the_image() -> None:
    image, mask = _pair()
    image = (image // 2 + 40).astype(np.uint8)
    out, m = ColorJitter(0.3, 0.3, 0.3, 0.05, p=1.0)(image, mask, np.random.default_rng(1))
    assert m is mask
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out != image).any()


def test_full_pipeline_keeps_masks_binary() -> None:
    image, mask = _pair()
    t = build_train_transform(AugmentConfig())
    for seed in range(10):
        out, m = t(image, mask, np.random.default_rng(seed))
        assert set(np.unique(m)) <= {0, 1} and out.shape == image.shape


def test_fresh_draw_per_call_and_same_seed_same_output() -> None:
    image, mask = _pair()
    t = build_train_transform(AugmentConfig(affine=1.0))
    a = t(image, mask, np.random.default_rng(1))
    b = t(image, mask, np.random.default_rng(2))
    c = t(image, mask, np.random.default_rng(1))
    assert not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))
    np.testing.assert_array_equal(a[0], c[0])
    np.testing.assert_array_equal(a[1], c[1])
    rng = np.random.default_rng(5)  # one generator, consecutive samples: different draws
    outs = [t(image, mask, rng)[1] for _ in range(4)]
    assert len({o.tobytes() for o in outs}) > 1


def test_pipeline_steps_follow_the_config() -> None:
    t = build_train_transform(AugmentConfig(hflip=0, vflip=0, rotate90=0, affine=0, color=0))
    assert isinstance(t, Compose) and t.transforms == ()
    t = build_train_transform(AugmentConfig(rotate90=0.5))
    assert [type(s).__name__ for s in t.transforms] == [
        "HorizontalFlip",
        "VerticalFlip",
        "RandomRotate90",
        "RandomAffine",
        "ColorJitter",
    ]


def test_bad_probability() -> None:
    image, mask = _pair()
    with pytest.raises(ValueError, match="probability"):
        HorizontalFlip(1.5)(image, mask, np.random.default_rng(0))
