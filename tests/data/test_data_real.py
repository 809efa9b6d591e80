"""The real PH2 and Kvasir-SEG copies in ../shared/data (relative to the repository root); skipped when absent."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lesionseg.data import detect_layout, find_cases, load_case, load_split

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}"),
]


def _root(name: str) -> Path:
    root = DATA / name
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    return root


def test_ph2_150_cases_with_diagnoses() -> None:
    root = _root("ph2")
    assert detect_layout(root) == "ph2"
    cases = find_cases(root)
    assert len(cases) == 150
    assert Counter(c.meta["diagnosis"] for c in cases) == {0: 60, 1: 60, 2: 30}
    image, mask = load_case(cases[0])
    assert image.ndim == 3 and image.shape[2] == 3 and mask.shape == image.shape[:2]
    assert set(np.unique(mask)) == {0, 1}


def test_kvasir_800_cases() -> None:
    root = _root("kvasir_seg")
    assert detect_layout(root) == "kvasir_seg"
    cases = find_cases(root)
    assert len(cases) == 800
    assert all(c.mask is not None and c.mask.stem == c.id for c in cases)
    image, mask = load_case(cases[0])
    assert mask.shape == image.shape[:2] and set(np.unique(mask)) == {0, 1}


@pytest.mark.parametrize("dataset, split", [("ph2", "ph2"), ("kvasir_seg", "kvasir_seg")])
def test_shipped_split_matches_the_data(dataset, split) -> None:
    ids = {c.id for c in find_cases(_root(dataset))}
    assert load_split(split).all_ids == ids
