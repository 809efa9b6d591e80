"""Grouped splits: whole groups (video sequences, lesions, patients) never straddle train, val and test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import build_cvc, build_folder, build_isic

from lesionseg.cli import main
from lesionseg.data import (
    SplitProtocol,
    case_groups,
    find_cases,
    kfold,
    load_split,
    make_split,
    protocol_splits,
    read_groups_csv,
    repeated_holdout,
)
from lesionseg.data.cvc import CVC_SEQUENCE_ENDS, cvc_sequence


def _sequences() -> tuple[list[str], dict[str, str]]:
    """CVC-ClinicDB's 612 frame ids and their 29 sequences (groups of 6 to 65 frames)."""
    ids = [str(n) for n in range(1, 613)]
    return ids, {i: cvc_sequence(i) for i in ids}


def test_cvc_sequence_table_covers_the_612_frames_in_29_sequences() -> None:
    assert len(CVC_SEQUENCE_ENDS) == 29 and CVC_SEQUENCE_ENDS[-1] == 612
    assert list(CVC_SEQUENCE_ENDS) == sorted(set(CVC_SEQUENCE_ENDS))  # contiguous, non-empty ranges
    assert (cvc_sequence(1), cvc_sequence(25), cvc_sequence(26), cvc_sequence("612")) == (
        "seq01",
        "seq01",
        "seq02",
        "seq29",
    )
    assert cvc_sequence(200) == "seq10" and cvc_sequence(205) == "seq10" and cvc_sequence(206) == "seq11"
    assert cvc_sequence(0) is None and cvc_sequence(613) is None and cvc_sequence("a12") is None
    _, groups = _sequences()
    assert len(set(groups.values())) == 29


def test_a_random_split_leaks_sequences_and_a_grouped_one_does_not() -> None:
    ids, groups = _sequences()
    assert make_split(ids, 0.2, 0.1, seed=0).crossing_groups(groups)  # the leak grouped splits exist for
    for seed in range(10):
        split = make_split(ids, 0.2, 0.1, seed=seed, groups=groups, grouped_by="group")
        assert split.crossing_groups(groups) == {}
        assert sorted(split.train + split.val + split.test, key=int) == ids
        # whole sequences of up to 65 frames: the parts are near, not at, 20 % and 10 %
        assert abs(len(split.test) - 0.2 * 612) <= 33 and abs(len(split.val) - 0.1 * 612) <= 33
        assert split.info["grouped_by"] == "group" and split.info["groups"] == 29
        assert split.info["ungrouped_cases"] == 0


def test_grouped_repeated_and_kfold_keep_groups_whole() -> None:
    ids, groups = _sequences()
    draws = repeated_holdout(ids, 3, 0.2, 0.1, seed=4, groups=groups)
    assert len({tuple(s.test) for s in draws}) == 3
    assert all(s.crossing_groups(groups) == {} for s in draws)
    folds = kfold(ids, 5, 0.1, seed=2, groups=groups, grouped_by="sequence")
    assert all(f.crossing_groups(groups) == {} for f in folds)
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == set(ids) and sum(map(len, tests)) == 612  # every frame tested exactly once
    assert max(map(len, tests)) - min(map(len, tests)) <= 65  # balanced to within one sequence
    assert {f.info["fold"] for f in folds} == set(range(5)) and folds[0].info["grouped_by"] == "sequence"
    with pytest.raises(ValueError, match="at most the number of groups"):
        kfold([f"c{i}" for i in range(10)], 3, groups={f"c{i}": "one" if i < 9 else "two" for i in range(10)})


def test_grouping_with_stratification_and_ungrouped_cases() -> None:
    rng = np.random.default_rng(0)
    ids = [f"ISIC_{i:07d}" for i in range(300)]
    # lesions with 1 to 4 images each; a third of the images have no lesion id (groups of their own)
    lesion_sizes = rng.integers(1, 5, 120)
    lesions = [f"IL_{j:07d}" for j, n in enumerate(lesion_sizes) for _ in range(n)][:200]
    groups: dict[str, str | None] = {i: (lesions[k] if k < len(lesions) else None) for k, i in enumerate(ids)}
    # a diagnosis per lesion (so strata agree within a group), 25 % melanoma
    diagnosis = {i: int(hash(groups[i] or i) % 4 == 0) for i in ids}
    for seed in range(5):
        split = make_split(ids, 0.2, 0.1, seed, strata=diagnosis, groups=groups, stratified_by="diagnosis")
        assert split.crossing_groups(groups) == {}
        for part in (split.train, split.val, split.test):
            share = np.mean([diagnosis[i] for i in part])
            assert abs(share - np.mean(list(diagnosis.values()))) < 0.08  # stratified as well as grouped
    assert split.info["ungrouped_cases"] == 100 and split.info["stratified_by"] == "diagnosis"


def test_ungrouped_draws_are_unchanged() -> None:
    # the shipped kvasir_seg split was drawn (unstratified, seed 0) before grouping existed: without groups the same
    # call must still draw it, id for id
    shipped = load_split("kvasir_seg")
    drawn = make_split(sorted(shipped.all_ids), 0.2, 0.1, seed=0)
    assert (drawn.train, drawn.val, drawn.test) == (sorted(shipped.train), sorted(shipped.val), sorted(shipped.test))
    assert "grouped_by" not in drawn.info


