"""Cases, dataset layouts, and the numpy steps that prepare an image for a model (resize, normalise).

Nothing here imports torch: the PyTorch dataset over the cases is :mod:`lesionseg.data.dataset`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..registry import Registry
from .io import IMAGE_EXTENSIONS, ImageReadError, read_image, read_mask

__all__ = [
    "Case",
    "DataProblem",
    "DatasetLayoutError",
    "PROBLEM_SEVERITY",
    "ScanResult",
    "LAYOUTS",
    "register_layout",
    "list_layouts",
    "find_cases",
    "scan_cases",
    "report_layout_problems",
    "detect_layout",
    "pair_by_id",
    "index_images",
    "load_case",
    "load_case_mask",
    "resize_pair",
    "read_groups_csv",
    "channel_stats",
    "normalize_image",
]


class DatasetLayoutError(ValueError):
    """A data root that does not match the expected layout; the message says what is missing."""


@dataclass(frozen=True)
class Case:
    """One image with its (optional) lesion mask.

    Attributes:
        id: identifier unique within the dataset (file stem, e.g. ``IMD003``), used by split files.
        image: path of the image.
        mask: path of the binary mask, or None for unlabelled images.
        mask_threshold: mask values above it are lesion (0 for clean masks, 127 for JPEG masks).
        meta: extra fields of the layout (diagnosis, official subset, ...).
        group: the case's group for grouped splits, for layouts that know one (CVC-ClinicDB's video sequence, an
            ISIC lesion id from the metadata, a ``groups.csv`` of the folder layout); None when unknown. Cases of one
            group are near-duplicates of one lesion and never straddle train, val and test in a grouped split.
    """

    id: str
    image: Path
    mask: Path | None = None
    mask_threshold: int = 0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    group: str | None = field(default=None, compare=False, hash=False)


# Kind of problem -> severity. Errors make a case unusable (training refuses them, or skips them when asked);
# warnings are legal but suspicious; notes are informational.
PROBLEM_SEVERITY: dict[str, str] = {
    "unreadable": "error",
    "size_mismatch": "error",
    "image_without_mask": "error",
    "mask_without_image": "error",
    "duplicate_id": "error",
    "empty_mask": "warning",
    "non_binary_mask": "note",
}


@dataclass(frozen=True)
class DataProblem:
    """One problem of a data root: what kind, which file, which case.

    Attributes:
        kind: a key of :data:`PROBLEM_SEVERITY` (``unreadable``, ``size_mismatch``, ``image_without_mask``, ...).
        path: the file (or folder) at fault.
        message: a sentence naming the file and the problem.
        case_id: the case the problem belongs to, when known.
    """

    kind: str
    path: Path
    message: str
    case_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in PROBLEM_SEVERITY:
            raise ValueError(f"unknown problem kind {self.kind!r}; known: {', '.join(PROBLEM_SEVERITY)}")

    @property
    def severity(self) -> str:
        return PROBLEM_SEVERITY[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "case_id": self.case_id,
            "path": str(self.path),
            "message": self.message,
        }


@dataclass
class ScanResult:
    """What a lenient layout scan found: the usable cases and the problems of the others.

    Attributes:
        root: the data root.
        layout: the layout scanned.
        cases: cases whose files pair up (not yet read), sorted by id.
        problems: images without masks, masks without images, duplicate ids.
    """

    root: Path
    layout: str
    cases: list[Case]
    problems: list[DataProblem]


# Set while scan_cases runs: layouts then hand their pairing problems over instead of raising on the first one.
_COLLECTED: ContextVar[list[DataProblem] | None] = ContextVar("lesionseg_layout_problems", default=None)


@contextmanager
def _collecting() -> Iterator[list[DataProblem]]:
    problems: list[DataProblem] = []
    token = _COLLECTED.set(problems)
    try:
        yield problems
    finally:
        _COLLECTED.reset(token)


def report_layout_problems(problems: Sequence[DataProblem], strict_error: str | None) -> None:
    """Called by layouts for files they cannot pair.

    Under :func:`scan_cases` the problems are collected and the layout goes on without those files. Otherwise
    (:func:`find_cases`, strict) ``strict_error`` is raised as :class:`DatasetLayoutError`, or, when it is None, the
    files are left out silently (e.g. masks without an image, which strict loading has always ignored).
    """
    if not problems:
        return
    collected = _COLLECTED.get()
    if collected is not None:
        collected.extend(problems)
    elif strict_error is not None:
        raise DatasetLayoutError(strict_error)


@dataclass(frozen=True)
class _Layout:
    name: str
    find: Callable[[Path], list[Case]]
    detect: Callable[[Path], bool]
    description: str


#: Every dataset layout by name, in registration order (the order :func:`detect_layout` tries them).
LAYOUTS: Registry[_Layout] = Registry("layout")


def register_layout(name: str, detect: Callable[[Path], bool], description: str = ""):
    """Register ``find(root) -> list[Case]`` for a dataset layout, with a ``detect(root)`` predicate."""

    def wrap(fn: Callable[[Path], list[Case]]) -> Callable[[Path], list[Case]]:
        LAYOUTS.add(name, _Layout(name, fn, detect, description or (fn.__doc__ or "").strip().splitlines()[0]))
        return fn

    return wrap


def list_layouts() -> dict[str, str]:
    """Known layouts and a one-line description of each."""
    return {name: LAYOUTS.get(name).description for name in LAYOUTS.names()}


def detect_layout(root: str | Path) -> str:
    """Name of the first layout whose ``detect`` accepts ``root``; generic ``folder`` last."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: data root is not a directory")
    for name, layout in LAYOUTS.items():
        if name != "folder" and layout.detect(root):
            return name
    if "folder" in LAYOUTS and LAYOUTS.get("folder").detect(root):
        return "folder"
    raise DatasetLayoutError(f"{root}: no known dataset layout found; known: {', '.join(LAYOUTS.names())}")


