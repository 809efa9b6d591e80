"""Official archives -> the layouts the loaders read (``lesionseg data prepare LAYOUT ARCHIVE... --out ROOT``).

Each dataset is published as zip files with a known name and a known inner folder (:data:`ARCHIVES`). Preparing
checks every archive before writing anything: a name that is not one of the layout's archives is refused with the
list of those that are; an image archive without its ground-truth archive (or the reverse) is refused unless the
other half is already under the root; a member with an absolute path, a ``..`` component, a drive letter, a symbolic
link or encryption refuses the whole archive; the declared sizes must fit the limits (``max_bytes`` in all,
``max_member_bytes`` per file, ``max_members`` per archive) and the free disk space, and a member that inflates past
its declared size is stopped there, so a zip bomb fills neither memory nor disk. Only the dataset's folders are
unpacked (found at the top of the archive or under at most three wrapper folders); everything else (``__MACOSX/``,
licences, other folders) is left and counted. Files are written as ``*.part`` and renamed when whole, so an
interrupted run leaves no half-written image. Then the cases are counted per official subset against the published
numbers, and the root is read once by :func:`~lesionseg.data.check.check_root` (every pairing and file problem).

RAR archives (PH2's official ``PH2Dataset.rar``; CVC-ClinicDB is also distributed as ``.rar``) cannot be read by
Python's standard library: they must be unpacked first (``unrar x``, ``7z x`` or ``bsdtar -xf``), and the unpacked
folder is then a data root as it is, or can be zipped under the accepted ``.zip`` name. Nothing here downloads.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .base import scan_cases
from .check import CheckReport, check_root
from .io import DEFAULT_MAX_PIXELS
from .isic import ISIC_SUBSETS

__all__ = [
    "ARCHIVES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MEMBER_BYTES",
    "DEFAULT_MAX_MEMBERS",
    "OFFICIAL_COUNTS",
    "ArchiveResult",
    "ArchiveSpec",
    "PrepareError",
    "PrepareReport",
    "expected_archives",
    "prepare_archives",
    "prepare_layouts",
]

_logger = logging.getLogger(__name__)

# The largest official archive (ISIC 2018 Task 1-2 training input) unpacks to about 11 GB.
DEFAULT_MAX_BYTES = 64 * 1024**3
# An 80-megapixel image (the readers' limit) as an uncompressed RGB TIFF or BMP is 240 MB.
DEFAULT_MAX_MEMBER_BYTES = 1024**3
# ISIC 2017's training zip, the most crowded, holds about 4000 files.
DEFAULT_MAX_MEMBERS = 200_000
# Wrapper folders allowed above a dataset folder inside an archive (e.g. CVC-ClinicDB/PNG/Original in a repack folder).
_MAX_WRAPPERS = 3
_CHUNK = 1024 * 1024
_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


class PrepareError(ValueError):
    """An archive that cannot be prepared; the message names the archive (and member) and the problem."""


@dataclass(frozen=True)
class ArchiveSpec:
    """One official archive of a dataset.

    Attributes:
        name: the file name as published (matched without regard to case).
        layout: the layout it belongs to.
        folders: the archive's folders that are unpacked, with everything below them.
        dest: the folder of the root they go into (``""``: the root itself).
        subset: the official subset (train, val, test) for the challenge archives.
        partner: the archive holding the other half (images <-> ground truth), if any.
        files: single files unpacked into ``dest`` wherever they lie in the archive (PH2's diagnosis table).
    """

    name: str
    layout: str
    folders: tuple[str, ...]
    dest: str = ""
    subset: str | None = None
    partner: str | None = None
    files: tuple[str, ...] = ()


def _isic_specs() -> list[ArchiveSpec]:
    specs = []
    for layout, subsets in ISIC_SUBSETS.items():
        for subset, inputs, truth, _ in subsets:
            # every ISIC challenge zip is named after the one folder it holds
            specs.append(ArchiveSpec(f"{inputs}.zip", layout, (inputs,), subset=subset, partner=f"{truth}.zip"))
            specs.append(ArchiveSpec(f"{truth}.zip", layout, (truth,), subset=subset, partner=f"{inputs}.zip"))
    return specs


ARCHIVES: tuple[ArchiveSpec, ...] = (
    *_isic_specs(),
    # PH2Dataset.rar is the official release; the .zip is the usual repack of its PH2Dataset folder.
    ArchiveSpec(
        "PH2Dataset.zip", "ph2", ("PH2 Dataset images",), "PH2Dataset", files=("PH2_dataset.txt", "PH2_dataset.csv")
    ),
    ArchiveSpec("CVC-ClinicDB.zip", "cvc_clinicdb", ("Original", "Ground Truth"), "CVC-ClinicDB"),
    ArchiveSpec("kvasir-seg.zip", "kvasir_seg", ("images", "masks"), "Kvasir-SEG"),
)

# Cases per official subset as published (None: the dataset has no official subsets).
OFFICIAL_COUNTS: dict[str, dict[str | None, int]] = {
    "isic2016": {"train": 900, "test": 379},
    "isic2017": {"train": 2000, "val": 150, "test": 600},
    "isic2018": {"train": 2594, "val": 100, "test": 1000},
    "ph2": {None: 200},
    "cvc_clinicdb": {None: 612},
    "kvasir_seg": {None: 1000},
}

# Official archives that are RAR files, by layout: refused with the command that unpacks them.
_RAR_NAMES = {"ph2dataset.rar": "ph2", "cvc-clinicdb.rar": "cvc_clinicdb"}


def prepare_layouts() -> list[str]:
    """The layouts :func:`prepare_archives` knows the archives of."""
    return sorted({s.layout for s in ARCHIVES})


def expected_archives(layout: str) -> list[str]:
    """The official archive names of ``layout``.

    Raises:
        ValueError: the layout has no known archives (the message lists the layouts that do).
    """
    names = [s.name for s in ARCHIVES if s.layout == layout]
    if not names:
        raise ValueError(
            f"data prepare knows no archives of layout {layout!r}; it prepares {', '.join(prepare_layouts())}"
        )
    return names


@dataclass
class ArchiveResult:
    """What one archive gave.

    Attributes:
        archive: the archive file.
        files: files unpacked.
        ignored: members left in the archive (not under a dataset folder), by path.
        copies_left: the dataset folders found more than once (e.g. ``TIF/Original`` beside ``PNG/Original``) and
            the copies not taken.
    """

    archive: Path
    files: int = 0
    ignored: list[str] = field(default_factory=list)
    copies_left: list[str] = field(default_factory=list)


@dataclass
class PrepareReport:
    """Result of :func:`prepare_archives`.

    Attributes:
        root: the data root written.
        layout: its layout.
        archives: one result per archive, in the order given.
        counts: cases found per official subset (None: the whole dataset).
        official: the published counts of those subsets.
        check: the full check of the root (pairs, unreadable files, sizes).
    """

    root: Path
    layout: str
    archives: list[ArchiveResult]
    counts: dict[str | None, int]
    official: dict[str | None, int]
    check: CheckReport

    def count_mismatches(self) -> list[str]:
        """One line per subset whose case count differs from the published one."""
        out = []
        for subset, n in self.counts.items():
            expected = self.official.get(subset)
            if expected is not None and n != expected:
                where = f"subset {subset}" if subset else "dataset"
                out.append(f"{self.layout} {where}: {n} case(s), the official release has {expected}")
        return out

    @property
    def ok(self) -> bool:
        """The data check found no errors (counts that differ from the release are warnings)."""
        return self.check.ok


def _spec_for(path: Path, layout: str) -> ArchiveSpec:
    lower = path.name.lower()
    if lower in _RAR_NAMES:
        folder = path.stem
        raise PrepareError(
            f"{path}: a RAR archive, which Python's standard library cannot read. Unpack it first, e.g. "
            f"`unrar x {path.name}` (or `7z x {path.name}`, or `bsdtar -xf {path.name}`); the unpacked folder is a "
            f"data root as it is (`lesionseg data check <folder>`), or zip its {folder} folder as {folder}.zip "
            f"(`zip -r {folder}.zip {folder}`) and give that to data prepare"
        )
    for spec in ARCHIVES:
        if spec.name.lower() == lower:
            if spec.layout != layout:
                raise PrepareError(
                    f"{path}: an archive of layout {spec.layout}, not {layout}; {layout} expects "
                    f"{', '.join(expected_archives(layout))}"
                )
            return spec
    raise PrepareError(
        f"{path}: not an official archive of {layout} (names as published); expected one of "
        f"{', '.join(expected_archives(layout))}"
    )


def _member_parts(info: zipfile.ZipInfo, archive: Path) -> tuple[str, ...] | None:
    """The safe path components of a member; None for directories and OS junk. Hostile members raise."""
    name = info.filename.replace("\\", "/")
    if "\x00" in name:
        raise PrepareError(f"{archive}: member {name!r} has a NUL byte in its name")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise PrepareError(f"{archive}: member {name!r} has an absolute path; refusing the archive")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise PrepareError(f"{archive}: member {name!r} climbs out of the archive ('..'); refusing the archive")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise PrepareError(f"{archive}: member {name!r} is a symbolic link; refusing the archive")
    if info.flag_bits & 0x1:
        raise PrepareError(f"{archive}: member {name!r} is encrypted; unpack it yourself")
    if info.is_dir() or not parts:
        return None
    if parts[0] == "__MACOSX" or parts[-1] in _JUNK_NAMES or parts[-1].startswith("._"):
        return None
    return parts


def _location_key(location: tuple[str, ...]) -> tuple[int, int, tuple[str, ...]]:
    # CVC-ClinicDB repacks hold PNG/ and TIF/ copies of the same frames: the PNG copy is taken, as the loader does.
    return (0 if any(p.upper() == "PNG" for p in location) else 1, len(location), location)


def _plan(
    archive: Path, spec: ArchiveSpec, zf: zipfile.ZipFile, max_members: int, max_member_bytes: int
) -> tuple[list[tuple[zipfile.ZipInfo, Path]], ArchiveResult]:
    """Which members go where (relative to the root), or why the archive is refused."""
    infos = zf.infolist()
    if len(infos) > max_members:
        raise PrepareError(f"{archive}: {len(infos):,} members, over the limit of {max_members:,}")
    folders = {f.lower(): f for f in spec.folders}
    files = {f.lower(): f for f in spec.files}
    found: dict[str, dict[tuple[str, ...], list[tuple[zipfile.ZipInfo, tuple[str, ...]]]]] = {}
    singles: list[tuple[zipfile.ZipInfo, Path]] = []
    result = ArchiveResult(archive)
    for info in infos:
        parts = _member_parts(info, archive)
        if parts is None:
            continue
        anchor = next((i for i, p in enumerate(parts[:-1]) if p.lower() in folders and i <= _MAX_WRAPPERS), None)
        if anchor is not None:
            folder = folders[parts[anchor].lower()]
            found.setdefault(folder, {}).setdefault(parts[:anchor], []).append((info, parts[anchor + 1 :]))
        elif parts[-1].lower() in files and len(parts) <= _MAX_WRAPPERS + 2:
            singles.append((info, Path(spec.dest, files[parts[-1].lower()])))
        else:
            result.ignored.append("/".join(parts))
    if not found:
        tops = sorted({i.filename.replace("\\", "/").split("/")[0] for i in infos})[:5]
        raise PrepareError(
            f"{archive}: holds none of the folders {', '.join(spec.folders)} (at its top or under at most "
            f"{_MAX_WRAPPERS} folders); it starts with {', '.join(tops) or 'nothing'}"
        )
    plan: list[tuple[zipfile.ZipInfo, Path]] = []
    for folder in spec.folders:
        locations = found.get(folder, {})
        if not locations:
            raise PrepareError(f"{archive}: no {folder}/ folder, which {spec.name} holds in the official release")
        chosen, *others = sorted(locations, key=_location_key)
        for other in others:
            result.copies_left.append("/".join((*other, folder)))
            result.ignored.extend("/".join((*other, folder, *rel)) for _, rel in locations[other])
        plan.extend((info, Path(spec.dest, folder, *rel)) for info, rel in locations[chosen])
    taken = {dest for _, dest in plan}
    for info, dest in singles:  # one copy of each single file: the first in archive order
        if dest in taken:
            result.ignored.append(info.filename)
        else:
            plan.append((info, dest))
            taken.add(dest)
    seen: dict[str, str] = {}
    for info, dest in plan:
        if info.file_size > max_member_bytes:
            raise PrepareError(
                f"{archive}: member {info.filename} declares {info.file_size:,} bytes, over the per-file limit of "
                f"{max_member_bytes:,}"
            )
        # two members that would land on one file (e.g. names differing only in case on a case-blind disk)
        key = str(dest).lower()
        if key in seen:
            raise PrepareError(f"{archive}: members {seen[key]} and {info.filename} would both be written to {dest}")
        seen[key] = info.filename
    return plan, result


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, archive: Path) -> None:
    """Stream one member to ``target`` through a ``.part`` file, never past its declared size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    written = 0
    try:
        with zf.open(info) as src, open(part, "wb") as dst:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise PrepareError(
                        f"{archive}: member {info.filename} inflates past its declared {info.file_size:,} bytes "
                        "(a zip bomb or a damaged archive)"
                    )
                dst.write(chunk)
        os.replace(part, target)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise PrepareError(f"{archive}: member {info.filename} is damaged ({err})") from err
    finally:
        part.unlink(missing_ok=True)


def prepare_archives(
    layout: str,
    archives: list[str | Path],
    out: str | Path,
    *,
    overwrite: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> PrepareReport:
    """Unpack the official ``archives`` of ``layout`` into ``out`` in the layout the loaders read, then check it.

    Args:
        layout: ``isic2016``, ``isic2017``, ``isic2018``, ``ph2``, ``cvc_clinicdb`` or ``kvasir_seg``.
        archives: official zip files of that layout (any subset of them; an image archive needs its ground truth).
        out: the data root to write (created if missing).
        overwrite: replace files of dataset folders that already hold files (else such a folder is an error).
        max_bytes: largest total of declared uncompressed sizes over all archives.
        max_member_bytes: largest declared size of one file.
        max_members: most members one archive may hold.
        max_pixels: pixel limit of the image readers during the check.
        progress: progress bar during the check.

    Returns:
        What each archive gave, the case counts against the published ones, and the data check.

    Raises:
        PrepareError: an archive is unknown, missing, not a zip, unsafe, over a limit, or lacks its partner; or a
            destination folder already holds files and ``overwrite`` is false. Nothing is written in these cases,
            except for a member found damaged while unpacking.
        ValueError: the layout has no known archives.
    """
    names = expected_archives(layout)
    out = Path(out).expanduser()
    if not archives:
        raise PrepareError(f"no archives given; {layout} expects {', '.join(names)}")
    specs: list[tuple[Path, ArchiveSpec]] = []
    for a in archives:
        path = Path(a).expanduser()
        spec = _spec_for(path, layout)
        if not path.is_file():
            raise PrepareError(f"{path}: no such file")
        if any(s.name == spec.name for _, s in specs):
            raise PrepareError(f"{path}: {spec.name} given twice")
        specs.append((path, spec))
    given = {s.name for _, s in specs}
    by_name = {s.name: s for s in ARCHIVES}
    for path, spec in specs:
        if spec.partner and spec.partner not in given:
            partner = by_name[spec.partner]
            if not any((out / partner.dest / f).is_dir() for f in partner.folders):
                raise PrepareError(
                    f"{path}: given without {spec.partner} (the other half of the {spec.subset} subset), which is "
                    f"not under {out} either; give both"
                )
    plans: list[tuple[Path, ArchiveSpec, list[tuple[zipfile.ZipInfo, Path]], ArchiveResult]] = []
    total = 0
    for path, spec in specs:
        if not zipfile.is_zipfile(path):
            raise PrepareError(f"{path}: not a zip file")
        try:
            with zipfile.ZipFile(path) as zf:
                plan, result = _plan(path, spec, zf, max_members, max_member_bytes)
        except zipfile.BadZipFile as err:
            raise PrepareError(f"{path}: not a readable zip file ({err})") from err
        total += sum(info.file_size for info, _ in plan)
        plans.append((path, spec, plan, result))
    if total > max_bytes:
        raise PrepareError(f"the archives declare {total:,} bytes to unpack, over the limit of {max_bytes:,}")
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if total > free:
        raise PrepareError(f"the archives declare {total:,} bytes to unpack and {out} has {free:,} bytes free")
    if not overwrite:
        for path, spec, _, _ in plans:
            for folder in spec.folders:
                target = out / spec.dest / folder
                if target.is_dir() and any(target.iterdir()):
                    raise PrepareError(
                        f"{target}: already holds files (prepared before?); use --overwrite to unpack {path.name} again"
                    )
    for path, _spec, plan, result in plans:
        _logger.info("%s: unpacking %d file(s) into %s", path.name, len(plan), out)
        with zipfile.ZipFile(path) as zf:
            for info, rel in plan:
                _extract(zf, info, out / rel, path)
                result.files += 1
    official = OFFICIAL_COUNTS[layout]
    scan = scan_cases(out, layout)
    counter = Counter(c.meta.get("subset") if None not in official else None for c in scan.cases)
    counts = {s: counter.get(s, 0) for s in official if s in counter or _subset_given(s, specs)}
    check = check_root(out, layout, max_pixels=max_pixels, progress=progress)
    return PrepareReport(out, layout, [p[3] for p in plans], counts, dict(official), check)


def _subset_given(subset: str | None, specs: list[tuple[Path, ArchiveSpec]]) -> bool:
    return any(spec.subset == subset for _, spec in specs)
