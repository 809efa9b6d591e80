from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import write_mask

from lesionseg.data import (
    DatasetLayoutError,
    ImageReadError,
    SegmentationDataset,
    detect_layout,
    find_cases,
    load_case,
)


def test_cases_left_mask_and_right_mask_in_meta(montgomery) -> None:
    cases = find_cases(montgomery.root)
    assert [c.id for c in cases] == montgomery.ids
    for case in cases:
        assert case.image == montgomery.images[case.id]
        assert case.mask == montgomery.root / "ManualMask" / "leftMask" / f"{case.id}.png"
        assert case.meta["extra_masks"] == (montgomery.root / "ManualMask" / "rightMask" / f"{case.id}.png",)
    assert {c.id: c.meta["tuberculosis"] for c in cases} == {
        "MCUCXR_0001_0": 0,
        "MCUCXR_0005_1": 1,
        "MCUCXR_0010_0": 0,
    }


def test_load_case_gives_the_union_of_both_lungs(montgomery) -> None:
    for case in find_cases(montgomery.root):
        image, mask = load_case(case, channels=1)
        assert image.shape == (8, 10, 1)
        assert mask is not None and mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, montgomery.masks[case.id])
        assert mask[:, 6:9].any() and mask[:, 1:3].any()  # both lungs are in it


@pytest.mark.parametrize("where", ["MontgomerySet", "parent"])
def test_detect_from_the_folder_or_its_parent(montgomery, where) -> None:
    root = montgomery.root if where == "MontgomerySet" else montgomery.root.parent
    assert detect_layout(root) == "montgomery"
    assert [c.id for c in find_cases(root)] == montgomery.ids


@pytest.mark.parametrize("side", ["leftMask", "rightMask"])
def test_missing_lung_mask_names_the_image(montgomery, side) -> None:
    (montgomery.root / "ManualMask" / side / "MCUCXR_0005_1.png").unlink()
    with pytest.raises(DatasetLayoutError) as err:
        find_cases(montgomery.root)
    assert str(montgomery.images["MCUCXR_0005_1"]) in str(err.value)
    assert side in str(err.value)


def test_missing_mask_folder_is_named(montgomery) -> None:
    right = montgomery.root / "ManualMask" / "rightMask"
    for p in right.iterdir():
        p.unlink()
    right.rmdir()
    with pytest.raises(DatasetLayoutError, match="rightMask"):
        find_cases(montgomery.root)


def test_extra_mask_of_another_size_names_both_files(montgomery) -> None:
    right = montgomery.root / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png"
    write_mask(right, np.ones((9, 10), np.uint8))
    case = find_cases(montgomery.root)[0]
    with pytest.raises(ImageReadError) as err:
        load_case(case)
    assert str(right) in str(err.value) and str(case.image) in str(err.value)


def test_grayscale_dataset(montgomery) -> None:
    ds = SegmentationDataset(find_cases(montgomery.root), size=(16, 20), in_channels=1)
    x, y, cid = ds[1]
    assert x.shape == (1, 16, 20) and x.dtype == torch.float32
    assert y.shape == (1, 16, 20) and set(torch.unique(y).tolist()) <= {0.0, 1.0}
    assert cid == "MCUCXR_0005_1"
    assert y[0, :, 12:18].sum() > 0 and y[0, :, 2:6].sum() > 0  # union survived the resize