def test_layouts_give_their_groups(tmp_path: Path) -> None:
    cvc = build_cvc(tmp_path / "cvc" / "CVC-ClinicDB")
    assert {c.id: c.group for c in find_cases(cvc.root)} == {"1": "seq01", "2": "seq01", "10": "seq01"}
    folder = build_folder(tmp_path / "generic")
    assert all(c.group is None for c in find_cases(folder.root))
    (folder.root / "groups.csv").write_text("id,group,note\ncase1,P1,x\ncase10,P1,\ncase2,P2,\n")
    assert {c.id: c.group for c in find_cases(folder.root)} == {"case1": "P1", "case10": "P1", "case2": "P2"}
    (folder.root / "groups.csv").write_text("id,group\ncase1,P1\ncase1,P2\n")
    with pytest.raises(ValueError, match=r"groups.csv, line 3: id 'case1' has two groups"):
        find_cases(folder.root)
    (folder.root / "groups.csv").write_text("case,patient\ncase1,P1\n")
    with pytest.raises(ValueError, match="needs the columns id,group; found case, patient"):
        read_groups_csv(folder.root / "groups.csv")


def test_isic_lesion_ids_from_metadata_beside_the_data(tmp_path: Path) -> None:
    built = build_isic(tmp_path / "isic", "isic2018")
    ids = built.ids  # ISIC_0001000, ISIC_0001007, ... one per test/val, two train
    # HAM10000-style table in the root and an ISIC 2019-style table in the training folder
    (built.root / "HAM10000_metadata.csv").write_text(f"lesion_id,image_id,dx\nHAM_1,{ids[0]},nv\nHAM_1,{ids[1]},nv\n")
    (built.root / "ISIC2018_Task1-2_Training_Input" / "ISIC_2019_Training_Metadata.csv").write_text(
        f"image,age_approx,lesion_id,sex\n{ids[2]},45,BCN_9,male\n{ids[3]},50,,female\n"
    )
    cases = {c.id: c for c in find_cases(built.root)}
    assert [cases[i].group for i in ids] == ["HAM_1", "HAM_1", "BCN_9", None]
    assert cases[ids[0]].meta == {"subset": "train", "lesion_id": "HAM_1"}
    assert case_groups(list(cases.values()), "lesion_id") == dict(zip(ids, ["HAM_1", "HAM_1", "BCN_9", None]))


def test_case_groups_keys(tmp_path: Path) -> None:
    folder = build_folder(tmp_path / "generic")
    cases = find_cases(folder.root)
    with pytest.raises(ValueError, match="no case has a group under 'group' \\(the layout gives no groups"):
        case_groups(cases, "group")
    csv = tmp_path / "patients.csv"
    csv.write_text("id,group\ncase1,A\ncase2,A\n")
    assert case_groups(cases, str(csv)) == {"case1": "A", "case10": None, "case2": "A"}
    with pytest.raises(ValueError, match="no such groups file"):
        case_groups(cases, str(tmp_path / "missing.csv"))


def _grouped_folder(root: Path, n: int = 30) -> tuple[Path, dict[str, str]]:
    from data_fixtures import case_image, case_mask, write_image, write_mask

    groups = {f"img{k:02d}": f"patient{k // 3}" for k in range(n)}  # three images per patient
    for k, cid in enumerate(groups):
        write_image(root / "images" / f"{cid}.png", case_image(k))
        write_mask(root / "masks" / f"{cid}.png", case_mask(k))
    (root / "groups.csv").write_text("id,group\n" + "".join(f"{i},{g}\n" for i, g in groups.items()))
    return root, groups


def test_cli_split_group_by(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, groups = _grouped_folder(tmp_path / "data")
    out = tmp_path / "split.json"
    assert main(["data", "split", str(root), "--group-by", "group", "--out", str(out), "--seed", "1"]) == 0
    split = json.loads(out.read_text())
    parts = {p: {groups[i] for i in split[p]} for p in ("train", "val", "test")}
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"] or parts["val"] & parts["test"])
    assert (len(split["test"]), len(split["val"])) == (6, 3)  # 20 % and 10 % of 30, in whole patients of 3
    assert split["info"]["grouped_by"] == "group" and split["info"]["groups"] == 10
    printed = capsys.readouterr().out
    assert "train 21, val 3, test 6 (groups: train 7, val 1, test 2; none in two parts)" in printed
    assert main(["data", "split", str(root), "--group-by", "site", "--out", str(out)]) == 1
    assert "no case has a group under 'site'" in capsys.readouterr().err


def test_protocol_group_by(tmp_path: Path) -> None:
    root, groups = _grouped_folder(tmp_path / "data")
    protocol = SplitProtocol(kind="kfold", k=5, group_by="group")
    paths = protocol_splits(protocol, root, "folder", 5, tmp_path / "splits")
    folds = [load_split(p) for p in paths]
    assert all(f.crossing_groups(groups) == {} for f in folds)
    assert sorted(i for f in folds for i in f.test) == sorted(groups)
    assert protocol.describe() == "5-fold cross-validation, whole groups by `group`"
    assert SplitProtocol(kind="kfold", k=5).describe() == "5-fold cross-validation"
