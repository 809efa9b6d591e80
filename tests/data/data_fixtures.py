"""Tiny on-disk fixtures in the official layout of every supported dataset (8 x 10 pixel images).

Every builder returns a :class:`Built`: the root to hand to ``find_cases`` plus, per case id, the mask written for it
(each case gets a different mask, so a case paired with the wrong mask is caught) and the official subset. Each
fixture also holds a mask without an image, so pairing by listing position would shift the pairs.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lesionseg.data.isic import ISIC_SUBSETS

H, W = 8, 10


@dataclass
class Built:
    root: Path
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    subsets: dict[str, str] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)
    mask_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return sorted(self.masks)


def case_mask(k: int, h: int = H, w: int = W) -> np.ndarray:
    """The k-th distinct mask: the first k + 2 columns are lesion (uint8 {0, 1})."""
    m = np.zeros((h, w), np.uint8)
    m[:, : (k % (w - 2)) + 2] = 1
    m[0, -1] = k >= w - 2  # keeps masks distinct beyond w - 2 cases
    return m


def case_image(k: int, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(k)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(path: Path, arr: np.ndarray, mode: str | None = None, **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if mode is not None:
        img = img.convert(mode)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        save.setdefault("quality", 95)
    img.save(path, **save)
    return path


def write_mask(path: Path, mask: np.ndarray, mode: str = "L", noise: bool = False) -> Path:
    """Write a {0, 1} mask as 0/255 (mode ``L``, ``RGB`` or ``1``); ``noise`` adds +-10 interpolation noise."""
    arr = mask.astype(np.int16) * 255
    if noise:
        arr = arr + np.where(mask > 0, -1, 1) * (np.arange(arr.size).reshape(arr.shape) % 11)
    arr = arr.astype(np.uint8)
    if mode == "RGB":
        arr = np.repeat(arr[..., None], 3, axis=2)
    return write_image(path, arr, None if mode == "RGB" else mode)


def _add(built: Built, cid: str, k: int, image: Path, mask: Path | None, subset: str | None = None, **kw) -> None:
    m = case_mask(k)
    write_image(image, case_image(k))
    built.images[cid] = image
    built.masks[cid] = m
    if mask is not None:
        write_mask(mask, m, **kw)
        built.mask_paths[cid] = mask
    if subset is not None:
        built.subsets[cid] = subset


def build_isic(root: Path, layout: str, subsets: tuple[str, ...] | None = None, orphans: bool = True) -> Built:
    """ISIC 2016/2017/2018 in the official folders: 2 train cases, 1 per other subset, plus the extra files (and a
    mask without an image per subset unless ``orphans`` is false)."""
    built = Built(root)
    k = 0
    for subset, input_name, truth_name, suffix in ISIC_SUBSETS[layout]:
        if subsets is not None and subset not in subsets:
            continue
        for _ in range(2 if subset == "train" else 1):
            cid = f"ISIC_{1000 + 7 * k:07d}"
            _add(built, cid, k, root / input_name / f"{cid}.jpg", root / truth_name / f"{cid}{suffix}.png", subset)
            if layout == "isic2017":  # the official zips hold a superpixel map next to every image
                write_image(root / input_name / f"{cid}_superpixels.png", case_image(k + 50))
            k += 1
        # a mask without an image, sorted first: positional pairing would shift every pair
        if orphans:
            write_mask(root / truth_name / f"ISIC_0000000{suffix}.png", case_mask(9))
        if layout == "isic2017":
            (root / input_name / f"{input_name}_metadata.csv").write_text("image_id,age_approximate,sex\n")
        if layout == "isic2018":
            (root / input_name / "LICENSE.txt").write_text("CC-BY-NC\n")
            (root / input_name / "ATTRIBUTION.txt").write_text("HAM10000\n")
    return built


def build_cvc(root: Path, fmt: str = "tif", sub: str = "", orphans: bool = True) -> Built:
    """CVC-ClinicDB: ``Original/<n>.<fmt>`` + ``Ground Truth/<n>.<fmt>``, noisy 0/255 masks, one extra mask (unless
    ``orphans`` is false)."""
    base = root / sub if sub else root
    built = Built(root)
    for k, n in enumerate((1, 2, 10)):  # lexical order 1, 10, 2 differs from numerical order
        _add(built, str(n), k, base / "Original" / f"{n}.{fmt}", base / "Ground Truth" / f"{n}.{fmt}", noise=True)
    if orphans:
        write_mask(base / "Ground Truth" / f"0.{fmt}", case_mask(9))
    return built


def build_montgomery(root: Path) -> Built:
    """Montgomery: ``CXR_png`` grayscale + ``ManualMask/{leftMask,rightMask}``; masks are the lung union."""
    built = Built(root)
    for k, cid in enumerate(("MCUCXR_0001_0", "MCUCXR_0005_1", "MCUCXR_0010_0")):
        left = np.zeros((H, W), np.uint8)
        right = np.zeros((H, W), np.uint8)
        left[1:7, 1 : 3 + k % 2] = 1
        right[2 : 6 + k % 2, 6:9] = 1
        image = root / "CXR_png" / f"{cid}.png"
        write_image(image, case_image(k)[..., 0])
        write_mask(root / "ManualMask" / "leftMask" / f"{cid}.png", left)
        write_mask(root / "ManualMask" / "rightMask" / f"{cid}.png", right)
        built.images[cid] = image
        built.masks[cid] = left | right
        built.mask_paths[cid] = root / "ManualMask" / "leftMask" / f"{cid}.png"
    write_mask(root / "ManualMask" / "leftMask" / "MCUCXR_0000_0.png", case_mask(9))
    (root / "ClinicalReadings").mkdir()
    (root / "ClinicalReadings" / "MCUCXR_0001_0.txt").write_text("Patient's Sex: F\n")
    return built


PH2_DIAGNOSES = {"IMD002": 0, "IMD003": 0, "IMD010": 1, "IMD058": 2}


def build_ph2(root: Path, ext: str = "bmp", txt: str = "tab") -> Built:
    """PH2: ``PH2Dataset/PH2 Dataset images/IMDxxx/{IMDxxx_Dermoscopic_Image,IMDxxx_lesion}`` + PH2_dataset.txt.

    ``txt`` is ``tab`` (tab-separated, as in the shared copy) or ``official`` (the ``||``-table of the release).
    """
    base = root / "PH2Dataset"
    built = Built(root)
    for k, cid in enumerate(PH2_DIAGNOSES):
        case = base / "PH2 Dataset images" / cid
        _add(
            built,
            cid,
            k,
            case / f"{cid}_Dermoscopic_Image" / f"{cid}.{ext}",
            case / f"{cid}_lesion" / f"{cid}_lesion.bmp",
            mode="1",
        )
        (case / f"{cid}_roi").mkdir()
    if txt == "tab":
        rows = ["Name\tClinical Diagnosis\tAsymmetry"] + [f"{c}\t{d}\t0" for c, d in PH2_DIAGNOSES.items()]
    else:
        rows = ["||   Name   || Histological Diagnosis || Clinical Diagnosis || Asymmetry ||"] + [
            f"|| {c} ||                        ||                  {d} ||         0 ||"
            for c, d in PH2_DIAGNOSES.items()
        ]
    (base / "PH2_dataset.txt").write_text("\n".join(rows) + "\n")
    return built


def build_kvasir(root: Path, orphans: bool = True) -> Built:
    """Kvasir-SEG: ``Kvasir-SEG/{images,masks}/<id>.jpg`` (JPEG masks), one extra mask unless ``orphans`` is false."""
    base = root / "Kvasir-SEG"
    built = Built(root)
    for k, cid in enumerate(("cju0qkwl35piu0993l0dewei2", "cju0s690hkp960855tjuaqvv0", "cju1b0y2e396p08558ois175d")):
        _add(built, cid, k, base / "images" / f"{cid}.jpg", base / "masks" / f"{cid}.jpg", mode="RGB")
    if orphans:
        write_mask(base / "masks" / "aaaa.jpg", case_mask(9), mode="RGB")
    return built


def build_folder(root: Path) -> Built:
    """Generic ``images/`` + ``masks/<id>_mask.png``; ids case1/case10/case2 sort differently with the suffix."""
    built = Built(root)
    for k, cid in enumerate(("case1", "case10", "case2")):
        _add(built, cid, k, root / "images" / f"{cid}.png", root / "masks" / f"{cid}_mask.png")
    return built


def zip_tree(zip_path: Path, root: Path, junk: bool = False) -> Path:
    """Zip everything under ``root`` with paths relative to it (folder entries included, as archivers write them);
    ``junk`` adds the ``__MACOSX/`` and ``.DS_Store`` entries of archives made on a Mac."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            arcname = path.relative_to(root).as_posix()
            if path.is_dir():
                zf.writestr(arcname + "/", b"")
            else:
                zf.write(path, arcname)
                if junk:
                    zf.writestr(f"__MACOSX/{path.parent.relative_to(root).as_posix()}/._{path.name}", b"\0\5")
        if junk:
            zf.writestr(".DS_Store", b"junk")
    return zip_path


