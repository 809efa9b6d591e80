"""Seeded, stored splits: train/val/test id lists, repeated 80:20 hold-outs, k-folds, and the protocols built on them.

A split is drawn once by :func:`make_split` and stored as JSON (ids, seed, how it was drawn); training and evaluation
read the stored lists and never re-draw them. The validation ids come out of the training part, so a checkpoint is
never selected on the test ids.

A :class:`SplitProtocol` (``fixed``, ``official``, ``repeated``, ``kfold``) turns a data root into one split per run;
:func:`protocol_splits` draws them once into a folder and reads them back afterwards (the benchmark's protocols).

Choosing a run's cases: :func:`ensure_split` draws a run's missing split file on first use (``data.draw_split``),
:func:`split_cases` gives the train/val/test cases of a split, :func:`select_cases` the cases an evaluation scores;
:func:`case_strata` is the one check that every case has the field a draw is stratified by.

Grouped splits: every drawing function takes ``groups`` (case id -> group, e.g. CVC-ClinicDB's video sequence or an
ISIC lesion id; :func:`case_groups` reads them from a layout, a case meta field or an ``id,group`` CSV). The drawn units
are then whole groups, so no group straddles train, val and test; the fractions are met as closely as whole groups
allow, within each stratum when ``strata`` is given too (a group counts in the stratum most of its cases are in).
Cases without a group are groups of their own. Without ``groups`` the draws are exactly those of earlier versions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .base import Case, DataProblem, find_cases, read_groups_csv, scan_cases
from .check import screen_cases

__all__ = [
    "SplitDrawConfig",
    "case_groups",
    "case_strata",
    "ensure_split",
    "select_cases",
    "split_cases",
    "PROTOCOLS",
    "Split",
    "SplitProtocol",
    "official_split",
    "protocol_splits",
    "make_split",
    "repeated_holdout",
    "kfold",
    "cv_folds",
    "load_split",
    "save_split",
    "builtin_splits",
]


@dataclass
class Split:
    """Disjoint train/val/test id lists plus how they were drawn.

    Attributes:
        train: training ids.
        val: validation ids (drawn from the training part; used for checkpoint selection).
        test: held-out ids, used only for the final evaluation.
        info: dataset name, seed, fractions, stratification; stored with the lists.
    """

    train: list[str]
    val: list[str]
    test: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = {"train": set(self.train), "val": set(self.val), "test": set(self.test)}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            common = parts[a] & parts[b]
            if common:
                raise ValueError(f"split parts {a} and {b} share ids, e.g. {sorted(common)[:3]}")

    def subset(self, name: str) -> list[str]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split subset {name!r}; use train, val or test")
        return list(getattr(self, name))

    def without(self, ids: set[str] | frozenset[str]) -> Split:
        """A copy with ``ids`` removed from every part (e.g. cases skipped for unusable files); ``info`` records
        the removed ids under ``"removed"``."""
        removed = sorted(set(ids) & self.all_ids)
        info = {**self.info, "removed": sorted(set(self.info.get("removed", [])) | set(removed))}
        return Split(
            train=[i for i in self.train if i not in ids],
            val=[i for i in self.val if i not in ids],
            test=[i for i in self.test if i not in ids],
            info=info,
        )

    def crossing_groups(self, groups: Mapping[str, str | None]) -> dict[str, list[str]]:
        """Groups whose cases lie in more than one part, with those parts (empty for a proper grouped split)."""
        parts: dict[str, set[str]] = {}
        for name in ("train", "val", "test"):
            for i in getattr(self, name):
                if groups.get(i) is not None:
                    parts.setdefault(str(groups[i]), set()).add(name)
        order = ("train", "val", "test")
        return {g: [p for p in order if p in ps] for g, ps in sorted(parts.items()) if len(ps) > 1}

    @property
    def all_ids(self) -> set[str]:
        return set(self.train) | set(self.val) | set(self.test)

    def to_dict(self) -> dict[str, Any]:
        return {"info": self.info, "train": sorted(self.train), "val": sorted(self.val), "test": sorted(self.test)}


Groups = Mapping[str, str | None]


def _units(
    ids: Sequence[str], strata: Mapping[str, Any] | None, groups: Groups
) -> tuple[dict[tuple[int, str], list[str]], dict[Any, list[tuple[int, str]]]]:
    """The drawing units of ``ids`` (a group, or a case without one) and the units of each stratum.

    Unit keys are ``(0, group)`` or ``(1, case id)``, so a case id never collides with a group name. A unit's stratum
    is the most common stratum of its cases (ties: the first in sorted order).
    """
    units: dict[tuple[int, str], list[str]] = {}
    for i in sorted(ids):
        g = groups.get(i)
        units.setdefault((0, str(g)) if g is not None else (1, i), []).append(i)
    by_stratum: dict[Any, list[tuple[int, str]]] = {}
    for key in sorted(units):
        if strata:
            counts: dict[Any, int] = {}
            for i in units[key]:
                counts[strata.get(i)] = counts.get(strata.get(i), 0) + 1
            stratum = max(sorted(counts, key=str), key=lambda v: counts[v])
        else:
            stratum = None
        by_stratum.setdefault(stratum, []).append(key)
    return units, by_stratum


def _grouped_take(
    ids: Sequence[str], strata: Mapping[str, Any] | None, frac: float, rng: np.random.Generator, groups: Groups
) -> tuple[list[str], list[str]]:
    """:func:`_stratified_take` drawing whole groups: in each stratum, groups in a seeded random order are taken
    while taking one brings the number of cases taken closer to ``frac`` of the stratum's cases (at least one group
    when ``frac > 0`` and the stratum has several)."""
    units, by_stratum = _units(ids, strata, groups)
    taken: list[str] = []
    for stratum in sorted(by_stratum, key=str):
        keys = by_stratum[stratum]
        target = frac * sum(len(units[k]) for k in keys)
        count = 0
        order = rng.permutation(len(keys))
        for j in order:
            size = len(units[keys[j]])
            if abs(count + size - target) < abs(count - target):
                taken.extend(units[keys[j]])
                count += size
        if frac > 0 and count == 0 and len(keys) > 1:
            taken.extend(units[keys[order[0]]])
    taken_set = set(taken)
    return sorted(taken), [i for i in sorted(ids) if i not in taken_set]


def _stratified_take(
    ids: Sequence[str],
    strata: Mapping[str, Any] | None,
    frac: float,
    rng: np.random.Generator,
    groups: Groups | None = None,
):
    """Split ``ids`` into (taken, rest) with ``frac`` taken from each stratum (rounded, at least one if frac > 0);
    whole groups when ``groups`` is given."""
    if groups is not None:
        return _grouped_take(ids, strata, frac, rng, groups)
    groups_: dict[Any, list[str]] = {}
    for i in sorted(ids):
        groups_.setdefault(strata.get(i) if strata else None, []).append(i)
    taken: list[str] = []
    for key in sorted(groups_, key=str):
        members = groups_[key]
        perm = rng.permutation(len(members))
        n = int(round(frac * len(members)))
        if frac > 0 and n == 0 and len(members) > 1:
            n = 1
        taken.extend(members[j] for j in perm[:n])
    taken_set = set(taken)
    return sorted(taken), [i for i in sorted(ids) if i not in taken_set]


def _strata_name(strata: Mapping[str, Any] | None, stratified_by: str | None) -> str | None:
    if not strata:
        return None
    return stratified_by or "strata"


def _group_info(ids: Sequence[str], groups: Groups | None, grouped_by: str | None) -> dict[str, Any]:
    """What a grouped draw adds to ``info`` (nothing for an ungrouped one, which keeps its files as they were)."""
    if groups is None:
        return {}
    named = {groups[i] for i in ids if groups.get(i) is not None}
    return {
        "grouped_by": grouped_by or "groups",
        "groups": len(named),
        "ungrouped_cases": sum(1 for i in ids if groups.get(i) is None),
    }


def _check_grouped(split: Split, groups: Groups | None) -> Split:
    if groups is not None:
        crossing = split.crossing_groups(groups)
        if crossing:  # a bug, not bad input: the draws take whole groups
            raise AssertionError(f"grouped split has groups in several parts: {dict(list(crossing.items())[:3])}")
    return split


def make_split(
    ids: Sequence[str],
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    strata: Mapping[str, Any] | None = None,
    name: str = "",
    stratified_by: str | None = None,
    groups: Groups | None = None,
    grouped_by: str | None = None,
) -> Split:
    """Draw a seeded train/val/test split.

    Args:
        ids: all case ids.
        test_fraction: fraction of all ids held out for test.
        val_fraction: fraction of all ids taken from the training part for validation.
        seed: seed of the draw.
        strata: optional id -> class (e.g. PH2 diagnosis) to stratify every part by.
        name: dataset name stored in ``info``.
        stratified_by: what ``strata`` holds (e.g. ``diagnosis``), stored in ``info``; ``"strata"`` when
            ``strata`` is given without a name.
        groups: optional id -> group (None: a group of its own); whole groups are drawn, so no group is in two
            parts, and the fractions are met as closely as whole groups allow.
        grouped_by: what ``groups`` holds (e.g. ``sequence``), stored in ``info``.
    """
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise ValueError(f"bad fractions test={test_fraction} val={val_fraction}")
    if len(set(ids)) != len(ids):
        raise ValueError("ids contain duplicates")
    rng = np.random.default_rng(seed)
    test, rest = _stratified_take(ids, strata, test_fraction, rng, groups)
    # grouped: the val fraction is of all cases, as without groups, though the test part drawn may be off its target
    val_share = val_fraction / (1 - test_fraction) if groups is None else val_fraction * len(ids) / max(len(rest), 1)
    val, train = _stratified_take(rest, strata, min(val_share, 1.0), rng, groups)
    info = {
        "dataset": name,
        "seed": seed,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "stratified_by": _strata_name(strata, stratified_by),
        **_group_info(ids, groups, grouped_by),
        "generator": "lesionseg.data.splits.make_split",
    }
    return _check_grouped(Split(train=train, val=val, test=test, info=info), groups)


def repeated_holdout(
    ids: Sequence[str],
    repeats: int = 3,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    strata: Mapping[str, Any] | None = None,
    name: str = "",
    stratified_by: str | None = None,
    groups: Groups | None = None,
    grouped_by: str | None = None,
) -> list[Split]:
    """``repeats`` independent 80:20-style splits with seeds ``seed, seed + 1, ...`` (grouped as :func:`make_split`
    when ``groups`` is given)."""
    return [
        make_split(ids, test_fraction, val_fraction, seed + r, strata, name, stratified_by, groups, grouped_by)
        for r in range(repeats)
    ]


def kfold(
    ids: Sequence[str],
    k: int = 5,
    val_fraction: float = 0.1,
    seed: int = 0,
    strata: Mapping[str, Any] | None = None,
    name: str = "",
    stratified_by: str | None = None,
    groups: Groups | None = None,
    grouped_by: str | None = None,
) -> list[Split]:
    """K folds: each fold's test part is one k-th of the ids (stratified if given), val drawn from the rest.

    With ``groups``, whole groups are dealt to the folds: within each stratum, largest group first (ties in seeded
    random order), each to the fold with the fewest cases of that stratum, then the fewest cases overall.
    """
    if k < 2 or k > len(ids):
        raise ValueError(f"k must be in [2, {len(ids)}], got {k}")
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    if groups is not None:
        units, by_stratum = _units(ids, strata, groups)
        if k > len(units):
            raise ValueError(f"k must be at most the number of groups ({len(units)}), got {k}")
        sizes = [0] * k
        for stratum in sorted(by_stratum, key=str):
            keys = by_stratum[stratum]
            order = rng.permutation(len(keys))
            in_stratum = [0] * k
            for j in sorted(range(len(keys)), key=lambda j: (-len(units[keys[j]]), order[j])):
                members = units[keys[j]]
                f = min(range(k), key=lambda f: (in_stratum[f], sizes[f], f))
                folds[f].extend(members)
                in_stratum[f] += len(members)
                sizes[f] += len(members)
    else:
        by_stratum_ids: dict[Any, list[str]] = {}
        for i in sorted(ids):
            by_stratum_ids.setdefault(strata.get(i) if strata else None, []).append(i)
        offset = 0
        for key in sorted(by_stratum_ids, key=str):
            members = [by_stratum_ids[key][j] for j in rng.permutation(len(by_stratum_ids[key]))]
            for j, member in enumerate(members):
                folds[(j + offset) % k].append(member)
            offset += len(members)
    splits = []
    for f in range(k):
        test = sorted(folds[f])
        rest = sorted(i for g in range(k) if g != f for i in folds[g])
        val, train = _stratified_take(rest, strata, min(val_fraction * len(ids) / len(rest), 1.0), rng, groups)
        info = {
            "dataset": name,
            "seed": seed,
            "fold": f,
            "k": k,
            "val_fraction": val_fraction,
            "stratified_by": _strata_name(strata, stratified_by),
            **_group_info(ids, groups, grouped_by),
            "generator": "lesionseg.data.splits.kfold",
        }
        splits.append(_check_grouped(Split(train=train, val=val, test=test, info=info), groups))
    return splits


def cv_folds(
    split: Split,
    k: int = 5,
    seed: int = 0,
    strata: Mapping[str, Any] | None = None,
    stratified_by: str | None = None,
    groups: Groups | None = None,
    grouped_by: str | None = None,
) -> list[Split]:
    """Cross-validation inside a split's training part (nnU-Net style): the test ids are never touched.

    The split's train and val ids together are dealt into ``k`` folds by :func:`kfold` (stratified and grouped when
    given). Fold ``f`` trains on the other folds and validates on fold ``f``, whose predictions are the out-of-fold
    predictions; its test part is the split's own test part, unchanged.
    """
    pool = sorted([*split.train, *split.val])
    parts = kfold(pool, k, 0.0, seed, strata, split.info.get("dataset", ""), stratified_by, groups, grouped_by)
    folds = []
    for part in parts:
        info = {**part.info, "generator": "lesionseg.data.splits.cv_folds", "of_split": dict(split.info)}
        folds.append(Split(train=sorted([*part.train, *part.val]), val=part.test, test=list(split.test), info=info))
    return folds


def case_groups(cases: Sequence[Case], key: str) -> dict[str, str | None]:
    """Case id -> group, for a grouped split ``--group-by key``.

    Args:
        cases: the cases of a data root.
        key: ``group`` (the layout's own: CVC-ClinicDB sequences, ISIC lesion ids from a metadata CSV, the folder
            layout's ``groups.csv``), the path of an ``id,group`` CSV, or a case meta field (e.g. ``lesion_id``,
            ``patient_id``).

    Returns:
        A group for every case id; None for a case the source gives no group (it then forms a group of its own).

    Raises:
        ValueError: no case has a group under ``key`` (the message says what the cases have), or the CSV is bad.
    """
    if key.lower().endswith(".csv") or Path(key).is_file():
        if not Path(key).is_file():
            raise ValueError(f"--group-by {key}: no such groups file")
        table = read_groups_csv(key)
        out = {c.id: table.get(c.id) for c in cases}
    elif key == "group":
        out = {c.id: c.group for c in cases}
    else:
        out = {c.id: None if c.meta.get(key) in (None, "") else str(c.meta[key]) for c in cases}
    if cases and all(g is None for g in out.values()):
        fields = sorted({f for c in cases for f in c.meta})
        has_group = "the layout gives no groups" if all(c.group is None for c in cases) else "the layout gives groups"
        raise ValueError(
            f"no case has a group under {key!r} ({has_group}; case fields: {', '.join(fields) or 'none'}); use "
            "'group', a case field, or an id,group CSV file"
        )
    return out


def save_split(split: Split, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(split.to_dict(), indent=1) + "\n")


def builtin_splits() -> list[str]:
    """Names of the splits shipped with the package (``lesionseg/splits/*.json``)."""
    return sorted(
        p.name[:-5] for p in resources.files("lesionseg").joinpath("splits").iterdir() if p.name.endswith(".json")
    )


def load_split(name_or_path: str | Path) -> Split:
    """Load a stored split: a shipped name (``ph2``, ``kvasir_seg``) or a JSON path."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such split file")
        text = path.read_text()
    else:
        res = resources.files("lesionseg").joinpath("splits", f"{name_or_path}.json")
        if not res.is_file():
            raise ValueError(f"unknown split {name_or_path!r}; shipped splits: {', '.join(builtin_splits())}")
        text = res.read_text()
    try:
        d = json.loads(text)
        return Split(train=d["train"], val=d["val"], test=d["test"], info=d.get("info", {}))
    except (KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{name_or_path}: not a split file ({err})") from err


PROTOCOLS = ("fixed", "official", "repeated", "kfold")


@dataclass
class SplitProtocol:
    """How the runs of a comparison get their splits.

    Attributes:
        kind: ``fixed`` (one stored split for every run), ``official`` (the layout's own train/val/test subsets, e.g.
            ISIC's; val drawn from train when the layout has none), ``repeated`` (``repeats`` seeded train/test draws,
            e.g. 80:20 repeated 3x) or ``kfold`` (``k`` folds).
        split: for ``fixed``: a stored split name (``ph2``) or JSON path.
        repeats: number of draws for ``repeated``.
        k: number of folds for ``kfold``.
        test_fraction: test part of every ``repeated`` draw.
        val_fraction: validation part (always taken out of the training part; checkpoints are never chosen on test).
        seed: seed of the first draw (draw r uses ``seed + r``; folds share ``seed``).
        stratify: case meta field to stratify draws by (``diagnosis`` for PH2).
        group_by: draw whole groups (see :func:`case_groups`: ``group``, a case field or an ``id,group`` CSV), so
            that no group straddles train, val and test; None draws cases.
    """

    kind: str = "fixed"
    split: str | None = None
    repeats: int = 3
    k: int = 5
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0
    stratify: str | None = None
    group_by: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in PROTOCOLS:
            raise ValueError(f"protocol.kind must be one of {PROTOCOLS}, got {self.kind!r}")
        if self.kind == "fixed" and not self.split:
            raise ValueError("protocol.kind fixed needs protocol.split (a stored split name or JSON path)")

    @property
    def draws(self) -> int | None:
        """Number of distinct splits (``repeats`` or ``k``); None when every run shares one split."""
        return {"repeated": self.repeats, "kfold": self.k}.get(self.kind)

    def describe(self) -> str:
        """One line for a report."""
        grouped = f", whole groups by `{Path(self.group_by).name}`" if self.group_by else ""
        return {
            # a split file by its name only: a report must not depend on where the file was
            "fixed": f"stored split `{Path(str(self.split)).name}`",
            "official": "the dataset's official subsets",
            "repeated": f"{self.repeats} seeded draws of {1 - self.test_fraction:.0%}:{self.test_fraction:.0%} "
            "train:test",
            "kfold": f"{self.k}-fold cross-validation",
        }[self.kind] + (grouped if self.kind in ("repeated", "kfold") else "")


def official_split(
    root: str | Path, layout: str | None, val_fraction: float = 0.1, seed: int = 0, group_by: str | None = None
) -> Split:
    """The layout's own subsets (``meta["subset"]``); without a val subset, val is drawn (seeded) from train, whole
    groups when ``group_by`` is given (see :func:`case_groups`)."""
    cases = find_cases(root, layout)
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c in cases:
        subset = c.meta.get("subset")
        if subset not in parts:
            raise ValueError(f"protocol official: case {c.id} ({c.image}) has no official subset in its layout")
        if c.mask is not None:
            parts[subset].append(c.id)
    if not parts["train"] or not parts["test"]:
        raise ValueError(f"protocol official: {root} lacks a train or test subset")
    info: dict[str, Any] = {"dataset": Path(root).name, "generator": "official subsets"}
    if not parts["val"]:
        groups = case_groups(cases, group_by) if group_by else None
        drawn = make_split(parts["train"], 0.0, val_fraction, seed, groups=groups, grouped_by=group_by)
        parts["train"], parts["val"] = drawn.train, drawn.val
        info["val"] = f"{val_fraction:.0%} of train, seed {seed}"
    return Split(train=sorted(parts["train"]), val=sorted(parts["val"]), test=sorted(parts["test"]), info=info)


def protocol_splits(
    protocol: SplitProtocol, root: str | Path, layout: str | None, runs: int, folder: str | Path
) -> list[Path]:
    """The split file ``folder/run<r>.json`` of each of ``runs`` runs, drawn on first use and read back afterwards.

    ``fixed`` and ``official`` give every run the same split; ``repeated`` and ``kfold`` give run r draw
    ``r % draws``. Files that exist are never redrawn, so a run never changes split.
    """
    folder = Path(folder)
    paths = [folder / f"run{r}.json" for r in range(runs)]
    if all(p.is_file() for p in paths):
        return paths
    p = protocol
    if p.kind == "fixed":
        splits = [load_split(p.split)] * runs
    elif p.kind == "official":
        splits = [official_split(root, layout, p.val_fraction, p.seed, p.group_by)] * runs
    else:
        cases = find_cases(root, layout)
        ids = [c.id for c in cases]
        strata = case_strata(cases, p.stratify, "protocol.stratify") if p.stratify else None
        name = Path(root).name
        groups = case_groups(cases, p.group_by) if p.group_by else None
        if p.kind == "repeated":
            drawn = repeated_holdout(
                ids, p.repeats, p.test_fraction, p.val_fraction, p.seed, strata, name, p.stratify, groups, p.group_by
            )
        else:
            drawn = kfold(ids, p.k, p.val_fraction, p.seed, strata, name, p.stratify, groups, p.group_by)
        splits = [drawn[r % len(drawn)] for r in range(runs)]
    folder.mkdir(parents=True, exist_ok=True)
    for split, path in zip(splits, paths):
        if not path.is_file():
            # Concurrent callers may draw at the same moment; each draw is identical, and a rename never shows a
            # half-written file.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_split(split, tmp)
            os.replace(tmp, path)
    return paths


@dataclass
class SplitDrawConfig:
    """How to draw ``data.split`` on first use when that JSON file does not exist yet (then it is stored and read back).

    Attributes:
        test_fraction: fraction of the drawn ids held out for test.
        val_fraction: fraction of the drawn ids taken out of the training part for validation.
        seed: seed of the draw.
        subsets: draw only among cases of these official subsets (``[train]`` = ISIC 2018's Task 1 training images,
            as the papers split them; ``[train, val]`` = the ISIC 2017 pool of the VM-UNet family); None = every case
            with a mask.
        stratify: case meta field to stratify by (``diagnosis`` for PH2); None = no stratification.
    """

    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0
    subsets: tuple[str, ...] | None = None
    stratify: str | None = None


def case_strata(cases: Sequence[Case], field: str, option: str = "stratify") -> dict[str, Any]:
    """Case id -> the case's ``field`` (a meta field, e.g. PH2's ``diagnosis``): the strata of a stratified draw.

    Args:
        cases: the cases to draw from.
        field: the meta field to stratify by.
        option: the option or config key that named ``field``, for the message.

    Raises:
        ValueError: some cases lack the field (how many, and one of them).
    """
    strata = {c.id: c.meta.get(field) for c in cases}
    lacking = [i for i, v in strata.items() if v is None]
    if lacking:
        raise ValueError(f"{option} {field!r}: {len(lacking)} of {len(strata)} cases lack it, e.g. {lacking[0]}")
    return strata


def ensure_split(
    split: str | Path,
    cases: Sequence[Case],
    draw: SplitDrawConfig | None,
    root: str | Path,
    layout: str | None = None,
) -> str | None:
    """Draw and store ``split`` when it names a JSON file that does not exist and ``draw`` says how (a run's
    ``data.split`` and ``data.draw_split``).

    Args:
        split: a shipped split name or a JSON path.
        cases: the cases of ``root`` to draw from (those with a mask, of ``draw.subsets`` when given).
        draw: how to draw; None = a missing file is an error.
        root: the data root (named in the messages and in the split's ``drawn_from``).
        layout: the layout of ``root`` (named in the ``lesionseg data split`` command of the error).

    Returns:
        A message describing the draw, or None when the split already exists (or is a shipped name).

    Raises:
        FileNotFoundError: the split file is missing and ``draw`` is None; the message names the
            ``lesionseg data split`` command that draws it.
        ValueError: nothing to draw from, or cases lacking the ``draw.stratify`` field.
    """
    path = Path(split)
    if path.suffix != ".json" or path.is_file():
        return None
    if draw is None:
        raise FileNotFoundError(
            f"{path}: no such split file. Draw and store it once with\n  lesionseg data split {root} "
            f"{'--layout ' + layout + ' ' if layout else ''}--seed 0 --out {path}\n"
            "(or give the config a data.draw_split section, which draws it on first use)"
        )
    pool = [c for c in cases if c.mask is not None]
    where = f"{root}" + (f" (subsets {', '.join(draw.subsets)})" if draw.subsets else "")
    if draw.subsets is not None:
        pool = [c for c in pool if c.meta.get("subset") in draw.subsets]
    if not pool:
        raise ValueError(f"{where}: no labelled cases to draw {path} from (data.draw_split.subsets)")
    strata = case_strata(pool, draw.stratify, "data.draw_split.stratify") if draw.stratify else None
    drawn = make_split(
        [c.id for c in pool], draw.test_fraction, draw.val_fraction, draw.seed, strata, name=Path(root).name
    )
    drawn.info["drawn_from"] = where
    save_split(drawn, path)
    return (
        f"split {path} did not exist: drew it from {len(pool)} cases of {where}: train {len(drawn.train)}, "
        f"val {len(drawn.val)}, test {len(drawn.test)} (seed {draw.seed}), and stored it; later runs read it back"
    )


def split_cases(cases: Sequence[Case], split: Split) -> dict[str, list[Case]]:
    """Train/val/test cases of a split; ids the split lists but the root lacks are an error."""
    by_id = {c.id: c for c in cases}
    out = {}
    for part in ("train", "val", "test"):
        ids = split.subset(part)
        missing = [i for i in ids if i not in by_id]
        if missing and part != "test":
            raise ValueError(f"split {part} ids missing from the data root, e.g. {missing[:3]}")
        out[part] = [by_id[i] for i in ids if i in by_id]
    return out


def select_cases(
    root: str | Path,
    layout: str | None = None,
    split: str | Split | None = None,
    subset: str = "test",
    skip_bad: bool = False,
    channels: int = 3,
    progress: bool = False,
    skipped: list[DataProblem] | None = None,
    known_readable: Callable[[Case], bool] | None = None,
) -> tuple[list[Case], str]:
    """Cases of ``root`` to evaluate, and a description of the choice.

    With a split and ``subset="test"``: the split's test ids found under ``root`` plus every id the split does not
    list at all (cases unseen in training, e.g. another copy of the dataset); ids used for training or validation are
    left out. ``subset="train"``/``"val"``: exactly those ids. ``subset="all"`` or no split: every case.

    Every chosen case is read once first: cases with unusable files (unreadable, no mask, sizes differ, ...) raise
    :class:`~lesionseg.data.BadDataError` naming all of them, or with ``skip_bad`` are left out and their problems
    appended to ``skipped``. Cases for which ``known_readable`` returns True (a valid disk-cache entry) are not read.
    """
    scan = scan_cases(root, layout)
    ids = sorted({c.id for c in scan.cases if c.mask is not None} | {p.case_id for p in scan.problems if p.case_id})
    sp = None if split is None or subset == "all" else (split if isinstance(split, Split) else load_split(split))
    if sp is None:
        chosen = ids
    elif subset == "test":
        seen = set(sp.train) | set(sp.val)
        chosen = [i for i in ids if i not in seen]
    else:
        wanted = set(sp.subset(subset))
        chosen = [i for i in ids if i in wanted]
    cases, bad = screen_cases(
        scan, chosen, skip_bad=skip_bad, channels=channels, progress=progress, known_readable=known_readable
    )
    cases = [c for c in cases if c.mask is not None]
    if skipped is not None:
        skipped.extend(bad)
    note = f" ({len({p.case_id for p in bad})} skipped for unusable files)" if bad else ""
    if sp is None:
        desc = f"all {len(cases)} cases of {root}{note}"
    elif subset == "test":
        n_test = sum(c.id in set(sp.test) for c in cases)
        desc = (
            f"{len(cases)} cases of {root}: {n_test} split test ids + {len(cases) - n_test} ids not in the split{note}"
        )
    else:
        desc = f"{len(cases)} {subset} ids of {root}{note}"
    if not cases:
        raise ValueError(f"{root}: no cases left to evaluate for subset {subset!r}")
    return cases, desc
