"""ISIC skin-lesion segmentation challenges 2016, 2017 and 2018 (Task 1 / Part 1: lesion segmentation).

- ISIC 2016: Gutman et al., "Skin lesion analysis toward melanoma detection: a challenge at ISBI 2016",
  arXiv:1605.01397.
- ISIC 2017: Codella et al., "Skin lesion analysis toward melanoma detection: a challenge at ISBI 2017", ISBI 2018.
- ISIC 2018: Codella et al., "Skin lesion analysis toward melanoma detection 2018", arXiv:1902.03368; Tschandl et al.,
  "The HAM10000 dataset", Sci. Data 2018.

The root is the folder that holds the unzipped official folders (names kept as released)::

    ISIC 2016 (layout ``isic2016``; subsets train, test)
      ISBI2016_ISIC_Part1_Training_Data/ISIC_xxxxxxx.jpg
      ISBI2016_ISIC_Part1_Training_GroundTruth/ISIC_xxxxxxx_Segmentation.png
      ISBI2016_ISIC_Part1_Test_Data/ISIC_xxxxxxx.jpg
      ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_xxxxxxx_Segmentation.png

    ISIC 2017 (layout ``isic2017``; subsets train, val, test)
      ISIC-2017_Training_Data/ISIC_xxxxxxx.jpg              (+ ISIC_xxxxxxx_superpixels.png, *_metadata.csv: ignored)
      ISIC-2017_Training_Part1_GroundTruth/ISIC_xxxxxxx_segmentation.png
      ISIC-2017_Validation_Data/, ISIC-2017_Validation_Part1_GroundTruth/
      ISIC-2017_Test_v2_Data/, ISIC-2017_Test_v2_Part1_GroundTruth/

    ISIC 2018 (layout ``isic2018``; subsets train, val, test)
      ISIC2018_Task1-2_Training_Input/ISIC_xxxxxxx.jpg      (+ LICENSE.txt, ATTRIBUTION.txt: ignored)
      ISIC2018_Task1_Training_GroundTruth/ISIC_xxxxxxx_segmentation.png
      ISIC2018_Task1-2_Validation_Input/, ISIC2018_Task1_Validation_GroundTruth/
      ISIC2018_Task1-2_Test_Input/, ISIC2018_Task1_Test_GroundTruth/

The subsets present on disk are loaded (at least one must be); each case records its official subset in
``meta["subset"]`` (``train``, ``val`` or ``test``). An input folder without its ground-truth folder (or the reverse)
is an error naming the missing folder, and so is an image without a mask. Images and masks are paired by id
(``ISIC_xxxxxxx``), never by listing order; masks are lossless PNGs, so any non-zero value is lesion. Non-image files
and the 2017 ``*_superpixels.png`` files are not cases.

Lesion ids: several ISIC images can show one lesion (or one patient). Where a metadata CSV lies in the root or in an
image folder with a ``lesion_id`` column and an image-id column (``image_id`` in HAM10000_metadata.csv, ``image`` in
ISIC_2019_Training_Metadata.csv, ``image_name`` in the 2020 ground-truth CSV, ``isic_id`` in archive exports), each case
it names gets ``group = lesion_id`` and ``meta["lesion_id"]`` (and ``meta["patient_id"]`` when the CSV has one), so that
grouped splits keep one lesion on one side. The challenge zips themselves carry no lesion ids: put the CSV beside.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from .base import Case, DatasetLayoutError, index_images, pair_by_id, register_layout

__all__ = [
    "ISIC_SUBSETS",
    "read_isic_lesion_ids",
    "find_isic_cases",
    "find_isic2016_cases",
    "find_isic2017_cases",
    "find_isic2018_cases",
]

# layout -> (official subset, input folder, ground-truth folder, mask-name suffix)
ISIC_SUBSETS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "isic2016": (
        ("train", "ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth", "_Segmentation"),
        ("test", "ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth", "_Segmentation"),
    ),
    "isic2017": (
        ("train", "ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth", "_segmentation"),
        ("val", "ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth", "_segmentation"),
        ("test", "ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth", "_segmentation"),
    ),
    "isic2018": (
        ("train", "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth", "_segmentation"),
        ("val", "ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth", "_segmentation"),
        ("test", "ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth", "_segmentation"),
    ),
}

# Files of the official input folders that are not dermoscopic images (ISIC 2017 superpixel maps).
_NOT_IMAGES = ("_superpixels",)


_logger = logging.getLogger(__name__)

# Columns naming the image in the ISIC metadata files, in the order they are looked for.
_IMAGE_COLUMNS = ("image_id", "image", "image_name", "isic_id")
_GROUP_COLUMNS = ("lesion_id", "patient_id")


def read_isic_lesion_ids(folders: list[Path]) -> dict[str, dict[str, str]]:
    """Image id -> ``{"lesion_id": ..., "patient_id": ...}`` from the metadata CSVs directly in ``folders``.

    A CSV counts when its header has ``lesion_id`` and one of the image-id columns; others are left alone, and so are
    empty values. When two files disagree, the first in folder and name order wins. A CSV that cannot be parsed is
    logged and left out: lesion ids are optional, the cases load without them.
    """
    out: dict[str, dict[str, str]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.csv")):
            try:
                _read_lesion_csv(path, out)
            except (csv.Error, OSError) as err:
                _logger.warning("%s: metadata CSV not read, its lesion ids are not used (%s)", path, err)
    return out


def _read_lesion_csv(path: Path, out: dict[str, dict[str, str]]) -> None:
    with open(path, encoding="utf-8-sig", newline="", errors="replace") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or ()]
        image_col = next((c for c in _IMAGE_COLUMNS if c in columns), None)
        if image_col is None or "lesion_id" not in columns:
            return
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
            fields = {c: row[c] for c in _GROUP_COLUMNS if row.get(c)}
            if row.get(image_col) and "lesion_id" in fields:
                out.setdefault(row[image_col], fields)


def _detect(layout: str, root: Path) -> bool:
    return any((root / folder).is_dir() for _, inputs, truth, _ in ISIC_SUBSETS[layout] for folder in (inputs, truth))


def find_isic_cases(root: Path, layout: str) -> list[Case]:
    """Cases of every subset of ISIC challenge ``layout`` (``isic2016``, ``isic2017``, ``isic2018``) under ``root``."""
    if layout not in ISIC_SUBSETS:
        raise ValueError(f"unknown ISIC layout {layout!r}; known: {', '.join(ISIC_SUBSETS)}")
    cases: list[Case] = []
    lesions = read_isic_lesion_ids([root] + [root / inputs for _, inputs, _, _ in ISIC_SUBSETS[layout]])
    for subset, input_name, truth_name, suffix in ISIC_SUBSETS[layout]:
        input_dir, truth_dir = root / input_name, root / truth_name
        if not input_dir.is_dir() and not truth_dir.is_dir():
            continue
        if not truth_dir.is_dir():
            raise DatasetLayoutError(f"{truth_dir}: ground-truth folder missing for the images of {input_dir}")
        if not input_dir.is_dir():
            raise DatasetLayoutError(f"{input_dir}: image folder missing for the masks of {truth_dir}")
        images = {i: p for i, p in index_images(input_dir).items() if not any(i.endswith(s) for s in _NOT_IMAGES)}
        if not images:
            raise DatasetLayoutError(f"{input_dir}: no ISIC_xxxxxxx.jpg images")
        masks = index_images(truth_dir, (suffix,))
        cases.extend(
            pair_by_id(
                images,
                masks,
                0,
                meta=lambda i, s=subset: {"subset": s, **lesions.get(i, {})},
                missing_hint=f"expected <id>{suffix}.png in {truth_dir}",
                group=lambda i: lesions.get(i, {}).get("lesion_id"),
            )
        )
    if not cases:
        folders = ", ".join(f"{inputs} + {truth}" for _, inputs, truth, _ in ISIC_SUBSETS[layout])
        raise DatasetLayoutError(f"{root}: no {layout} subset found; expected at least one of {folders}")
    return cases


@register_layout(
    "isic2016",
    lambda root: _detect("isic2016", root),
    "ISIC 2016 Part 1: ISBI2016_ISIC_Part1_{Training,Test}_{Data,GroundTruth}",
)
def find_isic2016_cases(root: Path) -> list[Case]:
    """ISIC 2016 Part 1 cases (subsets train, test) paired by id."""
    return find_isic_cases(root, "isic2016")


@register_layout(
    "isic2017",
    lambda root: _detect("isic2017", root),
    "ISIC 2017 Part 1: ISIC-2017_{Training,Validation,Test_v2}_{Data,Part1_GroundTruth}",
)
def find_isic2017_cases(root: Path) -> list[Case]:
    """ISIC 2017 Part 1 cases (subsets train, val, test) paired by id, superpixel maps ignored."""
    return find_isic_cases(root, "isic2017")


@register_layout(
    "isic2018",
    lambda root: _detect("isic2018", root),
    "ISIC 2018 Task 1: ISIC2018_Task1-2_{Training,Validation,Test}_Input + ISIC2018_Task1_*_GroundTruth",
)
def find_isic2018_cases(root: Path) -> list[Case]:
    """ISIC 2018 Task 1 cases (subsets train, val, test) paired by id."""
    return find_isic_cases(root, "isic2018")