def _find(root: str | Path, layout: str | None) -> tuple[Path, str, list[Case]]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: data root is not a directory")
    name = layout or detect_layout(root)
    cases = sorted(LAYOUTS.get(name).find(root), key=lambda c: c.id)
    first: dict[str, Case] = {}
    duplicates: list[DataProblem] = []
    for case in cases:
        if case.id in first:
            duplicates.append(
                DataProblem(
                    "duplicate_id",
                    case.image,
                    f"{case.image}: case id {case.id!r} also used by {first[case.id].image}",
                    case.id,
                )
            )
        else:
            first[case.id] = case
    dup = sorted({p.case_id for p in duplicates if p.case_id})
    report_layout_problems(duplicates, f"{root}: duplicate case ids {dup[:5]}")
    return root, name, list(first.values())


def find_cases(root: str | Path, layout: str | None = None) -> list[Case]:
    """All cases under ``root`` in ``layout`` (detected when None), sorted by id.

    Strict: an image without a mask, two files for one id or a duplicate case id raises
    :class:`DatasetLayoutError`; :func:`scan_cases` reports them all instead.
    """
    root, name, cases = _find(root, layout)
    if not cases:
        raise DatasetLayoutError(f"{root}: no cases found in the {name} layout")
    return cases


def scan_cases(root: str | Path, layout: str | None = None) -> ScanResult:
    """Every case under ``root`` whose files pair up, and a problem for each file that does not.

    Lenient counterpart of :func:`find_cases` (which raises at the first pairing problem): images without masks,
    masks without images and duplicate ids are collected, and the other cases are returned. Nothing is read.

    Raises:
        DatasetLayoutError: the root does not exist, matches no layout, or holds neither cases nor problems.
    """
    with _collecting() as problems:
        root, name, cases = _find(root, layout)
    if not cases and not problems:
        raise DatasetLayoutError(f"{root}: no cases found in the {name} layout")
    return ScanResult(root, name, cases, sorted(problems, key=lambda p: (p.case_id or "", str(p.path))))


def index_images(folder: Path, strip_suffixes: Sequence[str] = ()) -> dict[str, Path]:
    """Map id -> path for the image files of ``folder`` (not recursive).

    The id is the file stem with the first matching suffix of ``strip_suffixes`` removed (e.g. ``_segmentation``).
    Two files with the same id (``a.png`` and ``a.jpg``) are an error.
    """
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS or p.name.startswith("."):
            continue
        stem = p.stem
        for suffix in strip_suffixes:
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        if stem in out:
            message = f"{folder}: two files for id {stem!r}: {out[stem].name} and {p.name}"
            report_layout_problems([DataProblem("duplicate_id", p, message, stem)], message)
            continue  # the first file (in name order) stays the case
        out[stem] = p
    return out


def pair_by_id(
    images: dict[str, Path],
    masks: dict[str, Path] | None,
    mask_threshold: int | Callable[[Path], int] = 0,
    require_masks: bool = True,
    meta: Callable[[str], dict[str, Any]] | None = None,
    missing_hint: str = "",
    group: Callable[[str], str | None] | None = None,
) -> list[Case]:
    """Pair images and masks by id (never by listing order).

    Args:
        images: id -> image file.
        masks: id -> mask file.
        mask_threshold: mask values above it are lesion; or a function of the mask file giving it (e.g. 127 for
            JPEG masks only).
        require_masks: an image without a mask is a problem (else a case without mask).
        meta: id -> extra fields of the case.
        missing_hint: where the mask was expected, appended to the error (e.g. ``<id>_segmentation.png in ...``).
        group: id -> the case's group (:attr:`Case.group`), None when unknown.

    Raises:
        DatasetLayoutError: when ``require_masks`` and some image has no mask (the first ids are named); under
            :func:`scan_cases` these images, and masks without an image, are reported instead.
    """
    masks = masks or {}
    missing = sorted(set(images) - set(masks))
    if require_masks and missing:
        examples = ", ".join(str(images[i]) for i in missing[:3])
        hint = f" ({missing_hint})" if missing_hint else ""
        report_layout_problems(
            [DataProblem("image_without_mask", images[i], f"{images[i]}: no mask{hint}", i) for i in missing],
            f"{len(missing)} image(s) without a mask{hint}, e.g. {examples}",
        )
        images = {i: p for i, p in images.items() if i not in set(missing)}
    orphans = sorted(set(masks) - set(images) - set(missing))
    report_layout_problems(
        [DataProblem("mask_without_image", masks[i], f"{masks[i]}: no image for mask id {i!r}", i) for i in orphans],
        None,
    )

    def threshold(path: Path | None) -> int:
        if path is None or not callable(mask_threshold):
            return mask_threshold if isinstance(mask_threshold, int) else 0
        return int(mask_threshold(path))

    return [
        Case(
            id=i,
            image=images[i],
            mask=masks.get(i),
            mask_threshold=threshold(masks.get(i)),
            meta=meta(i) if meta else {},
            group=group(i) if group else None,
        )
        for i in sorted(images)
    ]


