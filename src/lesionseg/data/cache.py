"""An on-disk cache of decoded, resized cases, shared by every run and process on a machine.

Decoding a dermoscopy image costs 10-400 ms; a training run decodes every case in its first epoch, and a benchmark
of many models decodes the same files again in every run. :class:`CaseCache` keeps each case at a working size as
uint8 arrays (image (H, W, C), mask (H, W)) in one ``.npz`` file, so only the first run on a machine pays.

Layout: ``<cache dir>/<root name>-<hash of the root>/<H>x<W>-c<C>-v<version>/<case id>-<hash of its paths>.npz``.
Each entry stores, beside the arrays, the key it was made under: the absolute path, size and ``mtime_ns`` of the
image and of every mask file, the mask threshold, working size, channels and :data:`CACHE_VERSION`. An entry whose
key differs from the files' present one (a file was replaced or touched) is stale and is recomputed and overwritten.

Entries are written to a temporary name in their folder and moved into place with :func:`os.replace`, so a process
reading while another writes sees either no entry or a whole one. They are read with ``allow_pickle=False``: an entry
that does not load, holds other members or an object array, or has the wrong shape or dtype is logged, recomputed
and rewritten; it never stops a run. A cache folder that cannot be written is logged once and the run goes on
without storing. Clearing the cache is deleting its folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .base import Case

__all__ = ["CACHE_VERSION", "CaseCache", "default_cache_dir", "open_case_cache", "resolve_cache_dir"]

_logger = logging.getLogger(__name__)

# Bump when load_case, resize_pair or the readers below them change their output: entries of other versions are
# then neither read nor overwritten (they live in another folder), and can be deleted.
CACHE_VERSION = 1

CACHE_ENV = "LESIONSEG_CACHE_DIR"

_MEMBERS = {"key", "image", "mask"}

Arrays = tuple[np.ndarray, np.ndarray]


def default_cache_dir() -> Path:
    """``$LESIONSEG_CACHE_DIR`` when set, else ``~/.cache/lesionseg/cases``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lesionseg" / "cases"


def resolve_cache_dir(setting: str | Path | None) -> Path | None:
    """The cache folder a ``data.cache_dir`` setting names: None or ``""`` = no disk cache, ``"auto"`` =
    :func:`default_cache_dir`, anything else a path (``~`` expanded)."""
    if setting is None or str(setting).strip() == "":
        return None
    if str(setting).strip() == "auto":
        return default_cache_dir()
    return Path(setting).expanduser()


def open_case_cache(setting: str | Path | None, root: str | Path) -> CaseCache | None:
    """The cache of data root ``root`` under the folder ``setting`` names (see :func:`resolve_cache_dir`); None when
    the setting asks for no disk cache."""
    directory = resolve_cache_dir(setting)
    return None if directory is None else CaseCache.for_root(directory, root)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64] or "_"


def _source_files(case: Case) -> list[Path]:
    files = [case.image]
    if case.mask is not None:
        files.append(case.mask)
    files.extend(Path(p) for p in case.meta.get("extra_masks", ()))
    return [Path(os.path.abspath(p)) for p in files]


