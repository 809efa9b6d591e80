from __future__ import annotations

from collections import Counter

import pytest

from lesionseg.data import Split, builtin_splits, kfold, load_split, make_split, repeated_holdout, save_split

IDS = [f"c{i:03d}" for i in range(100)]
STRATA = {i: (0 if n < 40 else 1 if n < 80 else 2) for n, i in enumerate(IDS)}  # 40 / 40 / 20


def _disjoint_cover(s: Split, ids: list[str]) -> None:
    parts = [set(s.train), set(s.val), set(s.test)]
    assert sum(len(p) for p in parts) == len(ids)
    assert set().union(*parts) == set(ids)


def test_make_split_disjoint_sizes_and_deterministic() -> None:
    s = make_split(IDS, 0.2, 0.1, seed=3)
    _disjoint_cover(s, IDS)
    assert (len(s.train), len(s.val), len(s.test)) == (70, 10, 20)
    again = make_split(list(reversed(IDS)), 0.2, 0.1, seed=3)  # input order does not matter
    assert (again.train, again.val, again.test) == (s.train, s.val, s.test)
    other = make_split(IDS, 0.2, 0.1, seed=4)
    assert other.test != s.test
    assert s.info["seed"] == 3


def test_make_split_stratified() -> None:
    s = make_split(IDS, 0.2, 0.1, seed=0, strata=STRATA)
    _disjoint_cover(s, IDS)
    assert Counter(STRATA[i] for i in s.test) == {0: 8, 1: 8, 2: 4}
    val = Counter(STRATA[i] for i in s.val)
    assert abs(val[0] - 4) <= 1 and abs(val[1] - 4) <= 1 and abs(val[2] - 2) <= 1
    assert s.info["stratified_by"] == "strata"  # strata given without saying what they hold
    named = make_split(IDS, 0.2, 0.1, seed=0, strata=STRATA, stratified_by="tuberculosis")
    assert named.info["stratified_by"] == "tuberculosis" and named.test == s.test
    assert make_split(IDS, 0.2, 0.1, seed=0, stratified_by="diagnosis").info["stratified_by"] is None
    for fold in kfold(IDS, 3, strata=STRATA, stratified_by="subset"):
        assert fold.info["stratified_by"] == "subset"
    assert repeated_holdout(IDS, 2, strata=STRATA, stratified_by="x")[1].info["stratified_by"] == "x"


def test_val_comes_out_of_the_training_part() -> None:
    a = make_split(IDS, 0.2, 0.1, seed=7)
    b = make_split(IDS, 0.2, 0.25, seed=7)
    assert a.test == b.test  # the test part does not depend on how much validation is taken
    assert set(b.val) <= set(a.train) | set(a.val)
    assert set(a.train) | set(a.val) == set(b.train) | set(b.val)


def test_make_split_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="fractions"):
        make_split(IDS, 0.6, 0.5)
    with pytest.raises(ValueError, match="duplicates"):
        make_split(IDS + IDS[:1])
    with pytest.raises(ValueError, match="share ids"):
        Split(train=["a"], val=[], test=["a"])


def test_kfold_test_folds_partition_the_ids() -> None:
    folds = kfold(IDS, k=5, seed=1, strata=STRATA)
    assert len(folds) == 5
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == set(IDS)
    assert sum(len(t) for t in tests) == len(IDS)
    for f in folds:
        _disjoint_cover(f, IDS)
        assert len(f.test) == 20
        assert Counter(STRATA[i] for i in f.test) == {0: 8, 1: 8, 2: 4}
        assert abs(len(f.val) - 10) <= 1
    assert [f.info["fold"] for f in folds] == list(range(5))
    assert [f.test for f in kfold(IDS, k=5, seed=1, strata=STRATA)] == [f.test for f in folds]
    with pytest.raises(ValueError, match="k must be"):
        kfold(IDS, k=1)


def test_repeated_holdout_seeds_differ() -> None:
    reps = repeated_holdout(IDS, repeats=3, seed=10, strata=STRATA, name="toy")
    assert [r.info["seed"] for r in reps] == [10, 11, 12]
    assert len({tuple(r.test) for r in reps}) == 3
    for r in reps:
        _disjoint_cover(r, IDS)
        assert r.info["dataset"] == "toy"


def test_save_load_round_trip(tmp_path) -> None:
    s = make_split(IDS, seed=2, strata=STRATA, name="toy")
    path = tmp_path / "sub" / "toy.json"
    save_split(s, path)
    loaded = load_split(path)
    assert (loaded.train, loaded.val, loaded.test) == (sorted(s.train), sorted(s.val), sorted(s.test))
    assert loaded.info == s.info
    assert loaded.subset("val") == sorted(s.val)
    with pytest.raises(ValueError, match="unknown split subset"):
        loaded.subset("dev")


def test_load_split_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        load_split("nope")
    with pytest.raises(FileNotFoundError):
        load_split(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": []}')
    with pytest.raises(ValueError, match="not a split file"):
        load_split(bad)


def test_builtin_splits_load() -> None:
    names = builtin_splits()
    assert {"ph2", "kvasir_seg"} <= set(names)
    for name in names:
        s = load_split(name)
        assert s.train and s.test