def read_groups_csv(path: str | Path) -> dict[str, str]:
    """Case id -> group from a CSV file with the columns ``id,group`` (a header row naming them; other columns are
    ignored). Rows with an empty group are left out.

    Raises:
        ValueError: the file has no ``id`` and ``group`` columns, or gives one id two different groups (the file and
            the row are named).
    """
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or ()]
        if "id" not in columns or "group" not in columns:
            raise ValueError(f"{path}: a groups file needs the columns id,group; found {', '.join(columns) or 'none'}")
        out: dict[str, str] = {}
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            cid, group = row["id"], row["group"]
            if not cid or not group:
                continue
            if out.get(cid, group) != group:
                raise ValueError(
                    f"{path}, line {reader.line_num}: id {cid!r} has two groups, {out[cid]!r} and {group!r}"
                )
            out[cid] = group
    return out


def load_case(case: Case, channels: int = 3) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a case at native resolution: image uint8 (H, W, C), mask uint8 (H, W) {0, 1} or None.

    Masks listed in ``case.meta["extra_masks"]`` (e.g. Montgomery's right lung) are OR-combined with ``case.mask``.

    Raises:
        ImageReadError: a file is unreadable, or image and mask sizes differ (both files named).
    """
    image = read_image(case.image, channels)
    if case.mask is None:
        return image, None
    return image, load_case_mask(case, image.shape[:2])


def load_case_mask(case: Case, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """A case's ground truth at native resolution, uint8 (H, W) {0, 1} (None without one), as :func:`load_case`
    reads it: ``case.mask`` thresholded at ``case.mask_threshold``, OR-combined with ``meta["extra_masks"]``.

    Args:
        case: the case.
        size: ``(H, W)`` every mask file must have (the image's); None = the first mask's.

    Raises:
        ImageReadError: a mask file is unreadable or of another size (both files named).
    """
    if case.mask is None:
        return None
    mask: np.ndarray | None = None
    for path in (case.mask, *case.meta.get("extra_masks", ())):
        part = read_mask(path, case.mask_threshold)
        want = size if size is not None else (mask.shape if mask is not None else part.shape)
        if part.shape != tuple(want):
            raise ImageReadError(
                f"{path}: mask size {part.shape[1]}x{part.shape[0]} differs from image {case.image} size "
                f"{want[1]}x{want[0]}"
            )
        mask = part if mask is None else np.maximum(mask, part)
    return mask


def resize_pair(
    image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize to ``size`` = (H, W): area/linear for the image, nearest for the mask."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image, mask
    shrink = image.shape[0] > h and image.shape[1] > w
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = out[..., None]
    if mask is not None:
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return out, mask


def channel_stats(mean: Sequence[float], std: Sequence[float], in_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalisation mean and std as float32 (C, 1, 1) arrays for ``in_channels`` channels.

    A 3-value (RGB) statistic given to a 1-channel model keeps its first value, as training did; any other length
    mismatch is an error. The dataset and the predictor both call this, so a model sees the same input at inference
    as in training.
    """
    stats = []
    for name, values in (("mean", mean), ("std", std)):
        values = tuple(float(v) for v in values)
        if len(values) != in_channels:
            if in_channels != 1:
                raise ValueError(f"{name} has {len(values)} values for {in_channels} input channels")
            values = values[:1]
        stats.append(np.asarray(values, dtype=np.float32).reshape(-1, 1, 1))
    return stats[0], stats[1]


def normalize_image(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) -> float32 (C, H, W), ``(x / 255 - mean) / std`` with stats from :func:`channel_stats`.

    The result is C-contiguous: the memory format a model runs in is chosen by its caller (the predictor, the trainer),
    never inherited from this array's strides.
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] != mean.shape[0]:
        raise ValueError(f"image has {image.shape[2]} channels, normalisation expects {mean.shape[0]}")
    # The same float32 operations as ever, element by element (so the same values), done in the image's own
    # (H, W, C) order and in place; one transposing copy at the end gives the (C, H, W) layout.
    x = image.astype(np.float32)
    x /= 255.0
    x -= mean.reshape(1, 1, -1)
    x /= std.reshape(1, 1, -1)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def __getattr__(name: str) -> Any:
    # ``SegmentationDataset`` lived here before this module became torch-free; importing it from here still works.
    if name == "SegmentationDataset":
        from .dataset import SegmentationDataset

        return SegmentationDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
