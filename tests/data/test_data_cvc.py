from __future__ import annotations

import numpy as np
import pytest
from data_fixtures import build_cvc

from lesionseg.data import DatasetLayoutError, detect_layout, find_cases, load_case
from lesionseg.data.cvc import CVC_MASK_THRESHOLD


def test_frames_paired_by_number_with_noisy_masks(cvc) -> None:
    cases = find_cases(cvc.root)
    assert [c.id for c in cases] == ["1", "10", "2"] == cvc.ids
    for case in cases:
        assert case.image == cvc.images[case.id]
        assert case.mask == cvc.mask_paths[case.id]
        assert case.mask_threshold == CVC_MASK_THRESHOLD == 127
        image, mask = load_case(case)
        assert image.shape == (8, 10, 3)
        np.testing.assert_array_equal(mask, cvc.masks[case.id])  # noise up to +-10 around 0/255 removed


@pytest.mark.parametrize("where", ["CVC-ClinicDB", "parent"])
def test_detect_from_the_folder_or_its_parent(cvc, where) -> None:
    root = cvc.root if where == "CVC-ClinicDB" else cvc.root.parent
    assert detect_layout(root) == "cvc_clinicdb"
    assert [c.id for c in find_cases(root)] == cvc.ids


def test_png_release(tmp_path) -> None:
    built = build_cvc(tmp_path / "CVC-ClinicDB", fmt="png")
    cases = find_cases(tmp_path)
    assert [c.image.suffix for c in cases] == [".png"] * 3
    assert [c.id for c in cases] == built.ids


def test_png_and_tif_redistribution_prefers_png(tmp_path) -> None:
    root = tmp_path / "archive"
    png = build_cvc(root, fmt="png", sub="PNG")
    build_cvc(root, fmt="tif", sub="TIF")
    assert detect_layout(root) == "cvc_clinicdb"
    cases = find_cases(root)
    assert [c.id for c in cases] == png.ids
    assert all(c.image.parent == root / "PNG" / "Original" for c in cases)
    assert all(c.mask is not None and c.mask.parent == root / "PNG" / "Ground Truth" for c in cases)


def test_tif_only_redistribution(tmp_path) -> None:
    built = build_cvc(tmp_path, fmt="tif", sub="TIF")
    assert [c.id for c in find_cases(tmp_path)] == built.ids


def test_zero_padded_mask_names_pair_by_number(cvc) -> None:
    gt = cvc.root / "Ground Truth"
    (gt / "10.tif").rename(gt / "010.tif")
    case = {c.id: c for c in find_cases(cvc.root)}["10"]
    assert case.mask == gt / "010.tif"
    np.testing.assert_array_equal(load_case(case)[1], cvc.masks["10"])


def test_two_files_for_one_number_is_an_error(cvc) -> None:
    gt = cvc.root / "Ground Truth"
    (gt / "2.tif").rename(gt / "02.tif")
    (gt / "10.tif").rename(gt / "2.png")
    with pytest.raises(DatasetLayoutError, match="two files for"):
        find_cases(cvc.root)


def test_missing_mask_names_the_image(cvc) -> None:
    cvc.mask_paths["10"].unlink()
    with pytest.raises(DatasetLayoutError) as err:
        find_cases(cvc.root)
    assert str(cvc.images["10"]) in str(err.value)


def test_wrong_layout_error_says_what_is_missing(tmp_path) -> None:
    (tmp_path / "Original").mkdir()
    with pytest.raises(DatasetLayoutError, match="Ground Truth"):
        find_cases(tmp_path, "cvc_clinicdb")