def write_official_archives(layout: str, folder: Path) -> tuple[list[Path], Built]:
    """Tiny copies of the official archives of ``layout`` in ``folder``, with the published names and inner
    folders, built from the fixtures above (no orphan masks); returns the archives and what they hold."""
    src = folder / f"{layout}_src"
    archives: list[Path] = []
    if layout in ISIC_SUBSETS:
        built = build_isic(src, layout, orphans=False)
        for _, inputs, truth, _ in ISIC_SUBSETS[layout]:
            for name in (inputs, truth):  # each challenge zip holds its one folder at the top
                tree = folder / f"{name}_tree"
                tree.mkdir(parents=True)
                (src / name).rename(tree / name)
                archives.append(zip_tree(folder / f"{name}.zip", tree))
    elif layout == "ph2":
        built = build_ph2(src)  # PH2Dataset/PH2 Dataset images/..., PH2Dataset/PH2_dataset.txt
        (src / "PH2Dataset" / "PH2_dataset.xlsx").write_bytes(b"not read")
        archives.append(zip_tree(folder / "PH2Dataset.zip", src))
    elif layout == "cvc_clinicdb":
        built = build_cvc(src / "CVC-ClinicDB", orphans=False)
        archives.append(zip_tree(folder / "CVC-ClinicDB.zip", src, junk=True))
    elif layout == "kvasir_seg":
        built = build_kvasir(src, orphans=False)
        (src / "Kvasir-SEG" / "kavsir_bboxes.json").write_text("{}")
        archives.append(zip_tree(folder / "kvasir-seg.zip", src))
    else:
        raise ValueError(f"no official archives for {layout}")
    return archives, built
