"""Choosing a run's cases in data/splits.py: a split drawn once on first use, a split's parts, the cases an evaluation
scores, and the one stratification check every draw uses."""

from __future__ import annotations

import json

import pytest

from lesionseg.data import (
    SplitDrawConfig,
    case_strata,
    ensure_split,
    find_cases,
    load_split,
    protocol_splits,
    select_cases,
    split_cases,
)
from lesionseg.data.base import Case
from lesionseg.data.splits import SplitProtocol


def _cases(diagnoses: list[int | None]) -> list[Case]:
    return [
        Case(f"c{i}", f"c{i}.png", f"c{i}_mask.png", meta={} if d is None else {"diagnosis": d})
        for i, d in enumerate(diagnoses)
    ]


def test_case_strata_names_the_option_the_count_and_a_case():
    assert case_strata(_cases([0, 1, 1]), "diagnosis") == {"c0": 0, "c1": 1, "c2": 1}
    with pytest.raises(ValueError, match=r"^--stratify 'diagnosis': 2 of 4 cases lack it, e.g. c1$"):
        case_strata(_cases([0, None, 1, None]), "diagnosis", "--stratify")


def test_every_stratified_draw_refuses_cases_without_the_field_alike(blob_root, tmp_path):
    """The CLI's `data split`, a run's `data.draw_split` and a benchmark protocol ask the same function."""
    cases = find_cases(blob_root, "folder")
    draw = SplitDrawConfig(stratify="diagnosis")
    with pytest.raises(ValueError, match=r"data.draw_split.stratify 'diagnosis': 12 of 12 cases lack it"):
        ensure_split(tmp_path / "s.json", cases, draw, blob_root)
    protocol = SplitProtocol(kind="repeated", repeats=2, stratify="diagnosis")
    with pytest.raises(ValueError, match=r"protocol.stratify 'diagnosis': 12 of 12 cases lack it"):
        protocol_splits(protocol, blob_root, "folder", 2, tmp_path / "splits")
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "splits").exists()


def test_ensure_split_draws_once_then_reads_back(blob_root, tmp_path):
    cases = find_cases(blob_root, "folder")
    path = tmp_path / "drawn" / "split.json"
    with pytest.raises(FileNotFoundError, match=f"lesionseg data split {blob_root} --layout folder --seed 0"):
        ensure_split(path, cases, None, blob_root, "folder")
    message = ensure_split(path, cases, SplitDrawConfig(test_fraction=0.25, val_fraction=0.25, seed=3), blob_root)
    assert message is not None and "train 6, val 3, test 3 (seed 3)" in message
    first = path.read_text()
    assert json.loads(first)["info"]["drawn_from"] == str(blob_root)
    assert ensure_split(path, cases, SplitDrawConfig(seed=4), blob_root) is None  # never re-drawn
    assert path.read_text() == first
    assert ensure_split("ph2", cases, None, blob_root) is None  # a shipped name


def test_split_cases_and_select_cases(blob_root, blob_split):
    cases = find_cases(blob_root, "folder")
    split = load_split(blob_split)
    parts = split_cases(cases, split)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [8, 2, 2]
    with pytest.raises(ValueError, match="split train ids missing from the data root"):
        split_cases([c for c in cases if c.id != split.train[0]], split)
    chosen, desc = select_cases(blob_root, "folder", blob_split)
    assert [c.id for c in chosen] == split.test and "2 split test ids + 0 ids not in the split" in desc
    chosen, _ = select_cases(blob_root, "folder", blob_split, subset="val")
    assert [c.id for c in chosen] == split.val
    chosen, desc = select_cases(blob_root, "folder", None)
    assert len(chosen) == 12 and desc.startswith("all 12 cases")
