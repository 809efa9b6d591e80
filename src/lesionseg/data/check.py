"""Checking a data root in one pass: every problem of every case, not just the first.

:func:`check_root` scans the layout leniently (images without masks, masks without images and duplicate ids are
reported, not raised), then reads every case once: unreadable or truncated files, decompression bombs, image and mask
sizes that differ, empty masks (a warning) and masks whose values are not two levels (a note).
:func:`screen_cases` is what training and evaluation use: it refuses a set of cases with bad files, naming all of
them, or leaves them out when asked to.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .base import PROBLEM_SEVERITY, Case, DataProblem, ScanResult, scan_cases
from .io import DEFAULT_MAX_PIXELS, ImageReadError, read_image, read_mask_values

__all__ = ["BadDataError", "CheckReport", "check_case", "check_cases", "check_root", "screen_cases"]

_logger = logging.getLogger(__name__)


class BadDataError(ValueError):
    """Cases with unusable files; the message lists every one and says how to see or skip them.

    Attributes:
        problems: the error-level problems found.
    """

    def __init__(self, problems: Sequence[DataProblem], root: str | Path, what: str = "") -> None:
        self.problems = list(problems)
        ids = sorted({p.case_id or str(p.path) for p in self.problems})
        lines = "\n".join(f"  - [{p.kind}] {p.message}" for p in self.problems)
        super().__init__(
            f"{root}: {len(ids)} case(s){' ' + what if what else ''} with unusable files:\n{lines}\n"
            f"See every problem with: lesionseg data check {root}\n"
            "or go on without these cases with --skip-bad (config key data.skip_bad: true)."
        )


def check_case(case: Case, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[DataProblem]:
    """Read a case's image and masks once; every problem found (an empty list for a good case)."""
    problems: list[DataProblem] = []
    try:
        image = read_image(case.image, channels, max_pixels=max_pixels)
        size: tuple[int, ...] | None = image.shape[:2]
        del image
    except ImageReadError as err:
        problems.append(DataProblem("unreadable", case.image, str(err), case.id))
        size = None
    mask_paths = ([case.mask] if case.mask is not None else []) + [Path(p) for p in case.meta.get("extra_masks", ())]
    union: np.ndarray | None = None
    for path in mask_paths:
        try:
            values = read_mask_values(path, max_pixels=max_pixels)
        except ImageReadError as err:
            problems.append(DataProblem("unreadable", path, str(err), case.id))
            continue
        if size is not None and values.shape != size:
            problems.append(
                DataProblem(
                    "size_mismatch",
                    path,
                    f"{path}: mask size {values.shape[1]}x{values.shape[0]} differs from image {case.image} size "
                    f"{size[1]}x{size[0]}",
                    case.id,
                )
            )
            continue
        levels = np.unique(values)
        if len(levels) > 2:
            shown = ", ".join(str(v) for v in levels[:6]) + (", ..." if len(levels) > 6 else "")
            problems.append(
                DataProblem(
                    "non_binary_mask",
                    path,
                    f"{path}: {len(levels)} distinct mask values ({shown}); values above {case.mask_threshold} are "
                    "read as lesion",
                    case.id,
                )
            )
        lesion = values > case.mask_threshold
        union = lesion if union is None or union.shape != lesion.shape else union | lesion
    if union is not None and not any(p.kind in ("unreadable", "size_mismatch") for p in problems) and not union.any():
        problems.append(DataProblem("empty_mask", case.mask or case.image, f"{case.mask}: mask has no lesion", case.id))
    return problems


def check_cases(
    cases: Sequence[Case], channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False
) -> list[DataProblem]:
    """:func:`check_case` on every case (progress bar on stderr when ``progress``)."""
    problems: list[DataProblem] = []
    from tqdm.auto import tqdm  # here: importing tqdm.auto costs a quick command 30-80 ms

    for case in tqdm(cases, desc="check", unit="case", disable=not progress, leave=False):
        problems.extend(check_case(case, channels, max_pixels))
    return problems


