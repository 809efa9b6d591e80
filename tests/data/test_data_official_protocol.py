"""The benchmark's ``official`` protocol: a layout's own subsets (ISIC's folders); val drawn from train if absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import build_isic

from lesionseg.data.splits import official_split


def test_official_split_keeps_the_layouts_subsets(tmp_path: Path) -> None:
    built = build_isic(tmp_path, "isic2017")
    split = official_split(tmp_path, "isic2017")
    by_subset: dict[str, list[str]] = {}
    for cid, subset in built.subsets.items():
        by_subset.setdefault(subset, []).append(cid)
    assert split.train == sorted(by_subset["train"])
    assert split.val == sorted(by_subset["val"])
    assert split.test == sorted(by_subset["test"])


def test_official_split_draws_val_from_train_when_the_layout_has_none(tmp_path: Path) -> None:
    built = build_isic(tmp_path, "isic2016")
    split = official_split(tmp_path, "isic2016", val_fraction=0.5)
    train = {cid for cid, s in built.subsets.items() if s == "train"}
    assert len(split.val) == 1 and set(split.val) | set(split.train) == train
    assert split.test == sorted(cid for cid, s in built.subsets.items() if s == "test")


def test_official_split_needs_official_subsets(tmp_path: Path, make_blobs) -> None:
    root = make_blobs(tmp_path / "blobs", n=4)
    with pytest.raises(ValueError, match="no official subset"):
        official_split(root, "folder")
