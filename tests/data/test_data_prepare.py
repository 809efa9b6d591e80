"""`data prepare`: official archives (tiny copies with the published names and inner folders) -> loader layouts."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import PH2_DIAGNOSES, build_cvc, write_official_archives, zip_tree

from lesionseg.cli import main
from lesionseg.data import find_cases, load_case
from lesionseg.data.prepare import OFFICIAL_COUNTS, PrepareError, expected_archives, prepare_archives

LAYOUTS = ("isic2016", "isic2017", "isic2018", "ph2", "cvc_clinicdb", "kvasir_seg")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prepare_every_official_archive_set(layout: str, tmp_path: Path) -> None:
    archives, built = write_official_archives(layout, tmp_path / "downloads")
    assert sorted(a.name for a in archives) == sorted(expected_archives(layout))
    report = prepare_archives(layout, archives, tmp_path / "data")
    assert report.ok, report.check.problems
    cases = find_cases(tmp_path / "data", layout)
    assert [c.id for c in cases] == built.ids
    for case in cases:  # every image with its own mask
        _, mask = load_case(case)
        np.testing.assert_array_equal(mask, built.masks[case.id])
    if built.subsets:
        assert report.counts == {s: list(built.subsets.values()).count(s) for s in OFFICIAL_COUNTS[layout]}
    else:
        assert report.counts == {None: len(built.ids)}
    assert report.check.n_cases == len(built.ids)
    if layout == "ph2":  # the diagnosis table came along
        assert {c.id: c.meta["diagnosis"] for c in cases} == PH2_DIAGNOSES
    # the tiny copies hold fewer cases than the releases: said, subset by subset
    assert len(report.count_mismatches()) == len(OFFICIAL_COUNTS[layout])
    assert sum(r.files for r in report.archives) > 0


def test_cli_prepare_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archives, _ = write_official_archives("kvasir_seg", tmp_path / "downloads")
    root = tmp_path / "data"
    assert main(["data", "prepare", "kvasir_seg", *map(str, archives), "--out", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "kvasir-seg.zip: 6 file(s) unpacked, 1 other member(s) left in the archive" in out
    assert "cases 3 (official 1000)" in out and "WARNING kvasir_seg dataset: 3 case(s)" in out
    assert "3 case(s) read, 0 bad; 0 error(s)" in out
    assert main(["data", "check", str(root), "--no-progress"]) == 0
    assert main(["data", "prepare", "kvasir_seg", str(archives[0]), "--no-progress"]) == 2  # no --out


def test_unknown_and_foreign_archives_are_refused_by_name(tmp_path: Path) -> None:
    archives, _ = write_official_archives("isic2016", tmp_path / "downloads")
    odd = tmp_path / "downloads" / "ISIC2018_Training.zip"
    odd.write_bytes(archives[0].read_bytes())
    with pytest.raises(
        PrepareError, match=r"not an official archive of isic2018.*ISIC2018_Task1-2_Training_Input\.zip"
    ):
        prepare_archives("isic2018", [odd], tmp_path / "data")
    with pytest.raises(PrepareError, match="an archive of layout isic2016, not isic2018"):
        prepare_archives("isic2018", archives[:1], tmp_path / "data")
    with pytest.raises(ValueError, match="knows no archives of layout 'montgomery'; it prepares cvc_clinicdb"):
        prepare_archives("montgomery", archives, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_rar_is_refused_with_the_command_that_unpacks_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rar = tmp_path / "PH2Dataset.rar"
    rar.write_bytes(b"Rar!\x1a\x07\x00")
    assert main(["data", "prepare", "ph2", str(rar), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "RAR archive" in err and "unrar x PH2Dataset.rar" in err and "PH2Dataset.zip" in err


def test_an_image_archive_needs_its_ground_truth(tmp_path: Path) -> None:
    archives, _ = write_official_archives("isic2018", tmp_path / "downloads")
    by_name = {a.name: a for a in archives}
    images = by_name["ISIC2018_Task1-2_Training_Input.zip"]
    with pytest.raises(PrepareError, match="without ISIC2018_Task1_Training_GroundTruth.zip"):
        prepare_archives("isic2018", [images], tmp_path / "data")
    assert not (tmp_path / "data").exists()
    # the other half already under the root (unpacked by hand, or by an earlier run) is enough
    with zipfile.ZipFile(by_name["ISIC2018_Task1_Test_GroundTruth.zip"]) as zf:
        zf.extractall(tmp_path / "d2")
    report = prepare_archives("isic2018", [by_name["ISIC2018_Task1-2_Test_Input.zip"]], tmp_path / "d2")
    assert report.ok and report.counts == {"test": 1}


def _hostile_zip(path: Path, name: str, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Kvasir-SEG/images/a.jpg", b"x")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (0o120777 << 16) | 0
        zf.writestr(info, b"/etc/passwd" if symlink else b"evil")
    return path


@pytest.mark.parametrize(
    "name, symlink, message",
    [
        ("../../evil.txt", False, "climbs out"),
        ("Kvasir-SEG/masks/../../../evil.txt", False, "climbs out"),
        ("/tmp/evil.txt", False, "absolute path"),
        ("C:/evil.txt", False, "absolute path"),
        ("..\\evil.txt", False, "climbs out"),
        ("Kvasir-SEG/masks/a.jpg", True, "symbolic link"),
    ],
)
def test_hostile_members_refuse_the_archive(tmp_path: Path, name: str, symlink: bool, message: str) -> None:
    archive = _hostile_zip(tmp_path / "kvasir-seg.zip", name, symlink)
    with pytest.raises(PrepareError, match=message):
        prepare_archives("kvasir_seg", [archive], tmp_path / "a" / "b" / "data")
    assert not (tmp_path / "a").exists() and not (tmp_path / "evil.txt").exists()


def test_size_limits_refuse_zip_bombs_before_writing(tmp_path: Path) -> None:
    archive = tmp_path / "kvasir-seg.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Kvasir-SEG/images/a.jpg", b"\0" * 2_000_000)  # 2 MB of zeros deflate to about 2 kB
        zf.writestr("Kvasir-SEG/masks/a.jpg", b"\0" * 2_000_000)
    with pytest.raises(PrepareError, match="over the per-file limit of 1,000,000"):
        prepare_archives("kvasir_seg", [archive], tmp_path / "data", max_member_bytes=1_000_000)
    with pytest.raises(PrepareError, match="declare 4,000,000 bytes to unpack, over the limit of 3,000,000"):
        prepare_archives("kvasir_seg", [archive], tmp_path / "data", max_bytes=3_000_000)
    with pytest.raises(PrepareError, match="2 members, over the limit of 1"):
        prepare_archives("kvasir_seg", [archive], tmp_path / "data", max_members=1)
    assert not (tmp_path / "data").exists()


def test_a_member_larger_than_declared_is_stopped(tmp_path: Path) -> None:
    archive = tmp_path / "kvasir-seg.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Kvasir-SEG/masks/a.jpg", b"mask")
        zf.writestr("Kvasir-SEG/images/a.jpg", b"\0" * 1_000_000)
    # Rewrite the declared uncompressed size of images/a.jpg (local header and central directory) to 1000 bytes: a
    # header that lies about what the data inflates to.
    data = bytearray(archive.read_bytes())
    name = b"Kvasir-SEG/images/a.jpg"
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at : name_at + len(name)] == name:
                struct.pack_into("<I", data, start + size_at, 1000)
            start += 4
    archive.write_bytes(bytes(data))
    with pytest.raises(PrepareError, match="images/a.jpg"):
        prepare_archives("kvasir_seg", [archive], tmp_path / "data")
    images = tmp_path / "data" / "Kvasir-SEG" / "images"
    assert not (images / "a.jpg").exists() and not list(images.glob("*.part"))  # nothing half-written left


def test_existing_folders_need_overwrite(tmp_path: Path) -> None:
    archives, _ = write_official_archives("cvc_clinicdb", tmp_path / "downloads")
    prepare_archives("cvc_clinicdb", archives, tmp_path / "data")
    with pytest.raises(PrepareError, match="already holds files.*--overwrite"):
        prepare_archives("cvc_clinicdb", archives, tmp_path / "data")
    assert prepare_archives("cvc_clinicdb", archives, tmp_path / "data", overwrite=True).ok


def test_png_copy_is_taken_over_tif_and_wrappers_are_found(tmp_path: Path) -> None:
    src = tmp_path / "src" / "extra wrapper"
    build_cvc(src / "CVC-ClinicDB", fmt="png", sub="PNG", orphans=False)
    build_cvc(src / "CVC-ClinicDB", fmt="tif", sub="TIF", orphans=False)
    archive = zip_tree(tmp_path / "CVC-ClinicDB.zip", tmp_path / "src")
    report = prepare_archives("cvc_clinicdb", [archive], tmp_path / "data")
    assert report.ok and report.counts == {None: 3}
    assert report.archives[0].copies_left == [
        "extra wrapper/CVC-ClinicDB/TIF/Original",
        "extra wrapper/CVC-ClinicDB/TIF/Ground Truth",
    ]
    files = sorted(p.name for p in (tmp_path / "data" / "CVC-ClinicDB" / "Original").iterdir())
    assert files == ["1.png", "10.png", "2.png"]


def test_an_archive_without_the_dataset_folders_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "kvasir-seg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("something/else.txt", b"x")
    with pytest.raises(PrepareError, match="holds none of the folders images, masks.*something"):
        prepare_archives("kvasir_seg", [archive], tmp_path / "data")
    (tmp_path / "not-a-zip").mkdir()
    fake = tmp_path / "not-a-zip" / "kvasir-seg.zip"
    fake.write_bytes(b"not a zip at all")
    with pytest.raises(PrepareError, match="not a zip file"):
        prepare_archives("kvasir_seg", [fake], tmp_path / "data")


def test_a_missing_mask_fails_the_check_and_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archives, built = write_official_archives("isic2016", tmp_path / "downloads")
    truth = next(a for a in archives if a.name == "ISBI2016_ISIC_Part1_Training_GroundTruth.zip")
    with zipfile.ZipFile(truth) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    dropped = f"ISBI2016_ISIC_Part1_Training_GroundTruth/{built.ids[0]}_Segmentation.png"
    with zipfile.ZipFile(truth, "w") as zf:
        for name, data in members.items():
            if name != dropped:
                zf.writestr(name, data)
    root = tmp_path / "data"
    assert main(["data", "prepare", "isic2016", *map(str, archives), "--out", str(root), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "ERROR   image_without_mask" in out and f"{built.ids[0]}.jpg: no mask" in out
    assert "train 1 (official 900), test 1 (official 379)" in out  # the unpaired image is not a case