class CaseCache:
    """Decoded, resized cases of one data root, on disk.

    Args:
        directory: the folder of this data root's entries (:meth:`for_root` derives it from a cache folder and the
            root); created on the first write.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._warned_write = False

    @classmethod
    def for_root(cls, cache_dir: str | Path, root: str | Path) -> CaseCache:
        """The cache of data root ``root`` in the shared folder ``cache_dir`` (one subfolder per root)."""
        resolved = Path(root).expanduser().resolve()
        return cls(Path(cache_dir) / f"{_safe(resolved.name)}-{_digest(str(resolved))}")

    def __repr__(self) -> str:
        return f"CaseCache({str(self.directory)!r})"

    def folder(self, size: tuple[int, int], channels: int) -> Path:
        """The folder of the entries at working size ``size`` = (H, W) with ``channels`` image channels."""
        return self.directory / f"{int(size[0])}x{int(size[1])}-c{int(channels)}-v{CACHE_VERSION}"

    def entry_path(self, case: Case, size: tuple[int, int], channels: int) -> Path:
        """Where ``case``'s entry lives (whether or not it exists)."""
        where = "\n".join(str(p) for p in _source_files(case))
        return self.folder(size, channels) / f"{_safe(case.id)}-{_digest(where)}.npz"

    def key(self, case: Case, size: tuple[int, int], channels: int) -> str | None:
        """The identity an entry of ``case`` must carry to be used now; None when a file cannot be stat'ed."""
        files = []
        try:
            for path in _source_files(case):
                st = path.stat()
                files.append([str(path), st.st_size, st.st_mtime_ns])
        except OSError:
            return None
        return json.dumps(
            {
                "version": CACHE_VERSION,
                "size": [int(size[0]), int(size[1])],
                "channels": int(channels),
                "mask_threshold": int(case.mask_threshold),
                "files": files,
            },
            sort_keys=True,
        )

    def _read(self, path: Path, key: str, size: tuple[int, int], channels: int) -> Arrays | None:
        """The arrays of the entry at ``path`` when it exists, is whole and was made under ``key``; None otherwise."""
        if not path.is_file():
            return None
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError(f"not an .npz archive (got {type(loaded).__name__})")
            with loaded as npz:
                if set(npz.files) != _MEMBERS:
                    raise ValueError(f"members {sorted(npz.files)}, expected {sorted(_MEMBERS)}")
                stored = npz["key"]
                if stored.dtype.kind != "U" or stored.ndim != 0:
                    raise ValueError(f"key of dtype {stored.dtype} and shape {stored.shape}")
                if str(stored[()]) != key:
                    _logger.debug("%s: stale cache entry (its files changed); recomputing", path)
                    return None
                image, mask = npz["image"], npz["mask"]
            h, w = int(size[0]), int(size[1])
            if image.dtype != np.uint8 or image.shape != (h, w, channels):
                raise ValueError(f"image {image.dtype} {image.shape}, expected uint8 {(h, w, channels)}")
            if mask.dtype != np.uint8 or mask.shape != (h, w):
                raise ValueError(f"mask {mask.dtype} {mask.shape}, expected uint8 {(h, w)}")
            return image, mask
        except Exception as err:
            # Whatever a damaged file makes numpy or zipfile raise (BadZipFile, EOFError, ValueError for a pickled
            # member, OSError, ...), the entry is rebuilt from the source files.
            _logger.warning("%s: unusable cache entry (%s: %s); recomputing it", path, type(err).__name__, err)
            return None

    def load(self, case: Case, size: tuple[int, int], channels: int) -> Arrays | None:
        """``(image uint8 (H, W, C), mask uint8 (H, W))`` from a valid entry of ``case``, or None (no entry, stale,
        unusable)."""
        key = self.key(case, size, channels)
        return None if key is None else self._read(self.entry_path(case, size, channels), key, size, channels)

    def contains(self, case: Case, size: tuple[int, int], channels: int) -> bool:
        """Whether ``case`` has a valid entry made from its files as they are now (by path, size and ``mtime_ns``).

        Such an entry proves that the files decoded and that image and masks have the same size, so training's
        screening need not decode them again. The entry is read whole (a few hundred kB, far cheaper than a decode).
        """
        return self.load(case, size, channels) is not None

    def store(self, case: Case, size: tuple[int, int], channels: int, image: np.ndarray, mask: np.ndarray) -> bool:
        """Write ``case``'s entry under the files' present key; False when it could not be written (logged)."""
        key = self.key(case, size, channels)
        return key is not None and self._write(self.entry_path(case, size, channels), key, image, mask)

    def _write(self, path: Path, key: str, image: np.ndarray, mask: np.ndarray) -> bool:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "xb") as f:
                np.savez(f, key=np.array(key), image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask))
            os.replace(tmp, path)
            return True
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not self._warned_write:
                _logger.warning("%s: cannot write the case cache (%s); going on without storing", self.directory, err)
                self._warned_write = True
            return False

    def get(self, case: Case, size: tuple[int, int], channels: int, compute: Callable[[], Arrays]) -> Arrays:
        """``case`` at the working size: from its entry when valid, else from ``compute()``, then stored.

        The key is taken before ``compute`` runs, so a file replaced while it is decoded leaves an entry that the
        next read finds stale.
        """
        key = self.key(case, size, channels)
        path = self.entry_path(case, size, channels)
        if key is not None:
            hit = self._read(path, key, size, channels)
            if hit is not None:
                return hit
        image, mask = compute()
        if key is not None:
            self._write(path, key, image, mask)
        return image, mask
