"""The GPU plan: one command that checks CUDA, times train steps, and trains the next runs of the GPU benchmarks.

A GPU is lent at times, for one command of at most 10 minutes with nothing reachable from it: no internet, no
``../shared/data``, and at most 8 files coming back. So the work is split in two:

``prepare`` (here, before a GPU call) picks the next unfinished runs of ``configs/benchmark/ph2_paper.yaml`` and
``configs/benchmark/kvasir_seg_converged.yaml`` and writes into ``gpu_carry/`` (ignored by git) the data they need,
exact and small enough to travel (64 MiB with the repository): PH2 resized to each model's training size and stored
losslessly (what :func:`lesionseg.data.base.resize_pair` gives from the originals, so training and evaluation see the
same arrays; every copy is read back and compared), Kvasir-SEG as its original JPEG images with the masks thresholded
into PNGs; and ``gpu_carry/manifest.json``, the benchmark commands to run. It prints the device command.

``run`` (on the GPU machine, with the machine's own python and torch, ``PYTHONPATH=src``) then, within ``--budget-s``:

1. checks the imports the package needs and prints what is missing;
2. checks CUDA: fp32, bf16 and fp16 (GradScaler) train steps finite and equal in loss within tolerance,
   channels-last, ``cudnn.benchmark`` and deterministic mode (bit-identical repeats); says "no CUDA" and checks
   nothing on a machine without it;
3. times a train step of UNeXt against the reference code (``third_party_ref/UNeXt-pytorch/archs.py``, fetched from
   jeya-maria-jose/UNeXt-pytorch and never committed; its timm/mmcv/torchvision imports are stubbed while it loads;
   skipped with a message when absent) and of the five methods at paper size, fp32 / fp32 channels-last / bf16 /
   bf16 channels-last on the GPU, and fp32 on the CPU for scale;
4. runs ``lesionseg benchmark --config C --device cuda --jobs N --only ...`` for the manifest's benchmarks, starting
   only models whose runs are estimated (from step 3) to finish in the time left, and stops it when the time is up:
   finished runs are exported whole (``metrics.json`` is written last), unfinished ones stay resumable in ``out_dir``;
5. packs into ``$OUT/gpu_plan_results.tar.gz`` (paths relative to the repository root) the files the runs added under
   each benchmark's ``results_dir`` (runs, splits, complexity) and ``docs/results/precision/``, the checks and timings
   as ``docs/results/gpu_plan/<date>-<machine>.json``, and, up to ``--resume-mib``, the working folders of runs that
   did not finish and are small enough to come back, so the next call resumes them; ``$OUT/gpu_plan.json`` is a copy
   of the checks and timings.

Launch::

    # here
    PYTHONPATH=src python tools/gpu_plan.py prepare          # prints the device command and its carry list
    # the device tool, with the carry list printed by prepare, e.g.
    #   command: PYTHONUNBUFFERED=1 PYTHONPATH=src python3 tools/gpu_plan.py run --out $OUT
    #   carry:   ["gpu_carry", "third_party_ref", "runs/benchmark/kvasir_seg_converged"]    timeout_s: 600
    # here, with the folder the device tool names (files_at)
    tar xzf FILES_AT/gpu_plan_results.tar.gz -C .
    lesionseg benchmark --config configs/benchmark/ph2_paper.yaml --report-only   # and kvasir_seg_converged.yaml
    git add docs/results && git commit

Rehearsal on a CPU (tests/tools/test_gpu_plan.py): ``run --device cpu --rehearse --manifest M --out DIR``, tiny sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "REQUIRED_MODULES",
    "copy_kvasir",
    "copy_ph2_resized",
    "cuda_checks",
    "load_reference_unext",
    "main",
    "missing_modules",
    "pack_results",
    "time_models",
]

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ("configs/benchmark/ph2_paper.yaml", "configs/benchmark/kvasir_seg_converged.yaml")
REFERENCE = "third_party_ref/UNeXt-pytorch/archs.py"
CARRY = "gpu_carry"
ARCHIVE = "gpu_plan_results.tar.gz"
#: Modules the package and the benchmark import (module name, what it is for).
REQUIRED_MODULES = (
    ("numpy", "arrays"),
    ("cv2", "image reading and resizing (opencv-python-headless)"),
    ("PIL", "image files (pillow)"),
    ("safetensors", "checkpoints"),
    ("yaml", "configs (pyyaml)"),
    ("scipy", "the report's statistics"),
    ("matplotlib", "the report's figures"),
    ("tqdm", "progress bars"),
)
#: The models timed against each other: label in ph2_paper.yaml -> registered name.
TIMED = ("unext", "eamnet", "mgmfnet", "efp", "sc_unext", "cmssm_unet")
SETTINGS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def _say(*parts: object) -> None:
    print("[gpu_plan]", *parts, flush=True)


# --------------------------------------------------------------------------------------------------------- imports
def missing_modules(modules: Sequence[tuple[str, str]] = REQUIRED_MODULES) -> list[str]:
    """``"name (what for)"`` of each module that cannot be imported."""
    return [f"{name} ({why})" for name, why in modules if importlib.util.find_spec(name) is None]


# ------------------------------------------------------------------------------------------------------ CUDA checks
def _losses(
    name: str, device: Any, precision: str, channels_last: bool, steps: int, batch: int, size: int
) -> list[float]:
    """Losses of ``steps`` AdamW steps from a fixed seed on a fixed batch (same weights and data in every call)."""
    import torch

    from lesionseg.losses import BCEDiceLoss
    from lesionseg.models import create_model

    torch.manual_seed(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(name).to(device=device, memory_format=memory).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device).contiguous(memory_format=memory)
    y = torch.zeros(batch, 1, size, size)
    y[..., size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = 1.0
    y = y.to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = BCEDiceLoss()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    out = []
    for _ in range(steps):
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        out.append(float(loss.detach()))
    return out


def _close(a: list[float], b: list[float], rtol_first: float, rtol_last: float) -> bool:
    finite = all(math.isfinite(v) for v in a + b)
    return finite and abs(a[0] - b[0]) <= rtol_first * abs(b[0]) and abs(a[-1] - b[-1]) <= rtol_last * abs(b[-1])


def cuda_checks(device: str, model: str = "unext", steps: int = 5, batch: int = 4, size: int = 256) -> dict[str, Any]:
    """Trains ``model`` for ``steps`` steps under each setting and compares the losses with fp32's.

    Tolerances (relative, first step / last step): bf16 2% / 10%, fp16 1% / 10%, channels-last and cudnn.benchmark
    1e-3 / 2% (cuDNN may pick other algorithms, TF32 included), deterministic mode: two runs bit-identical.

    Returns:
        ``{"cuda": False, "message": ...}`` without CUDA; else the device, each setting's losses and verdict.
    """
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        why = "not asked for (--device cpu)" if not device.startswith("cuda") else "torch sees no CUDA device"
        message = (
            f"no CUDA: {why}; torch {torch.__version__} built with CUDA {torch.version.cuda or 'none'}; "
            "CUDA checks skipped"
        )
        _say(message)
        return {"cuda": False, "message": message}
    dev = torch.device(device)
    torch.cuda.set_device(dev)
    result: dict[str, Any] = {
        "cuda": True,
        "gpu": torch.cuda.get_device_name(dev),
        "torch": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "model": model,
        "setting": f"{steps} AdamW steps, batch {batch}, {size}x{size}, BCE + Dice",
        "checks": {},
    }
    checks = result["checks"]
    torch.backends.cudnn.benchmark = False
    base = _losses(model, dev, "fp32", False, steps, batch, size)
    checks["fp32"] = {"losses": base, "ok": all(math.isfinite(v) for v in base)}
    for name, precision, cl, first, last in (
        ("bf16", "bf16", False, 2e-2, 0.1),
        ("fp16_gradscaler", "fp16", False, 1e-2, 0.1),
        ("channels_last", "fp32", True, 1e-3, 2e-2),
    ):
        try:
            losses = _losses(model, dev, precision, cl, steps, batch, size)
            checks[name] = {"losses": losses, "ok": _close(losses, base, first, last)}
        except RuntimeError as err:
            checks[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    torch.backends.cudnn.benchmark = True
    try:
        losses = _losses(model, dev, "fp32", False, steps, batch, size)
        checks["cudnn_benchmark"] = {"losses": losses, "ok": _close(losses, base, 1e-3, 2e-2)}
    except RuntimeError as err:
        checks["cudnn_benchmark"] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)
    try:
        runs = [_losses(model, dev, "fp32", False, steps, batch, size) for _ in range(2)]
        checks["deterministic"] = {"losses": runs[0], "repeat": runs[1], "ok": runs[0] == runs[1]}
    except RuntimeError as err:  # an op without a deterministic implementation names itself here
        checks["deterministic"] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    result["ok"] = all(c["ok"] for c in checks.values())
    for name, c in checks.items():
        detail = c.get("error") or " ".join(f"{v:.5f}" for v in c["losses"])
        _say(f"CUDA check {name:16s} {'ok ' if c['ok'] else 'FAILED'}  {detail}")
    return result


# ---------------------------------------------------------------------------------------------- reference UNeXt
class _DropPath:
    """Stand-in for timm's DropPath (stochastic depth): drops whole samples' residual branches while training."""

    def __new__(cls, drop_prob: float = 0.0) -> Any:
        import torch
        from torch import nn

        class DropPath(nn.Module):
            def __init__(self, p: float) -> None:
                super().__init__()
                self.p = p

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                if not self.training or self.p == 0.0:
                    return x
                keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) >= self.p
                return x * keep.to(x.dtype) / (1.0 - self.p)

        return DropPath(drop_prob)


def _unavailable(name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} is stubbed by tools/gpu_plan.py: the reference UNeXt does not need it")

    return call


def load_reference_unext(path: str | Path, size: int = 256) -> Any:
    """The reference ``UNext`` (jeya-maria-jose/UNeXt-pytorch ``archs.py``) with its unused imports stubbed.

    ``archs.py`` imports torchvision, matplotlib, timm, mmcv and the repository's ``utils`` at the top; the network
    uses only timm's ``DropPath``, ``to_2tuple`` and ``trunc_normal_``. Those three are given here, the rest are
    empty modules, installed in ``sys.modules`` only while the file executes.

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reference UNeXt (fetch jeya-maria-jose/UNeXt-pytorch's archs.py there)")
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = _DropPath  # type: ignore[attr-defined]
    layers.to_2tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # type: ignore[attr-defined]
    layers.trunc_normal_ = torch.nn.init.trunc_normal_  # type: ignore[attr-defined]
    stubs: dict[str, types.ModuleType] = {"timm.models.layers": layers}
    for name in ("torchvision", "torchvision.transforms", "torchvision.utils", "timm", "timm.models", "mmcv",
                 "mmcv.cnn", "utils", "matplotlib", "matplotlib.pyplot"):  # fmt: skip
        stubs[name] = types.ModuleType(name)
    stubs["utils"].__all__ = []  # type: ignore[attr-defined]
    stubs["torchvision.utils"].save_image = _unavailable("torchvision.utils.save_image")  # type: ignore[attr-defined]
    stubs["mmcv.cnn"].ConvModule = _unavailable("mmcv.cnn.ConvModule")  # type: ignore[attr-defined]
    stubs["timm.models"].layers = layers  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location("unext_reference", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return module.UNext(num_classes=1, input_channels=3, img_size=size)


# ------------------------------------------------------------------------------------------------------ timings
def _recipes(config: str) -> dict[str, dict[str, Any]]:
    """label -> model name, kwargs, input size, batch, epochs, train/val images and precision of a benchmark."""
    from lesionseg.benchmark import benchmark_splits, load_benchmark_config
    from lesionseg.benchmark.runner import run_overrides
    from lesionseg.data.splits import load_split
    from lesionseg.engine import load_config

    cfg = load_benchmark_config(config)
    split_path = benchmark_splits(cfg)[0]
    split = load_split(split_path)
    out = {}
    for m in cfg.models:
        rc = load_config(m.config, run_overrides(cfg, m, 0, split_path))
        out[m.name] = {
            "model": rc.model.name,
            "kwargs": dict(rc.model.kwargs),
            "size": tuple(rc.data.image_size),
            "batch": rc.data.batch_size,
            "epochs": m.epochs,
            "train": len(split.train),
            "val": len(split.val),
        }
    return out


def time_models(
    device: str,
    recipes: dict[str, dict[str, Any]],
    reference: str | Path | None,
    steps: int,
    cpu_steps: int,
    cpu_batch: int,
    deadline: float,
) -> list[dict[str, Any]]:
    """One row per model (and the reference UNeXt): params, its recipe's size and batch, ms per train step."""
    import torch

    from lesionseg.losses import BCEDiceLoss
    from lesionseg.models import create_model
    from lesionseg.models.complexity import count_parameters, measure_train_step

    loss = BCEDiceLoss()
    builders: list[tuple[str, str, Callable[[], Any], dict[str, Any]]] = []
    for label in TIMED:
        if label not in recipes:
            continue
        r = recipes[label]
        builders.append((label, "lesionseg", lambda r=r: create_model(r["model"], **r["kwargs"]), r))
        if label == "unext":
            if reference and Path(reference).is_file():
                ref = Path(reference)
                builders.append(("unext", "reference", lambda r=r, ref=ref: load_reference_unext(ref, r["size"][0]), r))
            else:
                _say(f"reference UNeXt not found at {reference}: its timing is skipped (carry third_party_ref/)")
    gpu = device.startswith("cuda") and torch.cuda.is_available()
    rows = []
    for label, source, build, r in builders:
        if time.monotonic() > deadline:
            _say(f"timing budget spent: {label} ({source}) and the models after it are not timed")
            break
        row: dict[str, Any] = {"label": label, "source": source, "size": list(r["size"]), "batch": r["batch"]}
        try:
            row["params"] = count_parameters(build())
            if gpu:
                for precision, cl in SETTINGS:
                    key = f"gpu_{precision}{'_cl' if cl else ''}_ms"
                    torch.manual_seed(0)
                    row[key] = round(
                        measure_train_step(build(), r["size"], r["batch"], device, precision, cl, steps, 3, loss), 3
                    )
                torch.cuda.empty_cache()
            if cpu_steps > 0:
                torch.manual_seed(0)
                ms = measure_train_step(build(), r["size"], cpu_batch, "cpu", "fp32", False, cpu_steps, 1, loss)
                row["cpu_batch"] = cpu_batch
                row["cpu_fp32_ms"] = round(ms, 3)
                row["cpu_threads"] = torch.get_num_threads()
        except (RuntimeError, ValueError) as err:
            row["error"] = f"{type(err).__name__}: {err}"
        rows.append(row)
        _say("timed", json.dumps(row))
    return rows


def _speed_table(rows: list[dict[str, Any]]) -> list[str]:
    cols = [f"gpu_{p}{'_cl' if cl else ''}_ms" for p, cl in SETTINGS] + ["cpu_fp32_ms"]
    head = f"{'model':12s} {'source':9s} {'size':>9s} {'batch':>5s} {'params':>9s} "
    lines = [head + " ".join(f"{c:>14s}" for c in cols)]
    for r in rows:
        size = "x".join(map(str, r["size"]))
        cells = " ".join(f"{r[c]:14.2f}" if c in r else f"{'—':>14s}" for c in cols)
        lines.append(f"{r['label']:12s} {r['source']:9s} {size:>9s} {r['batch']:5d} {r.get('params', 0):9d} {cells}")
    ours = next((r for r in rows if r["label"] == "unext" and r["source"] == "lesionseg"), None)
    ref = next((r for r in rows if r["source"] == "reference"), None)
    if ours and ref and "gpu_fp32_ms" in ours and "gpu_fp32_ms" in ref:
        lines.append(
            f"UNeXt train step, reference / lesionseg: fp32 {ref['gpu_fp32_ms'] / ours['gpu_fp32_ms']:.2f}x, "
            f"reference fp32 / lesionseg bf16 + channels-last {ref['gpu_fp32_ms'] / ours['gpu_bf16_cl_ms']:.2f}x "
            "(goals: >= 1.3x and >= 2x)"
        )
    return lines


# ---------------------------------------------------------------------------------------------------- benchmarks
def _estimate_s(recipe: dict[str, Any], row: dict[str, Any] | None) -> float | None:
    """Seconds one run should take alone on the GPU: its training steps at the timed fp32 step, plus validation
    (a forward is about a third of a step) and 0.5 s an epoch for the loader and checkpoints, plus a minute for
    start-up and export. None without a timing."""
    if row is None or "gpu_fp32_ms" not in row:
        return None
    step = row["gpu_fp32_ms"] / 1000.0
    per_epoch = (recipe["train"] // recipe["batch"]) * step + recipe["val"] / recipe["batch"] * step / 3 + 0.5
    return 60.0 + recipe["epochs"] * per_epoch


def _snapshot(folders: Sequence[Path]) -> dict[str, tuple[int, int]]:
    files = {}
    for folder in folders:
        if folder.is_dir():
            for p in folder.rglob("*"):
                if p.is_file():
                    st = p.stat()
                    files[str(p)] = (st.st_size, st.st_mtime_ns)
    return files


def _run_benchmark(cmd: list[str], timeout: float, log: Path) -> str:
    """Runs one benchmark command in its own process group (this repository's ``src`` first on its path); stops the
    group when ``timeout`` runs out."""
    _say("$", " ".join(cmd), f"(at most {timeout:.0f} s)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=max(1.0, timeout))
            return f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return "stopped: time is up (finished runs are kept whole; the others stay resumable in out_dir)"


def pack_results(
    archive: Path,
    root: Path,
    before: dict[str, tuple[int, int]],
    folders: Sequence[Path],
    extra: dict[str, bytes],
    resumable: Sequence[Path] = (),
    resume_mib: float = 12.0,
) -> dict[str, Any]:
    """Writes ``archive`` (tar.gz, paths relative to ``root``, the repository root on the GPU) with the files under
    ``folders`` that are new or changed since ``before`` (reports and figures aside: they are rebuilt with
    ``--report-only``), the ``extra`` files, and whole run folders of ``resumable`` while their total stays under
    ``resume_mib``.

    Returns:
        What went in: ``results`` and ``resume`` file lists, and the run folders left out for their size.
    """
    rebuilt = {"report.md", "results.csv", "dice_per_image.png", "overlays.jpg", "feature_maps.jpg"}
    now = _snapshot(folders)
    added = sorted(
        p for p, key in now.items() if before.get(p) != key and Path(p).name not in rebuilt and _whole(Path(p), folders)
    )
    packed: dict[str, Any] = {"results": [], "resume": [], "resume_left_out": []}
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for p in added:
            rel = Path(p).resolve().relative_to(root)
            tar.add(p, arcname=str(rel))
            packed["results"].append(str(rel))
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, _bytes_io(data))
            packed["results"].append(name)
        budget = resume_mib * 2**20
        for folder in sorted(resumable, key=lambda f: sum(p.stat().st_size for p in f.rglob("*") if p.is_file())):
            files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
            size = sum(p.stat().st_size for p in files)
            rel = folder.resolve().relative_to(root)
            if size > budget:
                packed["resume_left_out"].append(f"{rel} ({size / 2**20:.1f} MiB)")
                continue
            budget -= size
            for p in files:
                tar.add(p, arcname=str(p.resolve().relative_to(root)))
            packed["resume"].append(str(rel))
    return packed


def _whole(path: Path, folders: Sequence[Path]) -> bool:
    """False for a file of a run's results folder (``<results>/runs/<label>/<run key>/...``) without its
    ``metrics.json``: an export stopped half-way (``metrics.json`` is written last)."""
    for folder in folders:
        try:
            parts = path.relative_to(folder).parts
        except ValueError:
            continue
        if len(parts) > 3 and parts[0] == "runs":
            return (folder / Path(*parts[:3]) / "metrics.json").is_file()
    return True


def _bytes_io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def _unfinished_run_dirs(out_dir: Path) -> list[Path]:
    dirs = []
    for last in sorted(out_dir.glob("runs/*/*/last.json")):
        if not json.loads(last.read_text()).get("finished", False):
            dirs.append(last.parent)
    return dirs


def _machine() -> str:
    import torch

    from lesionseg.runtime import machine_description

    return machine_description(torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]


def cmd_run(args: argparse.Namespace) -> int:
    start = time.monotonic()
    deadline = start + args.budget_s
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, read at its first use
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    missing = missing_modules()
    report["missing_modules"] = missing
    _say("missing imports:", ", ".join(missing) if missing else "none")
    if any(m.startswith(("numpy", "cv2", "safetensors", "yaml")) for m in missing):
        _say("the package cannot train without these; checks and timings only")
    import torch

    report["machine"] = _machine()
    report["python"] = platform.python_version()
    report["torch"] = torch.__version__
    report["cpu_threads"] = torch.get_num_threads()
    _say("machine:", report["machine"])

    manifest = json.loads(Path(args.manifest).read_text()) if Path(args.manifest).is_file() else {"jobs": []}
    if not manifest["jobs"]:
        _say(f"no benchmark jobs: {args.manifest} is missing or empty (run `tools/gpu_plan.py prepare` here first)")

    # 2. CUDA checks
    if args.rehearse:
        report["cuda_checks"] = cuda_checks(args.device, "unet_small", steps=2, batch=1, size=32)
    else:
        report["cuda_checks"] = cuda_checks(args.device)

    # 3. timings
    recipes: dict[str, dict[str, Any]] = {}
    for config in dict.fromkeys([*args.time_config, *(j["config"] for j in manifest["jobs"])]):
        recipes[config] = _recipes(config)
    timed = dict(recipes.get(args.time_config[0], {})) if args.time_config else {}
    if args.rehearse:
        timed = {k: {**v, "size": (32, 32), "batch": 1} for k, v in timed.items() if k in ("unext", "sc_unext")}
    timing_deadline = min(deadline, time.monotonic() + args.timing_s)
    rows = time_models(
        args.device, timed, args.reference, 1 if args.rehearse else 10, args.cpu_steps, args.cpu_batch, timing_deadline
    )
    report["timings"] = {
        "setting": "ms per train step (forward, BCE + Dice, backward, AdamW), median of the timed steps; each "
        "model at its ph2_paper recipe's input size and batch on the GPU, batch cpu_batch on the CPU",
        "rows": rows,
    }
    for line in _speed_table(rows):
        _say(line)

    # 4. benchmarks
    log = out / "benchmark.log"
    results_dirs, out_dirs = [], []
    from lesionseg.benchmark import load_benchmark_config
    from lesionseg.benchmark.results import METRICS_FILE

    jobs_done = []
    for job in manifest["jobs"]:
        cfg = load_benchmark_config(job["config"], job.get("set", []))
        results_dirs += [REPO / cfg.results_dir, REPO / cfg.precision_records]
        out_dirs.append(REPO / cfg.out_dir)
    results_dirs = list(dict.fromkeys(results_dirs))
    before = _snapshot(results_dirs)
    by_label = {r["label"]: r for r in rows if r["source"] == "lesionseg"}
    for job in manifest["jobs"]:
        left = deadline - time.monotonic() - args.pack_s
        cfg = load_benchmark_config(job["config"], job.get("set", []))
        recipe = recipes[job["config"]]
        todo = [
            m.name
            for m in cfg.models
            if m.name in job["only"]
            and any(
                not (REPO / cfg.results_dir / "runs" / m.name / cfg.run_key(r) / METRICS_FILE).is_file()
                for r in range(cfg.num_runs)
            )
        ]
        chosen = []
        for label in todo:
            est = _estimate_s(recipe[label], by_label.get(label))
            if est is not None and est > left and not job.get("resumable", False):
                _say(f"{job['config']}: {label} not started: estimated {est:.0f} s a run, {left:.0f} s left")
                continue
            chosen.append(label)
            _say(f"{job['config']}: {label}: estimated {'?' if est is None else f'{est:.0f}'} s a run alone")
        if not chosen or left < 30:
            jobs_done.append({"config": job["config"], "started": [], "state": "nothing started"})
            continue
        cmd = [sys.executable, "-m", "lesionseg", "benchmark", "--config", job["config"], "--device", args.device]
        cmd += ["--jobs", str(args.jobs or job.get("jobs", 4)), "--no-progress"]
        cmd += ["--set", *job.get("set", [])] if job.get("set") else []
        for label in chosen:
            cmd += ["--only", label]
        state = _run_benchmark(cmd, left, log)
        _say(job["config"], state)
        jobs_done.append({"config": job["config"], "started": chosen, "state": state})
    report["benchmarks"] = jobs_done

    # 5. pack
    report["wall_s"] = round(time.monotonic() - start, 1)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    record = f"docs/results/gpu_plan/{stamp}-{_slug(report['machine'])}.json"
    resumable = [d for o in out_dirs for d in _unfinished_run_dirs(o)]
    payload = (json.dumps(report, indent=1) + "\n").encode()
    packed = pack_results(
        out / ARCHIVE,
        Path(args.root).resolve(),
        before,
        results_dirs,
        {record: payload},
        resumable,
        args.resume_mib,
    )
    report["packed"] = packed
    (out / "gpu_plan.json").write_text(json.dumps(report, indent=1) + "\n")
    runs = sorted({str(Path(p).parent) for p in packed["results"] if Path(p).name == "metrics.json"})
    _say(f"finished runs packed: {len(runs)}", *runs)
    _say(f"resumable run folders packed: {packed['resume'] or 'none'}; left out: {packed['resume_left_out'] or 'none'}")
    _say(f"wrote {out / ARCHIVE} and {out / 'gpu_plan.json'} after {time.monotonic() - start:.0f} s")
    return 0


# ------------------------------------------------------------------------------------------------------ prepare
def copy_ph2_resized(root: str | Path, size: tuple[int, int], dst: str | Path) -> int:
    """Writes PH2 resized to ``size`` = (H, W), in the PH2 layout, losslessly (PNG or lossless WebP, the smaller),
    and checks that reading it back gives exactly the arrays the originals give; returns the bytes written.

    Raises:
        ValueError: a copy reads back different from its original.
    """
    import cv2

    from lesionseg.data import find_cases
    from lesionseg.data.base import load_case, resize_pair

    dst = Path(dst)
    images = dst / "PH2Dataset" / "PH2 Dataset images"
    total = 0
    originals = {}
    for case in find_cases(root, "ph2"):
        image, mask = resize_pair(*load_case(case), size)
        originals[case.id] = (image, mask)
        folder = images / case.id
        (folder / f"{case.id}_Dermoscopic_Image").mkdir(parents=True, exist_ok=True)
        (folder / f"{case.id}_lesion").mkdir(parents=True, exist_ok=True)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        encoded = {".png": cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()}
        webp = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
        if np.array_equal(cv2.imdecode(np.frombuffer(webp, np.uint8), cv2.IMREAD_COLOR), bgr):
            encoded[".webp"] = webp
        ext, data = min(encoded.items(), key=lambda kv: len(kv[1]))
        (folder / f"{case.id}_Dermoscopic_Image" / f"{case.id}{ext}").write_bytes(data)
        mask_png = cv2.imencode(".png", mask.astype(np.uint8) * 255)[1].tobytes()
        (folder / f"{case.id}_lesion" / f"{case.id}_lesion.png").write_bytes(mask_png)
        total += len(data) + len(mask_png)
    for name in ("PH2_dataset.txt", "PH2_dataset.csv"):
        for base in (Path(root), Path(root) / "PH2Dataset"):
            if (base / name).is_file():
                shutil.copy2(base / name, dst / "PH2Dataset" / name)
                total += (base / name).stat().st_size
    for case in find_cases(dst, "ph2"):
        image, mask = resize_pair(*load_case(case), size)
        want = originals.pop(case.id)
        if not (np.array_equal(image, want[0]) and np.array_equal(mask, want[1])):
            raise ValueError(f"{case.image}: the copy reads back different from the original {case.id}")
    if originals:
        raise ValueError(f"{dst}: cases missing from the copy: {sorted(originals)[:5]}")
    return total


def copy_kvasir(root: str | Path, dst: str | Path) -> int:
    """Copies Kvasir-SEG: the JPEG images as they are, the masks thresholded into PNGs (what the layout reads from
    the JPEG masks, bit for bit: checked); returns the bytes written."""
    import cv2

    from lesionseg.data import find_cases
    from lesionseg.data.base import load_case

    dst = Path(dst) / "Kvasir-SEG"
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(parents=True, exist_ok=True)
    total = 0
    masks = {}
    for case in find_cases(root, "kvasir_seg"):
        _, mask = load_case(case)
        masks[case.id] = mask
        shutil.copy2(case.image, dst / "images" / case.image.name)
        png = cv2.imencode(".png", mask.astype(np.uint8) * 255)[1].tobytes()
        (dst / "masks" / f"{case.id}.png").write_bytes(png)
        total += case.image.stat().st_size + len(png)
    for case in find_cases(dst.parent, "kvasir_seg"):
        if not np.array_equal(load_case(case)[1], masks.pop(case.id)):
            raise ValueError(f"{case.mask}: the copied mask reads back different from the original")
    if masks:
        raise ValueError(f"{dst}: cases missing from the copy: {sorted(masks)[:5]}")
    return total


def _tree_mib() -> float:
    """MiB of what the device tool sends without carry: tracked and untracked files that git does not ignore."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((REPO / n.decode()).stat().st_size for n in names if n and (REPO / n.decode()).is_file()) / 2**20


def _folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20 if folder.is_dir() else 0.0


def cmd_prepare(args: argparse.Namespace) -> int:
    from lesionseg.benchmark import load_benchmark_config
    from lesionseg.benchmark.results import METRICS_FILE

    carry = REPO / args.carry
    if carry.exists():
        shutil.rmtree(carry)
    carry.mkdir(parents=True)
    budget = args.max_mib - _tree_mib() - _folder_mib(REPO / "third_party_ref")
    _say(f"{budget:.1f} MiB left for data and resumable runs (of {args.max_mib} MiB in all)")
    # groups of (benchmark, data copy): models with unfinished runs, in the order the configs list them
    groups: list[dict[str, Any]] = []
    for config in args.benchmarks:
        cfg = load_benchmark_config(config)
        recipes = _recipes(config)
        for m in cfg.models:
            missing = [
                r
                for r in range(cfg.num_runs)
                if not (REPO / cfg.results_dir / "runs" / m.name / cfg.run_key(r) / METRICS_FILE).is_file()
            ]
            if not missing:
                continue
            layout = cfg.data.get("layout")
            key = f"{layout}_{'x'.join(map(str, recipes[m.name]['size']))}" if layout == "ph2" else str(layout)
            group = next((g for g in groups if g["config"] == config and g["key"] == key), None)
            if group is None:
                group = {"config": config, "key": key, "cfg": cfg, "size": recipes[m.name]["size"], "only": []}
                groups.append(group)
            group["only"].append(m.name)
    jobs, carried = [], []
    for g in groups:
        cfg, dst = g["cfg"], carry / g["key"]
        resume = REPO / cfg.out_dir
        resume_mib = _folder_mib(resume) if g["cfg"].data.get("layout") != "ph2" else 0.0
        if g["cfg"].data.get("layout") == "ph2":
            written = copy_ph2_resized(cfg.data["root"], tuple(g["size"]), dst)
        elif g["cfg"].data.get("layout") == "kvasir_seg":
            written = copy_kvasir(cfg.data["root"], dst)
        else:
            _say(f"{g['config']}: no copy for layout {g['cfg'].data.get('layout')}; skipped")
            continue
        need = written / 2**20 + resume_mib
        if need > budget:
            shutil.rmtree(dst)
            _say(f"{g['config']} {g['key']}: {need:.1f} MiB does not fit in {budget:.1f} MiB; left for a later call")
            continue
        budget -= need
        job = {
            "config": g["config"],
            "only": g["only"],
            "set": [f"data.root={args.carry}/{g['key']}"],
            "jobs": 6 if g["cfg"].data.get("layout") != "ph2" else 4,
            # CPU-size models' working folders are small enough to come back and resume in the next call
            "resumable": g["cfg"].data.get("layout") != "ph2",
        }
        jobs.append(job)
        if job["resumable"] and resume.is_dir():
            carried.append(str(resume.relative_to(REPO)))
        _say(f"{g['config']} {g['key']}: {written / 2**20:.1f} MiB of data for {', '.join(g['only'])}")
    (carry / "manifest.json").write_text(json.dumps({"jobs": jobs}, indent=1) + "\n")
    carry_list = [args.carry] + (["third_party_ref"] if (REPO / "third_party_ref").is_dir() else []) + carried
    if not (REPO / REFERENCE).is_file():
        _say(f"no {REFERENCE}: the UNeXt reference timing will be skipped (fetch jeya-maria-jose/UNeXt-pytorch)")
    _say("device command: PYTHONUNBUFFERED=1 PYTHONPATH=src python3 tools/gpu_plan.py run --out $OUT")
    _say(f"carry: {json.dumps(carry_list)}   timeout_s: 600")
    return 0


# ------------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="here: write gpu_carry/ (data and manifest) for the next GPU call")
    prep.add_argument("--carry", default=CARRY, help="folder to write (relative to the repository root)")
    prep.add_argument("--max-mib", type=float, default=62.0, help="what may travel in all (the device tool: 64 MiB)")
    prep.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS))
    run = sub.add_parser("run", help="on the GPU machine: checks, timings, benchmark runs, one archive in --out")
    run.add_argument("--out", required=True, help="folder for the archive and the JSON ($OUT on the device)")
    run.add_argument("--device", default="cuda", help="cuda (default) or cpu (rehearsal)")
    run.add_argument("--budget-s", type=float, default=520.0, help="wall-clock budget of the whole plan (s)")
    run.add_argument("--jobs", type=int, default=0, help="runs at once (0 = the manifest's per benchmark)")
    run.add_argument("--manifest", default=f"{CARRY}/manifest.json", help="written by `prepare`")
    run.add_argument("--reference", default=REFERENCE, help="the reference UNeXt archs.py")
    run.add_argument("--time-config", nargs="*", default=[BENCHMARKS[0]], help="benchmark whose recipes are timed")
    run.add_argument("--timing-s", type=float, default=150.0, help="at most this long for the timings (s)")
    run.add_argument("--cpu-steps", type=int, default=2, help="timed CPU steps per model (0 = no CPU timing)")
    run.add_argument("--cpu-batch", type=int, default=2, help="CPU batch (the GPU uses each recipe's batch)")
    run.add_argument("--pack-s", type=float, default=25.0, help="time kept for packing at the end (s)")
    run.add_argument("--resume-mib", type=float, default=12.0, help="unfinished run folders packed, at most (MiB)")
    run.add_argument("--rehearse", action="store_true", help="tiny checks and timings (a CPU rehearsal)")
    run.add_argument("--root", default=str(REPO), help="paths in the archive are relative to this folder")
    args = p.parse_args(argv)
    if args.command == "run":
        args.out = str(Path(args.out).resolve())
        args.root = str(Path(args.root).resolve())
    os.chdir(REPO)  # the benchmark configs name their folders relative to the repository root
    return cmd_prepare(args) if args.command == "prepare" else cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
