"""Lenient layout scans and the one-pass data check: every problem of every case, named."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import Built, case_image, case_mask, write_image, write_mask

from lesionseg.data import (
    PROBLEM_SEVERITY,
    BadDataError,
    DatasetLayoutError,
    check_root,
    find_cases,
    load_case,
    scan_cases,
    screen_cases,
)

LAYOUT_FIXTURES = ("ph2", "kvasir", "folder", "cvc", "montgomery", "isic2016", "isic2017", "isic2018")


@pytest.mark.parametrize("fixture", LAYOUT_FIXTURES)
def test_scan_reports_an_image_without_mask_where_find_cases_refuses(request, fixture: str) -> None:
    built: Built = request.getfixturevalue(fixture)
    lost = built.ids[0]
    built.mask_paths[lost].unlink()
    with pytest.raises(DatasetLayoutError, match=lost):
        find_cases(built.root)
    scan = scan_cases(built.root)
    assert [c.id for c in scan.cases] == built.ids[1:]
    missing = [p for p in scan.problems if p.kind == "image_without_mask"]
    assert [(p.case_id, p.path) for p in missing] == [(lost, built.images[lost])]
    assert str(built.images[lost]) in missing[0].message
    # the fixtures of the official layouts also hold a mask without an image: reported, never a case
    orphans = [p for p in scan.problems if p.kind == "mask_without_image"]
    assert bool(orphans) == (fixture not in ("ph2", "folder"))
    assert all(p.case_id not in built.ids for p in orphans)


def test_scan_keeps_the_first_of_two_files_for_one_id(folder: Built) -> None:
    write_image(folder.root / "images" / "case1.jpg", case_image(7))
    with pytest.raises(DatasetLayoutError, match="two files for id 'case1'"):
        find_cases(folder.root)
    scan = scan_cases(folder.root)
    assert [c.id for c in scan.cases] == folder.ids
    assert next(c for c in scan.cases if c.id == "case1").image.name == "case1.jpg"  # first in name order
    dup = [p for p in scan.problems if p.kind == "duplicate_id"]
    assert [(p.case_id, p.path.name) for p in dup] == [("case1", "case1.png")]


def test_folder_threshold_is_chosen_per_mask_file(folder: Built) -> None:
    # One JPEG mask among PNG masks: the JPEG is thresholded at 127 (its compression noise is not lesion), the
    # PNGs at 0 (a 0/1 mask stays lesion). Choosing one threshold for the whole folder gets one of them wrong.
    jpeg_id = folder.ids[0]
    folder.mask_paths[jpeg_id].unlink()
    write_mask(folder.root / "masks" / f"{jpeg_id}_mask.jpg", folder.masks[jpeg_id], mode="RGB")
    low_id = folder.ids[1]
    Path(folder.mask_paths[low_id]).write_bytes(b"")  # replaced below by a 0/1-valued PNG
    write_image(folder.mask_paths[low_id], folder.masks[low_id])  # values 0 and 1, not 0 and 255
    cases = {c.id: c for c in find_cases(folder.root)}
    assert cases[jpeg_id].mask_threshold == 127 and cases[low_id].mask_threshold == 0
    for cid in (jpeg_id, low_id):
        _, mask = load_case(cases[cid])
        np.testing.assert_array_equal(mask, folder.masks[cid])


def _png_bomb() -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 9000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def build_broken(root: Path) -> dict[str, str]:
    """A ``folder`` root holding one case of every kind of problem; returns id -> expected problem kind."""
    good = case_mask(3, 16, 20)
    for cid in ("good", "trunc", "bomb", "mismatch", "nomask", "empty", "nonbinary", "dup", "badmask"):
        write_image(root / "images" / f"{cid}.png", case_image(len(cid), 16, 20))
    for cid in ("good", "trunc", "bomb", "dup", "orphan"):
        write_mask(root / "masks" / f"{cid}.png", good)
    write_mask(root / "masks" / "mismatch.png", case_mask(3, 17, 20))
    write_mask(root / "masks" / "empty.png", np.zeros((16, 20), np.uint8))
    levels = good * 255
    levels[0, :3] = [3, 7, 100]
    write_image(root / "masks" / "nonbinary.png", levels.astype(np.uint8))
    (root / "masks" / "badmask.png").write_bytes(b"GIF89a not really")
    write_image(root / "images" / "dup.jpg", case_image(1, 16, 20))
    trunc = root / "images" / "trunc.png"
    trunc.write_bytes(trunc.read_bytes()[:-40])
    (root / "images" / "bomb.png").write_bytes(_png_bomb())
    return {
        "trunc": "unreadable",
        "bomb": "unreadable",
        "badmask": "unreadable",
        "mismatch": "size_mismatch",
        "nomask": "image_without_mask",
        "orphan": "mask_without_image",
        "dup": "duplicate_id",
        "empty": "empty_mask",
        "nonbinary": "non_binary_mask",
    }


def test_check_root_reports_every_problem_in_one_pass(tmp_path: Path) -> None:
    expected = build_broken(tmp_path / "broken")
    report = check_root(tmp_path / "broken")
    assert report.layout == "folder"
    assert sorted((p.case_id, p.kind) for p in report.problems) == sorted(expected.items())
    for p in report.problems:
        assert str(p.path) in p.message or str(p.path.parent) in p.message, p
    bomb = next(p for p in report.problems if p.case_id == "bomb")
    assert "900,000,000 pixels" in bomb.message and "limit" in bomb.message
    assert report.bad_ids() == {cid for cid, kind in expected.items() if PROBLEM_SEVERITY[kind] == "error"}
    assert not report.ok
    assert report.counts()["unreadable"] == 3 and report.counts()["empty_mask"] == 1
    d = report.to_dict()
    assert d["errors"] == 7 and d["warnings"] == 1 and d["notes"] == 1 and len(d["problems"]) == 9
    # 'good', 'empty', 'nonbinary' read fine; 'dup' is read too (its first file), but its id is ambiguous
    assert report.n_cases == 8


def test_check_root_of_a_clean_root_is_ok(folder: Built) -> None:
    report = check_root(folder.root)
    assert report.n_cases == len(folder.ids)
    assert report.ok and report.problems == []


def test_screen_cases_refuses_with_the_whole_list_or_skips(tmp_path: Path) -> None:
    expected = build_broken(tmp_path / "broken")
    scan = scan_cases(tmp_path / "broken")
    with pytest.raises(BadDataError) as err:
        screen_cases(scan)
    msg = str(err.value)
    errors = {cid for cid, kind in expected.items() if PROBLEM_SEVERITY[kind] == "error"}
    for cid in errors:
        assert cid in msg, cid
    assert f"lesionseg data check {tmp_path / 'broken'}" in msg and "--skip-bad" in msg
    cases, skipped = screen_cases(scan, skip_bad=True)
    assert sorted(c.id for c in cases) == ["empty", "good", "nonbinary"]
    assert {p.case_id for p in skipped} == errors
    # only the wanted ids are read and judged
    cases, skipped = screen_cases(scan, ids={"good", "empty"})
    assert sorted(c.id for c in cases) == ["empty", "good"] and skipped == []
