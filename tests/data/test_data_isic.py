from __future__ import annotations

import shutil

import numpy as np
import pytest
from data_fixtures import Built, build_isic

from lesionseg.data import DatasetLayoutError, detect_layout, find_cases, load_case
from lesionseg.data.isic import ISIC_SUBSETS

LAYOUTS = ("isic2016", "isic2017", "isic2018")


@pytest.fixture(params=LAYOUTS)
def isic(request, tmp_path) -> tuple[str, Built]:
    return request.param, build_isic(tmp_path, request.param)


def test_ids_subsets_and_pairing(isic) -> None:
    layout, built = isic
    cases = find_cases(built.root, layout)
    assert [c.id for c in cases] == built.ids
    assert {c.id: c.meta["subset"] for c in cases} == built.subsets
    expected_subsets = {s for s, *_ in ISIC_SUBSETS[layout]}
    assert set(built.subsets.values()) == expected_subsets
    for case in cases:
        assert case.image == built.images[case.id]
        assert case.mask == built.mask_paths[case.id]
        assert case.mask_threshold == 0
        image, mask = load_case(case)
        assert image.shape == (8, 10, 3)
        np.testing.assert_array_equal(mask, built.masks[case.id])  # the extra mask ISIC_0000000 shifts nothing


def test_detect_layout_picks_each_challenge(isic) -> None:
    layout, built = isic
    assert detect_layout(built.root) == layout
    assert len(find_cases(built.root)) == len(built.ids)


def test_isic2017_superpixels_and_metadata_are_not_cases(isic2017) -> None:
    data = isic2017.root / "ISIC-2017_Training_Data"
    assert any(p.name.endswith("_superpixels.png") for p in data.iterdir())
    assert (data / "ISIC-2017_Training_Data_metadata.csv").is_file()
    ids = [c.id for c in find_cases(isic2017.root)]
    assert ids == isic2017.ids
    assert not any("superpixels" in i for i in ids)


def test_isic2018_license_files_ignored(isic2018) -> None:
    assert (isic2018.root / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").is_file()
    assert [c.id for c in find_cases(isic2018.root)] == isic2018.ids


@pytest.mark.parametrize("layout", LAYOUTS)
def test_missing_mask_names_the_image(tmp_path, layout) -> None:
    built = build_isic(tmp_path, layout)
    victim = built.ids[-1]
    built.mask_paths[victim].unlink()
    with pytest.raises(DatasetLayoutError) as err:
        find_cases(built.root, layout)
    assert str(built.images[victim]) in str(err.value)


def test_isic2018_loads_the_subsets_present(tmp_path) -> None:
    built = build_isic(tmp_path, "isic2018", subsets=("val",))
    cases = find_cases(tmp_path)
    assert [c.id for c in cases] == built.ids
    assert {c.meta["subset"] for c in cases} == {"val"}


def test_isic2018_no_subset_is_an_error(tmp_path) -> None:
    (tmp_path / "unrelated").mkdir()
    with pytest.raises(DatasetLayoutError, match="ISIC2018_Task1-2_Training_Input"):
        find_cases(tmp_path, "isic2018")


def test_isic2018_input_without_ground_truth_names_the_missing_folder(isic2018) -> None:
    shutil.rmtree(isic2018.root / "ISIC2018_Task1_Validation_GroundTruth")
    with pytest.raises(DatasetLayoutError) as err:
        find_cases(isic2018.root)
    assert str(isic2018.root / "ISIC2018_Task1_Validation_GroundTruth") in str(err.value)
