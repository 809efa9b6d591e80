"""PH2, Kvasir-SEG and generic-folder layouts on tiny fixtures, and layout detection across every dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (
    PH2_DIAGNOSES,
    Built,
    build_cvc,
    build_folder,
    build_isic,
    build_kvasir,
    build_montgomery,
    build_ph2,
)

from lesionseg.data import DatasetLayoutError, detect_layout, find_cases, list_layouts, load_case

BUILDERS = {
    "ph2": lambda root: build_ph2(root / "ph2"),
    "kvasir_seg": lambda root: build_kvasir(root / "kvasir_seg"),
    "folder": lambda root: build_folder(root / "generic"),
    "isic2016": lambda root: build_isic(root / "isic", "isic2016"),
    "isic2017": lambda root: build_isic(root / "isic", "isic2017"),
    "isic2018": lambda root: build_isic(root / "isic", "isic2018"),
    "cvc_clinicdb": lambda root: build_cvc(root / "CVC-ClinicDB"),
    "montgomery": lambda root: build_montgomery(root / "MontgomerySet"),
}


def test_every_layout_is_registered() -> None:
    assert set(BUILDERS) <= set(list_layouts())


@pytest.mark.parametrize("layout", sorted(BUILDERS))
def test_detect_layout_picks_the_right_one(tmp_path, layout) -> None:
    built = BUILDERS[layout](tmp_path)
    assert detect_layout(built.root) == layout
    cases = find_cases(built.root)
    assert [c.id for c in cases] == built.ids
    for case in cases:  # each case with its own mask: not paired by listing position
        image, mask = load_case(case)
        assert image.shape[:2] == mask.shape == (8, 10)
        assert (mask == built.masks[case.id]).mean() >= 0.95  # JPEG masks (Kvasir) may differ at an edge pixel


def test_detect_layout_rejects_an_unknown_folder(tmp_path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetLayoutError, match="no known dataset layout"):
        detect_layout(tmp_path)
    with pytest.raises(DatasetLayoutError, match="not a directory"):
        detect_layout(tmp_path / "absent")


# --- PH2 ---------------------------------------------------------------------------------------------------------


def test_ph2_cases_and_diagnoses(ph2) -> None:
    cases = find_cases(ph2.root)
    assert [c.id for c in cases] == sorted(PH2_DIAGNOSES)
    assert {c.id: c.meta["diagnosis"] for c in cases} == PH2_DIAGNOSES
    for case in cases:
        assert case.image == ph2.images[case.id] and case.mask == ph2.mask_paths[case.id]
        np.testing.assert_array_equal(load_case(case)[1], ph2.masks[case.id])  # 1-bit BMP mask


@pytest.mark.parametrize("sub", ["", "PH2Dataset", "PH2Dataset/PH2 Dataset images"])
def test_ph2_roots(ph2, sub) -> None:
    root = ph2.root / sub if sub else ph2.root
    assert detect_layout(root) == "ph2"
    assert [c.id for c in find_cases(root)] == sorted(PH2_DIAGNOSES)


def test_ph2_png_images_accepted(tmp_path) -> None:
    built = build_ph2(tmp_path, ext="png")
    assert [c.image.suffix for c in find_cases(tmp_path)] == [".png"] * len(built.ids)


def test_ph2_official_txt_table(tmp_path) -> None:
    build_ph2(tmp_path, txt="official")
    assert {c.id: c.meta.get("diagnosis") for c in find_cases(tmp_path)} == PH2_DIAGNOSES


def test_ph2_missing_lesion_mask_names_the_case(ph2) -> None:
    case_dir = ph2.root / "PH2Dataset" / "PH2 Dataset images" / "IMD010"
    shutil.rmtree(case_dir / "IMD010_lesion")
    with pytest.raises(DatasetLayoutError) as err:
        find_cases(ph2.root)
    assert str(case_dir) in str(err.value)


# --- Kvasir-SEG ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["", "Kvasir-SEG"])
def test_kvasir_roots_and_jpeg_threshold(kvasir, sub) -> None:
    root = kvasir.root / sub if sub else kvasir.root
    assert detect_layout(root) == "kvasir_seg"
    cases = find_cases(root)
    assert [c.id for c in cases] == kvasir.ids
    assert all(c.mask_threshold == 127 for c in cases)


def test_kvasir_missing_mask_names_the_image(kvasir) -> None:
    kvasir.mask_paths[kvasir.ids[1]].unlink()
    with pytest.raises(DatasetLayoutError) as err:
        find_cases(kvasir.root)
    assert str(kvasir.images[kvasir.ids[1]]) in str(err.value)


# --- generic folder ------------------------------------------------------------------------------------------------


def test_folder_pairs_by_id_not_by_sorted_names(folder) -> None:
    masks = sorted(p.name for p in (folder.root / "masks").iterdir())
    images = sorted(p.name for p in (folder.root / "images").iterdir())
    assert [m.replace("_mask", "") for m in masks] != images  # position would mis-pair case1 and case10
    cases = find_cases(folder.root)
    assert {c.id: c.mask.name for c in cases} == {
        "case1": "case1_mask.png",
        "case10": "case10_mask.png",
        "case2": "case2_mask.png",
    }
    for case in cases:
        np.testing.assert_array_equal(load_case(case)[1], folder.masks[case.id])


def test_folder_png_masks_threshold_zero(folder) -> None:
    assert all(c.mask_threshold == 0 for c in find_cases(folder.root))


def test_folder_missing_mask_names_the_image(folder) -> None:
    folder.mask_paths["case10"].unlink()
    with pytest.raises(DatasetLayoutError) as err:
        find_cases(folder.root)
    assert str(folder.images["case10"]) in str(err.value)


def test_folder_two_files_for_one_id(folder) -> None:
    shutil.copy(folder.images["case2"], folder.root / "images" / "case2.jpg")
    with pytest.raises(DatasetLayoutError, match="two files for id 'case2'"):
        find_cases(folder.root)


def test_empty_folder_layout_has_no_cases(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetLayoutError, match="no cases"):
        find_cases(tmp_path)


def test_unknown_layout_name(folder: Built) -> None:
    with pytest.raises(ValueError, match="unknown layout"):
        find_cases(folder.root, "nope")
