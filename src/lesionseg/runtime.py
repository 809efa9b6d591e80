"""Where and how the package computes, and where it ran: device resolution, autocast, provenance.

The bottom layer beside :mod:`lesionseg.registry`: it imports nothing from lesionseg, so the engine (training,
evaluation), inference (the predictor, without the engine), the benchmark, the server, the CLI and the scripts under
``perf/`` and ``tools/`` all ask the same functions:

- :func:`resolve_device`: ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a torch device (under ``torchrun`` the GPU of
  the process's ``LOCAL_RANK``), refusing CUDA where torch sees none rather than silently running on the CPU;
  :func:`cuda_possible` says, without importing torch where no driver is loaded, whether a GPU may be there.
- :func:`autocast_context`: the autocast of a precision (``fp32``, ``bf16``, ``fp16``) on a device.
- Provenance: :func:`cpu_name`, :func:`cpu_flags` (one reader of ``/proc/cpuinfo``), :func:`machine_description` and
  :func:`lesionseg_commit`, for checkpoint records, benchmark results and the speed scripts. These degrade to a plain
  answer where the information is absent (no ``/proc``, no git) instead of raising.

torch is imported inside the functions that need it, never by importing this module: the onnxruntime inference path
imports it and stays torch-free.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEVICE_CHOICES",
    "PRECISIONS",
    "autocast_context",
    "cpu_flags",
    "cpu_name",
    "cuda_possible",
    "env_world_size",
    "lesionseg_commit",
    "local_rank",
    "machine_description",
    "resolve_device",
]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("fp32", "bf16", "fp16")


def env_world_size() -> int:
    """World size announced by the launcher (``WORLD_SIZE``; 1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's index on its node (``LOCAL_RANK``; 0 when not launched by torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def cuda_possible() -> bool:
    """Whether a CUDA device may be present, answered without importing torch where it cannot be: a machine without
    a loaded NVIDIA driver has none. Where a driver is loaded, torch is asked."""
    if not os.path.exists("/proc/driver/nvidia/version") and not os.path.exists("/dev/nvidiactl"):
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The torch device a spec names.

    Args:
        spec: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` (or a torch device). Under
            torchrun ``auto`` and ``cuda`` take the GPU of the process's ``LOCAL_RANK``, one GPU per process.

    Raises:
        ValueError: an unknown spec, CUDA requested where torch sees none, or a GPU index past the last GPU.
    """
    import torch

    spec = str(spec).strip().lower()
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        spec = "cuda"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {spec!r} requested but torch sees no CUDA device (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda or 'none'}); use device cpu or auto"
            )
        count = torch.cuda.device_count()
        if spec == "cuda":
            index = local_rank() if env_world_size() > 1 else torch.cuda.current_device()
        else:
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"device {spec!r}: expected cuda:N with an integer N") from None
        if not 0 <= index < count:
            raise ValueError(f"device {spec!r}: GPU index {index} out of range; {count} CUDA device(s) visible")
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {spec!r}; use one of {', '.join(DEVICE_CHOICES)}")


def autocast_context(precision: str, device: torch.device | str = "cpu"):
    """The autocast context of a precision on a device.

    ``fp32``: no autocast. ``bf16``: bfloat16 autocast on CPU or CUDA. ``fp16``: float16 autocast, CUDA only (float16
    training also needs a gradient scaler, which the trainer adds; CPU runs use ``bf16``).

    Raises:
        ValueError: an unknown precision, or ``fp16`` on a non-CUDA device.
    """
    import torch

    kind = torch.device(device).type
    if precision == "bf16":
        return torch.autocast(device_type=kind, dtype=torch.bfloat16)
    if precision == "fp16":
        if kind != "cuda":
            raise ValueError(f"precision fp16 needs a CUDA device, got {kind}; use bf16 on CPU")
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    if precision != "fp32":
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    return contextlib.nullcontext()


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
    import torch

    where = "CPU"
    if device is not None and device.type == "cuda":
        where = f"GPU {torch.cuda.get_device_name(device)}"
    return f"{platform.node()} ({cpu_name()}, torch {torch.__version__}, {where})"


@functools.cache
def lesionseg_commit() -> str | None:
    """The git commit of the lesionseg source tree in use (with ``-dirty`` for local changes), None outside git.

    Asked once per process: the code a process runs is the code it imported.
    """
    here = Path(__file__).resolve().parent  # the package folder
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
