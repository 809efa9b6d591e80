"""Where a run ran: the processor, its feature flags, the torch build and the lesionseg commit.

One reader of ``/proc/cpuinfo`` for the trainer's checkpoint records, the benchmark (its machine column and the
precision probe's machine key) and the scripts under ``perf/`` and ``tools/``. Every function degrades to a
plain answer where the information is absent (no ``/proc``, no git) instead of raising.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

__all__ = ["cpu_flags", "cpu_name", "lesionseg_commit", "machine_description"]

_CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(key: str) -> str | None:
    """The value of the first ``key : value`` line of /proc/cpuinfo, None where the file or the key is absent."""
    try:
        text = _CPUINFO.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


def cpu_flags() -> set[str]:
    """The CPU feature flags of this machine (empty where /proc/cpuinfo is absent)."""
    return set((_cpuinfo_field("flags") or "").split())


def cpu_name() -> str:
    """The processor's model name (``AMD EPYC 9R14``), else what :mod:`platform` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown CPU"


def machine_description(device: torch.device | None = None) -> str:
    """Host, CPU model, torch version and the accelerator (``vm (AMD EPYC, torch 2.13.0+cpu, CPU)``)."""
    where = "CPU"
    if device is not None and device.type == "cuda":
        where = f"GPU {torch.cuda.get_device_name(device)}"
    return f"{platform.node()} ({cpu_name()}, torch {torch.__version__}, {where})"


@functools.cache
def lesionseg_commit() -> str | None:
    """The git commit of the lesionseg source tree in use (with ``-dirty`` for local changes), None outside git.

    Asked once per process: the code a process runs is the code it imported.
    """
    here = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "") if head else None