@dataclass
class CheckReport:
    """Result of :func:`check_root`.

    Attributes:
        root: the data root.
        layout: the layout it was read as.
        n_cases: cases whose files pair up (and were read).
        problems: every problem, layout and file problems together.
    """

    root: Path
    layout: str
    n_cases: int
    problems: list[DataProblem] = field(default_factory=list)

    def by_severity(self, severity: str) -> list[DataProblem]:
        return [p for p in self.problems if p.severity == severity]

    @property
    def errors(self) -> list[DataProblem]:
        return self.by_severity("error")

    @property
    def ok(self) -> bool:
        """No errors (warnings and notes allowed)."""
        return not self.errors

    def counts(self) -> dict[str, int]:
        """Problems by kind, in the order of :data:`~lesionseg.data.base.PROBLEM_SEVERITY`."""
        c = Counter(p.kind for p in self.problems)
        return {kind: c[kind] for kind in sorted(c, key=_kind_order)}

    def bad_ids(self) -> set[str]:
        """Ids of the cases with an error."""
        return {p.case_id for p in self.errors if p.case_id is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "cases": self.n_cases,
            "bad_cases": len(self.bad_ids()),
            "errors": len(self.errors),
            "warnings": len(self.by_severity("warning")),
            "notes": len(self.by_severity("note")),
            "counts": self.counts(),
            "problems": [p.to_dict() for p in self.problems],
        }


def _kind_order(kind: str) -> int:
    return list(PROBLEM_SEVERITY).index(kind)


def check_root(
    root: str | Path,
    layout: str | None = None,
    channels: int = 3,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> CheckReport:
    """Scan ``root`` leniently and read every case once; every problem found, in one report.

    Raises:
        DatasetLayoutError: the root does not exist or matches no layout (nothing to check).
    """
    scan = scan_cases(root, layout)
    problems = list(scan.problems) + check_cases(scan.cases, channels, max_pixels, progress)
    problems.sort(key=lambda p: (_kind_order(p.kind), p.case_id or "", str(p.path)))
    return CheckReport(scan.root, scan.layout, len(scan.cases), problems)


def screen_cases(
    scan: ScanResult,
    ids: Collection[str] | None = None,
    skip_bad: bool = False,
    channels: int = 3,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
    what: str = "",
    known_readable: Callable[[Case], bool] | None = None,
) -> tuple[list[Case], list[DataProblem]]:
    """The usable cases among ``ids`` (all when None), after reading each once; refuse or skip the others.

    A case is unusable when the scan reported an error for its id (no mask, no image, duplicate id) or when reading
    it fails (unreadable, truncated, too large, sizes differ). Warnings and notes do not make a case unusable.

    Args:
        scan: result of :func:`~lesionseg.data.base.scan_cases`.
        ids: the case ids to use; ids with no case and no problem are left for the caller to judge.
        skip_bad: leave unusable cases out (and return their problems) instead of raising.
        channels: image channels the run reads.
        max_pixels: pixel limit of the readers.
        progress: progress bar on stderr.
        what: words for the error message (e.g. ``"in the train/val ids of split ph2"``).
        known_readable: cases for which it returns True are taken as readable without being read: a valid disk-cache
            entry made from these very files (:meth:`~lesionseg.data.cache.CaseCache.contains`) proves that they
            decode and that their sizes agree, which is all an error-level problem of reading could say.

    Returns:
        ``(cases, skipped)``: the usable cases, and the error-level problems of the skipped ones.

    Raises:
        BadDataError: some wanted case is unusable and ``skip_bad`` is false; every such case is listed.
    """
    wanted = None if ids is None else set(ids)
    cases = [c for c in scan.cases if wanted is None or c.id in wanted]
    to_read = cases if known_readable is None else [c for c in cases if not known_readable(c)]
    if len(to_read) < len(cases):
        _logger.debug("%s: %d of %d case(s) known readable, not read", scan.root, len(cases) - len(to_read), len(cases))
    problems = [p for p in scan.problems if p.severity == "error" and (wanted is None or p.case_id in wanted)] + [
        p for p in check_cases(to_read, channels, max_pixels, progress) if p.severity == "error"
    ]
    if problems and not skip_bad:
        raise BadDataError(problems, scan.root, what)
    bad = {p.case_id for p in problems}
    if problems:
        _logger.warning("%s: skipping %d case(s) with unusable files: %s", scan.root, len(bad), sorted(map(str, bad)))
    return [c for c in cases if c.id not in bad], problems
