"""The on-disk case cache: same arrays as decoding, shared by instances, never stale, never pickled, never torn."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import write_image

import lesionseg.data.dataset as dataset_module
from lesionseg.data import CACHE_VERSION, CaseCache, SegmentationDataset, find_cases, open_case_cache, resolve_cache_dir
from lesionseg.data.cache import default_cache_dir
from lesionseg.data.io import ImageReadError


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """Ids of the cases the dataset decodes from their files."""
    calls: list[str] = []
    real = dataset_module.load_case

    def counting(case, channels=3):
        calls.append(case.id)
        return real(case, channels)

    monkeypatch.setattr(dataset_module, "load_case", counting)
    return calls


def _arrays(ds: SegmentationDataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [ds.load_resized(i) for i in range(len(ds))]


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (ia, ma), (ib, mb) in zip(a, b):
        assert ia.dtype == ib.dtype == np.uint8 and ma.dtype == mb.dtype == np.uint8
        assert ia.shape == ib.shape and ma.shape == mb.shape
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)


@pytest.mark.parametrize("size", [(8, 10), (4, 6), (13, 17)])  # native, shrunk (area), enlarged (linear)
@pytest.mark.parametrize("channels", [3, 1])
def test_bit_identical_with_and_without_the_disk_cache(folder, tmp_path, size, channels) -> None:
    cases = find_cases(folder.root)
    plain = _arrays(SegmentationDataset(cases, size=size, in_channels=channels, cache=False))
    cache = CaseCache.for_root(tmp_path / "cache", folder.root)
    writing = _arrays(SegmentationDataset(cases, size=size, in_channels=channels, disk_cache=cache))
    reading = _arrays(SegmentationDataset(cases, size=size, in_channels=channels, disk_cache=cache))
    _assert_same(plain, writing)
    _assert_same(plain, reading)
    assert reading[0][0].shape == (*size, channels)


def test_a_second_dataset_reads_from_disk(folder, tmp_path, counted) -> None:
    cases = find_cases(folder.root)
    cache = CaseCache.for_root(tmp_path / "cache", folder.root)
    first = _arrays(SegmentationDataset(cases, size=(6, 7), disk_cache=cache))
    assert sorted(counted) == ["case1", "case10", "case2"]
    entries = sorted(cache.folder((6, 7), 3).glob("*.npz"))
    assert len(entries) == 3 and all(cache.contains(c, (6, 7), 3) for c in cases)
    counted.clear()
    second = SegmentationDataset(cases, size=(6, 7), disk_cache=cache)
    _assert_same(first, _arrays(second))
    assert counted == []
    # Another working size or channel count is another entry.
    _arrays(SegmentationDataset(cases, size=(5, 7), disk_cache=cache))
    _arrays(SegmentationDataset(cases, size=(6, 7), in_channels=1, disk_cache=cache))
    assert len(counted) == 6
    assert not any(cache.contains(c, (6, 8), 3) for c in cases)


def test_entries_live_per_root_and_size(folder, tmp_path) -> None:
    cache = CaseCache.for_root(tmp_path / "cache", folder.root)
    other = CaseCache.for_root(tmp_path / "cache", tmp_path / "elsewhere" / folder.root.name)
    assert cache.directory.parent == other.directory.parent == tmp_path / "cache"
    assert cache.directory != other.directory and cache.directory.name.startswith(folder.root.name + "-")
    assert cache.folder((256, 320), 3).name == f"256x320-c3-v{CACHE_VERSION}"
    case = find_cases(folder.root)[0]
    assert cache.entry_path(case, (256, 320), 3).parent == cache.folder((256, 320), 3)


def test_a_changed_source_file_is_not_served_from_the_cache(folder, tmp_path, counted) -> None:
    cases = find_cases(folder.root)
    cache = CaseCache.for_root(tmp_path / "cache", folder.root)
    _arrays(SegmentationDataset(cases, size=(8, 10), disk_cache=cache))
    changed = folder.images["case10"]
    write_image(changed, np.full((8, 10, 3), 77, np.uint8))
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a new mtime even on coarse clocks
    assert not cache.contains(cases[1], (8, 10), 3) and cache.contains(cases[0], (8, 10), 3)
    counted.clear()
    again = _arrays(SegmentationDataset(cases, size=(8, 10), disk_cache=cache))
    assert counted == ["case10"]
    assert np.all(again[1][0] == 77)
    _assert_same(again, _arrays(SegmentationDataset(cases, size=(8, 10), cache=False)))
    # The rewritten entry is valid again; touching a mask makes it stale too.
    assert cache.contains(cases[1], (8, 10), 3)
    mask = folder.mask_paths["case2"]
    st = mask.stat()
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not cache.contains(cases[2], (8, 10), 3)


def test_a_missing_source_file_raises_as_without_the_cache(folder, tmp_path) -> None:
    cases = find_cases(folder.root)
    cache = CaseCache.for_root(tmp_path / "cache", folder.root)
    _arrays(SegmentationDataset(cases, size=(8, 10), disk_cache=cache))
    folder.images["case1"].unlink()
    assert not cache.contains(cases[0], (8, 10), 3)
    with pytest.raises(ImageReadError, match="no such file"):
        SegmentationDataset(cases, size=(8, 10), disk_cache=cache).load_resized(0)


def _object_member(path: Path) -> None:
    key = np.load(path, allow_pickle=False)["key"]
    with path.open("wb") as f:
        np.savez(f, key=key, image=np.array([{"x": 1}], dtype=object), mask=np.zeros((8, 10), np.uint8))


def _wrong_shape(path: Path) -> None:
    key = np.load(path, allow_pickle=False)["key"]
    with path.open("wb") as f:
        np.savez(f, key=key, image=np.zeros((8, 10, 1), np.uint8), mask=np.zeros((8, 10), np.uint8))


def _npy(path: Path) -> None:
    with path.open("wb") as f:
        np.save(f, np.zeros((8, 10, 3), np.uint8))


CORRUPTIONS = {
    "garbage": lambda p: p.write_bytes(b"\x00not an archive" * 10),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "object_array": _object_member,
    "wrong_shape": _wrong_shape,
    "npy_not_npz": _npy,
}


@pytest.mark.parametrize("corrupt", sorted(CORRUPTIONS))
def test_an_unusable_entry_is_recomputed_and_rewritten(folder, tmp_path, counted, caplog, corrupt) -> None:
    cases = find_cases(folder.root)
    cache = CaseCache.for_root(tmp_path / "cache", folder.root)
    expected = _arrays(SegmentationDataset(cases, size=(8, 10), disk_cache=cache))
    entry = cache.entry_path(cases[0], (8, 10), 3)
    CORRUPTIONS[corrupt](entry)
    counted.clear()
    with caplog.at_level(logging.WARNING, logger="lesionseg.data.cache"):
        got = _arrays(SegmentationDataset(cases, size=(8, 10), disk_cache=cache))
    _assert_same(expected, got)
    assert counted == ["case1"]
    assert any("unusable cache entry" in r.getMessage() and str(entry) in r.getMessage() for r in caplog.records)
    assert cache.contains(cases[0], (8, 10), 3)


def test_entries_are_never_unpickled(folder, tmp_path, monkeypatch) -> None:
    import pickle

    cases = find_cases(folder.root)
    cache = CaseCache.for_root(tmp_path / "cache", folder.root)
    _arrays(SegmentationDataset(cases, size=(8, 10), disk_cache=cache))
    _object_member(cache.entry_path(cases[0], (8, 10), 3))

    def refuse(*args, **kwargs):
        raise AssertionError("the cache unpickled an entry")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert cache.load(cases[0], (8, 10), 3) is None
    assert cache.load(cases[1], (8, 10), 3) is not None


def test_concurrent_writers_never_show_a_partial_entry(tmp_path, caplog) -> None:
    root = tmp_path / "data"
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # ~200 kB entries
    mask = (np.arange(256 * 256).reshape(256, 256) % 3 == 0).astype(np.uint8)
    write_image(root / "images" / "a.png", image)
    write_image(root / "masks" / "a.png", mask * 255)
    case = find_cases(root, "folder")[0]
    cache = CaseCache.for_root(tmp_path / "cache", root)
    size = (256, 256)
    errors: list[str] = []
    stop = threading.Event()

    def write() -> None:
        for _ in range(25):
            cache.store(case, size, 3, image, mask)

    def read() -> None:
        while not stop.is_set():
            got = cache.load(case, size, 3)
            if got is not None and not (np.array_equal(got[0], image) and np.array_equal(got[1], mask)):
                errors.append("wrong arrays")

    with caplog.at_level(logging.WARNING, logger="lesionseg.data.cache"):
        readers = [threading.Thread(target=read) for _ in range(2)]
        writers = [threading.Thread(target=write) for _ in range(3)]
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join()
        stop.set()
        for t in readers:
            t.join()
    assert errors == []
    assert not [r for r in caplog.records if "unusable" in r.getMessage()]
    assert [p.name for p in cache.folder(size, 3).iterdir()] == [cache.entry_path(case, size, 3).name]  # no temp left


def test_an_unwritable_cache_folder_is_logged_and_skipped(folder, tmp_path, caplog) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    cases = find_cases(folder.root)
    cache = CaseCache.for_root(blocker, folder.root)
    with caplog.at_level(logging.WARNING, logger="lesionseg.data.cache"):
        got = _arrays(SegmentationDataset(cases, size=(8, 10), disk_cache=cache))
    _assert_same(got, _arrays(SegmentationDataset(cases, size=(8, 10), cache=False)))
    assert sum("cannot write the case cache" in r.getMessage() for r in caplog.records) == 1


def test_cache_dir_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LESIONSEG_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(None) is None and resolve_cache_dir("") is None and resolve_cache_dir("  ") is None
    assert resolve_cache_dir("auto") == tmp_path / "env" == default_cache_dir()
    assert resolve_cache_dir(str(tmp_path / "x")) == tmp_path / "x"
    monkeypatch.delenv("LESIONSEG_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir("auto") == tmp_path / "home" / ".cache" / "lesionseg" / "cases"
    assert open_case_cache(None, tmp_path) is None
    opened = open_case_cache(str(tmp_path / "c"), tmp_path / "root")
    assert opened is not None and opened.directory.parent == tmp_path / "c"
