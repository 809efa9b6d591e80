"""Per machine, per model choice of the training precision (fp32 or bf16 autocast), by measuring it.

bf16 autocast halves the step time of most of our models on CPUs with AVX512-BF16 or AMX and on recent GPUs, is
several times slower on CPUs without native bf16, and on one AMX CPU the bf16 backward of a dilated depthwise
convolution (oneDNN's jit_bf16 backward-weights kernel, dilation >= 3) killed EGE-UNet's training with a segfault and
gave MALUNet non-finite gradients. So bf16 is never switched on as a blanket rule: :func:`resolve_precision` trains
the model briefly in each precision, each in its own ``lesionseg train`` subprocess (a segfault or a non-finite loss
ends that subprocess, not the benchmark), and adopts bf16 only when

- the CPU has native bf16 (``avx512_bf16`` or ``amx_bf16`` in its flags) or the device is a GPU supporting bf16,
- both trials finished,
- the steady bf16 epoch (median of epochs 2..E) is at least :data:`MIN_SPEEDUP` times faster than fp32's, and
- the best validation Dice per image of the bf16 trial is no more than :data:`DICE_TOLERANCE` below fp32's.

Both trials start from the same seed and see the same batches, so the Dice comparison is paired; a few epochs are a
coarse check (it catches a precision that breaks training, not a fraction of a point). The decision and every figure
behind it are kept as JSON in ``record_dir/<machine key>/<label>.json`` and read back on the next call, so a model is
probed once per machine; the report quotes these files.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..engine.config import apply_overrides
from ..runtime import cpu_flags, cpu_name

_logger = logging.getLogger(__name__)

#: bf16's steady epoch must be at least this many times faster than fp32's.
MIN_SPEEDUP = 1.1
#: bf16's best validation Dice per image may be at most this far (absolute, 0-1 scale) below fp32's.
DICE_TOLERANCE = 0.02
#: trial length in epochs (the first is excluded from the speed figure: it decodes the images).
PROBE_EPOCHS = 4


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` runs bf16 natively (CPU: AVX512-BF16 or AMX; CUDA: ``torch.cuda.is_bf16_supported``)."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def machine_key(device: str = "cpu") -> str:
    """A file-name-safe key of what decides the choice: the processor, its bf16 support and the torch version."""
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
        bf16 = "bf16" if native_bf16(device) else "nobf16"
    else:
        flags = cpu_flags()
        name = cpu_name()
        bf16 = "amx" if "amx_bf16" in flags else "avx512bf16" if "avx512_bf16" in flags else "nobf16"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{slug}-{bf16}-torch{torch.__version__.split('+')[0]}"


def _trial(
    config: Path, overrides: Sequence[str], precision: str, epochs: int, device: str | None, timeout_s: float
) -> dict[str, Any]:
    """Train ``epochs`` epochs in ``precision`` in a subprocess; the figures of its metrics.csv, or why it failed."""
    with tempfile.TemporaryDirectory(prefix="lesionseg-probe-") as tmp:
        sets = [
            *overrides,
            "train.seed=0",
            f"train.epochs={epochs}",
            "train.time_budget_min=null",
            f"train.precision={precision}",
            "train.postprocess=false",
            f"train.out_dir={tmp}",
            "train.name=probe",
        ]
        if device:
            sets.append(f"train.device={device}")
        cmd = [sys.executable, "-m", "lesionseg", "train", "--config", str(config), "--no-progress", "--set", *sets]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "detail": f"after {timeout_s:.0f} s"}
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            return {"status": "failed", "returncode": proc.returncode, "detail": tail[0][-300:]}
        metrics = Path(tmp) / "probe" / "metrics.csv"
        with open(metrics, newline="") as f:
            rows = list(csv.DictReader(f))
    epoch_s = [float(r["epoch_seconds"]) for r in rows]
    dice = [float(r["val_dice_per_image"]) for r in rows if r.get("val_dice_per_image")]
    return {
        "status": "ok",
        "epoch_seconds": [round(s, 2) for s in epoch_s],
        "first_epoch_s": round(epoch_s[0], 2),
        "steady_epoch_s": round(statistics.median(epoch_s[1:] or epoch_s), 2),
        "best_val_dice_per_image": round(max(dice), 4) if dice else None,
        "last_val_dice_per_image": round(dice[-1], 4) if dice else None,
        "wall_s": round(seconds, 1),
    }


def decide(fp32: dict[str, Any], bf16: dict[str, Any]) -> tuple[str, str]:
    """The precision the two trial records support, and why (see the module docstring)."""
    if fp32.get("status") != "ok":
        return "fp32", f"the fp32 trial did not finish ({fp32.get('status')}), so bf16 cannot be compared"
    if bf16.get("status") == "timeout":
        return "fp32", f"the bf16 trial was stopped {bf16.get('detail', '')}, over twice fp32's time"
    if bf16.get("status") != "ok":
        return "fp32", f"the bf16 trial did not finish ({bf16.get('status')}: {bf16.get('detail', '')})"
    speedup = fp32["steady_epoch_s"] / max(bf16["steady_epoch_s"], 1e-9)
    if speedup < MIN_SPEEDUP:
        return "fp32", f"bf16 is {speedup:.2f}x fp32's speed, under the {MIN_SPEEDUP}x required"
    d32, d16 = fp32["best_val_dice_per_image"], bf16["best_val_dice_per_image"]
    if d32 is None or d16 is None:
        return "fp32", "no validation Dice to compare"
    if d16 < d32 - DICE_TOLERANCE:
        return "fp32", f"bf16 is {speedup:.2f}x faster but its val Dice {d16:.4f} < fp32's {d32:.4f} - {DICE_TOLERANCE}"
    return "bf16", f"bf16 is {speedup:.2f}x faster and its validation Dice {d16:.4f} vs fp32's {d32:.4f}"


def record_path(record_dir: str | Path, label: str, device: str | None = None) -> Path:
    return Path(record_dir) / machine_key(device or "cpu") / f"{label}.json"


def resolve_precision(
    record_dir: str | Path,
    label: str,
    config: str | Path,
    overrides: Sequence[str] = (),
    device: str | None = None,
    epochs: int = PROBE_EPOCHS,
    timeout_s: float = 3600.0,
) -> str:
    """``"bf16"`` or ``"fp32"`` for training ``label`` (model config ``config``) on this machine.

    Args:
        record_dir: folder of the decisions (one subfolder per machine key, one JSON per model label).
        label: the model's label in the benchmark.
        config: the model's training config.
        overrides: ``key=value`` settings of the real run (data root, split, threads, epochs...); the trials add
            their own seed, length, precision and output folder after them.
        device: the run's ``train.device`` (None = CPU/auto).
        epochs: trial length.
        timeout_s: a trial running longer than this counts as failed.

    Returns:
        The recorded decision when one exists for this machine and label, else the decision of two new trials,
        recorded first.
    """
    dev = device or "cpu"
    path = record_path(record_dir, label, dev)
    if path.is_file():
        try:
            return str(json.loads(path.read_text())["precision"])
        except (ValueError, KeyError) as err:
            _logger.warning("unreadable precision record %s (%s); probing again", path, err)
    decision: dict[str, Any] = {
        "label": label,
        "config": str(config),
        "machine_key": machine_key(dev),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "criteria": {"min_speedup": MIN_SPEEDUP, "dice_tolerance": DICE_TOLERANCE, "epochs": epochs},
        # The trials train on the data of the benchmark that first asked (the decision then serves every benchmark).
        "data": apply_overrides({}, list(overrides)).get("data", {}).get("root"),
    }
    if not native_bf16(dev):
        decision.update(precision="fp32", reason="no native bf16 on this device (bf16 would be emulated, slower)")
    else:
        # Skip the epoch count and budget of the real run; the trial sets its own.
        keep = [o for o in overrides if not o.startswith(("train.epochs=", "train.time_budget_min=", "train.seed="))]
        _logger.info("probing fp32 vs bf16 for %s (%d epochs each)", label, epochs)
        decision["fp32"] = _trial(Path(config), keep, "fp32", epochs, device, timeout_s)
        # A bf16 trial that takes over twice as long as fp32's cannot be adopted; stop it there (on one model a
        # bf16 kernel without native support made its trial 5x slower).
        limit = timeout_s
        if decision["fp32"].get("status") == "ok":
            limit = min(timeout_s, 2.0 * decision["fp32"]["wall_s"] + 30.0)
        decision["bf16"] = _trial(Path(config), keep, "bf16", epochs, device, limit)
        decision["precision"], decision["reason"] = decide(decision["fp32"], decision["bf16"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(decision, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    _logger.info("%s: %s (%s)", label, decision["precision"], decision["reason"])
    return str(decision["precision"])
