"""PH2 dermoscopic image database (Mendonça et al., EMBC 2013).

Official layout::

    PH2Dataset/
      PH2_dataset.txt            # Name, Clinical Diagnosis (0 common nevus, 1 atypical nevus, 2 melanoma), ...
      PH2 Dataset images/IMDxxx/
        IMDxxx_Dermoscopic_Image/IMDxxx.bmp   (.png accepted: a lossless copy)
        IMDxxx_lesion/IMDxxx_lesion.bmp       (binary lesion mask; any non-zero value is lesion)
        IMDxxx_roi/...                        (colour-class masks, unused)

The root may be ``PH2Dataset``, its parent, or ``PH2 Dataset images``. Case folders without a lesion mask are an error
naming the folder. The diagnosis is read from ``PH2_dataset.txt`` or ``.csv`` when present (``meta["diagnosis"]``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path

from .base import Case, DataProblem, DatasetLayoutError, register_layout, report_layout_problems
from .io import IMAGE_EXTENSIONS

__all__ = ["PH2_DIAGNOSES", "diagnosis_name", "diagnosis_order", "find_ph2_cases", "read_ph2_diagnoses"]

_IMAGES_DIR = "PH2 Dataset images"

#: PH2's clinical diagnosis codes (``PH2_dataset.txt``), in the release's order.
PH2_DIAGNOSES = {0: "common nevus", 1: "atypical nevus", 2: "melanoma"}


def diagnosis_name(code: object) -> str:
    """A case's ``meta["diagnosis"]`` as words: PH2's numeric codes by name, any other value as text."""
    return PH2_DIAGNOSES.get(code, str(code)) if isinstance(code, int) else str(code)


def diagnosis_order(names: Iterable[str]) -> list[str]:
    """The distinct diagnosis names in table order: PH2's from benign to malignant, then any others sorted."""
    found = set(names)
    return [d for d in PH2_DIAGNOSES.values() if d in found] + sorted(found - set(PH2_DIAGNOSES.values()))


def _images_dir(root: Path) -> Path | None:
    for candidate in (root / "PH2Dataset" / _IMAGES_DIR, root / _IMAGES_DIR, root):
        if candidate.is_dir() and (candidate.name == _IMAGES_DIR or any(candidate.glob("IMD*/IMD*_lesion"))):
            return candidate
    return None


def _detect(root: Path) -> bool:
    d = _images_dir(root)
    return d is not None and any(d.glob("IMD*/IMD*_Dermoscopic_Image"))


def _parse_ph2_txt(text: str) -> dict[str, int]:
    """Parse ``PH2_dataset.txt``: the release's ``|| Name || Histological Diagnosis || Clinical Diagnosis || ...``
    table, or a tab/space separated copy; the column is found by its header ``Clinical Diagnosis``."""
    column = None
    out: dict[str, int] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in (line.split("||") if "||" in line else re.split(r"\t|\s{2,}", line.strip()))]
        if column is None and "Clinical Diagnosis" in cells:
            column = cells.index("Clinical Diagnosis")
            continue
        names = [c for c in cells if re.fullmatch(r"IMD\d+", c)]
        if column is None or not names or column >= len(cells):
            continue
        if cells[column].isdigit():
            out[names[0]] = int(cells[column])
    return out


def read_ph2_diagnoses(root: Path) -> dict[str, int]:
    """Clinical diagnosis per case id from ``PH2_dataset.txt`` (whitespace or tab separated) or ``.csv``."""
    for base in (root, root / "PH2Dataset", root.parent):
        txt, csv_path = base / "PH2_dataset.txt", base / "PH2_dataset.csv"
        if csv_path.is_file():
            with open(csv_path, encoding="utf-8-sig", newline="") as f:
                rows = list(csv.reader(f))
            return {r[0].strip(): int(r[1]) for r in rows[1:] if len(r) > 1 and r[1].strip().isdigit()}
        if txt.is_file():
            return _parse_ph2_txt(txt.read_text(encoding="utf-8-sig", errors="replace"))
    return {}


@register_layout("ph2", _detect, "PH2: PH2Dataset/PH2 Dataset images/IMDxxx/{IMDxxx_Dermoscopic_Image,IMDxxx_lesion}")
def find_ph2_cases(root: Path) -> list[Case]:
    """PH2 cases under ``root``, one per ``IMDxxx`` folder, with the diagnosis in ``meta`` when known."""
    images_dir = _images_dir(root)
    if images_dir is None:
        raise DatasetLayoutError(f"{root}: no '{_IMAGES_DIR}' folder with IMDxxx case folders (PH2 layout)")
    diagnoses = read_ph2_diagnoses(images_dir.parent if images_dir.name == _IMAGES_DIR else images_dir)
    cases = []
    for case_dir in sorted(p for p in images_dir.iterdir() if p.is_dir() and p.name.startswith("IMD")):
        cid = case_dir.name
        image_dir = case_dir / f"{cid}_Dermoscopic_Image"
        images = [p for p in sorted(image_dir.glob(f"{cid}.*")) if p.suffix.lower() in IMAGE_EXTENSIONS]
        masks = [p for p in sorted((case_dir / f"{cid}_lesion").glob(f"{cid}_lesion.*"))]
        if not images:
            message = f"{image_dir}: no image {cid}.bmp/.png for case {cid}"
            report_layout_problems(
                [DataProblem("mask_without_image", masks[0] if masks else image_dir, message, cid)], message
            )
            continue
        if not masks:
            message = f"{images[0]}: no lesion mask {case_dir / f'{cid}_lesion' / f'{cid}_lesion.bmp'}"
            report_layout_problems([DataProblem("image_without_mask", images[0], message, cid)], message)
            continue
        meta = {"diagnosis": diagnoses[cid]} if cid in diagnoses else {}
        cases.append(Case(id=cid, image=images[0], mask=masks[0], meta=meta))
    return cases
