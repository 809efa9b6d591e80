"""Seeded, stored splits: train/val/test id lists, repeated 80:20 hold-outs, k-folds, and the protocols built on them.

A split is drawn once by :func:`make_split` and stored as JSON (ids, seed, how it was drawn); training and evaluation
read the stored lists and never re-draw them. The validation ids come out of the training part, so a checkpoint is
never selected on the test ids.

A :class:`SplitProtocol` (``fixed``, ``official``, ``repeated``, ``kfold``) turns a data root into one split per run;
:func:`protocol_splits` draws them once into a folder and reads them back afterwards (the benchmark's protocols).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .base import find_cases

__all__ = [
    "PROTOCOLS",
    "Split",
    "SplitProtocol",
    "official_split",
    "protocol_splits",
    "make_split",
    "repeated_holdout",
    "kfold",
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

    @property
    def all_ids(self) -> set[str]:
        return set(self.train) | set(self.val) | set(self.test)

    def to_dict(self) -> dict[str, Any]:
        return {"info": self.info, "train": sorted(self.train), "val": sorted(self.val), "test": sorted(self.test)}


def _stratified_take(ids: Sequence[str], strata: Mapping[str, Any] | None, frac: float, rng: np.random.Generator):
    """Split ``ids`` into (taken, rest) with ``frac`` taken from each stratum (rounded, at least one if frac > 0)."""
    groups: dict[Any, list[str]] = {}
    for i in sorted(ids):
        groups.setdefault(strata.get(i) if strata else None, []).append(i)
    taken: list[str] = []
    for key in sorted(groups, key=str):
        members = groups[key]
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


def make_split(
    ids: Sequence[str],
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    strata: Mapping[str, Any] | None = None,
    name: str = "",
    stratified_by: str | None = None,
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
    """
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise ValueError(f"bad fractions test={test_fraction} val={val_fraction}")
    if len(set(ids)) != len(ids):
        raise ValueError("ids contain duplicates")
    rng = np.random.default_rng(seed)
    test, rest = _stratified_take(ids, strata, test_fraction, rng)
    val, train = _stratified_take(rest, strata, val_fraction / (1 - test_fraction), rng)
    info = {
        "dataset": name,
        "seed": seed,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "stratified_by": _strata_name(strata, stratified_by),
        "generator": "lesionseg.data.splits.make_split",
    }
    return Split(train=train, val=val, test=test, info=info)


def repeated_holdout(
    ids: Sequence[str],
    repeats: int = 3,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    strata: Mapping[str, Any] | None = None,
    name: str = "",
    stratified_by: str | None = None,
) -> list[Split]:
    """``repeats`` independent 80:20-style splits with seeds ``seed, seed + 1, ...``."""
    return [make_split(ids, test_fraction, val_fraction, seed + r, strata, name, stratified_by) for r in range(repeats)]


def kfold(
    ids: Sequence[str],
    k: int = 5,
    val_fraction: float = 0.1,
    seed: int = 0,
    strata: Mapping[str, Any] | None = None,
    name: str = "",
    stratified_by: str | None = None,
) -> list[Split]:
    """K folds: each fold's test part is one k-th of the ids (stratified if given), val drawn from the rest."""
    if k < 2 or k > len(ids):
        raise ValueError(f"k must be in [2, {len(ids)}], got {k}")
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[str]] = {}
    for i in sorted(ids):
        groups.setdefault(strata.get(i) if strata else None, []).append(i)
    folds: list[list[str]] = [[] for _ in range(k)]
    offset = 0
    for key in sorted(groups, key=str):
        members = [groups[key][j] for j in rng.permutation(len(groups[key]))]
        for j, member in enumerate(members):
            folds[(j + offset) % k].append(member)
        offset += len(members)
    splits = []
    for f in range(k):
        test = sorted(folds[f])
        rest = sorted(i for g in range(k) if g != f for i in folds[g])
        val, train = _stratified_take(rest, strata, val_fraction * len(ids) / len(rest), rng)
        info = {
            "dataset": name,
            "seed": seed,
            "fold": f,
            "k": k,
            "val_fraction": val_fraction,
            "stratified_by": _strata_name(strata, stratified_by),
            "generator": "lesionseg.data.splits.kfold",
        }
        splits.append(Split(train=train, val=val, test=test, info=info))
    return splits


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
    """

    kind: str = "fixed"
    split: str | None = None
    repeats: int = 3
    k: int = 5
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0
    stratify: str | None = None

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
        return {
            # a split file by its name only: a report must not depend on where the file was
            "fixed": f"stored split `{Path(str(self.split)).name}`",
            "official": "the dataset's official subsets",
            "repeated": f"{self.repeats} seeded draws of {1 - self.test_fraction:.0%}:{self.test_fraction:.0%} "
            "train:test",
            "kfold": f"{self.k}-fold cross-validation",
        }[self.kind]


def official_split(root: str | Path, layout: str | None, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """The layout's own subsets (``meta["subset"]``); without a val subset, val is drawn (seeded) from train."""
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
        drawn = make_split(parts["train"], 0.0, val_fraction, seed)
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
        splits = [official_split(root, layout, p.val_fraction, p.seed)] * runs
    else:
        cases = find_cases(root, layout)
        ids = [c.id for c in cases]
        strata = None
        if p.stratify:
            strata = {c.id: c.meta.get(p.stratify) for c in cases}
            missing = [i for i, v in strata.items() if v is None]
            if missing:
                raise ValueError(f"protocol.stratify {p.stratify!r}: {len(missing)} cases lack it, e.g. {missing[0]}")
        name = Path(root).name
        if p.kind == "repeated":
            drawn = repeated_holdout(ids, p.repeats, p.test_fraction, p.val_fraction, p.seed, strata, name, p.stratify)
        else:
            drawn = kfold(ids, p.k, p.val_fraction, p.seed, strata, name, p.stratify)
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
