"""Time a training step of our UNeXt, MALUNet and EGE-UNet against their authors' code, side by side in one run.

Usage:
    git clone https://github.com/jeya-maria-jose/UNeXt-pytorch third_party_ref/UNeXt-pytorch
    git clone https://github.com/JCruan519/MALUNet third_party_ref/MALUNet
    git clone https://github.com/JCruan519/EGE-UNet third_party_ref/EGE-UNet
    python perf/train_step_vs_reference.py [MODEL ...] [--threads 1 2] [--rounds 7] [--settings fp32 cl ...]

``third_party_ref/`` is git-ignored: the authors' code is read from there and never becomes part of ours. Their
files import timm, einops, mmcv, torchvision and matplotlib for a few helpers or not at all; the script stands in
for those modules (timm's ``trunc_normal_``, ``DropPath`` and ``to_2tuple``, the rest empty) only while it loads
the files, so none of them need to be installed.

A step is forward + loss + backward + AdamW on one fixed random batch (8 x 3 x 256 x 256 by default). Each model
uses its own code's loss form: ours BCE + Dice on logits (EGE-UNet with its deep supervision 1.0, 0.1 .. 0.5 on
the side outputs), the references BCE + Dice on the probabilities they return (EGE-UNet's ``GT_BceDiceLoss``
weights). Settings: ``fp32``; ``cl`` (channels-last model and input); ``bf16`` (CPU bf16 autocast); ``cl+bf16``.
Every (model, threads, setting) cell runs in its own subprocess (a crash in a bf16 kernel ends that cell, not the
run) that builds both networks from the same seed, warms each up, then times ``--rounds`` rounds, each one step of
ours and one of the reference in alternating order, and prints the medians and the ratio ours / reference (lower
is faster), of wall-clock time and of the process's CPU time (all its threads). Interleaving keeps the ratios fair
when other work shares the machine, the absolute wall times are not; under heavy load the CPU-time ratio is the
steadier one (with several threads it also counts the threads' spin-waiting). ``vs fp32`` divides our CPU time
by the reference's in its default setting (the cell ``fp32`` of the same thread count, measured in its own
subprocess, so not interleaved): the speed-up a user of the reference code gets by switching to ours in that
setting.
The finite column says whether each side's outputs and loss stayed finite over the cell's steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["REFERENCES", "load_reference", "main"]

#: model -> (file in the reference folder, class name, constructor keyword arguments, our registered name)
REFERENCES: dict[str, tuple[str, str, dict, str]] = {
    "unext": ("UNeXt-pytorch/archs.py", "UNext", {"num_classes": 1, "input_channels": 3}, "unext"),
    "malunet": ("MALUNet/models/malunet.py", "MALUNet", {"num_classes": 1, "input_channels": 3}, "malunet"),
    "egeunet": ("EGE-UNet/models/egeunet.py", "EGEUNet", {"num_classes": 1, "input_channels": 3}, "egeunet"),
}
SETTINGS = ("fp32", "cl", "bf16", "cl+bf16")
#: EGE-UNet's deep-supervision weights, deepest side output first, then the main output's weight.
EGE_SIDE_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5)


class _DropPath(nn.Module):
    """Stand-in for timm's DropPath (the references build it only with a drop rate of 0, as identity)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if drop_prob:
            raise ValueError("the benchmark builds the references without stochastic depth")

    def forward(self, x: Tensor) -> Tensor:
        return x


def _stand_in_modules() -> dict[str, types.ModuleType]:
    """Modules the reference files import, reduced to the names they use."""
    layers = types.ModuleType("timm.models.layers")
    layers.trunc_normal_ = lambda t, mean=0.0, std=1.0, a=-2.0, b=2.0: nn.init.trunc_normal_(t, mean, std, a, b)
    layers.DropPath = _DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    timm = types.ModuleType("timm")
    timm_models = types.ModuleType("timm.models")
    timm.models, timm_models.layers = timm_models, layers
    mmcv, mmcv_cnn = types.ModuleType("mmcv"), types.ModuleType("mmcv.cnn")
    mmcv_cnn.ConvModule = None
    tv, tv_transforms, tv_utils = (
        types.ModuleType(n) for n in ("torchvision", "torchvision.transforms", "torchvision.utils")
    )
    tv_utils.save_image = None
    tv.transforms, tv.utils = tv_transforms, tv_utils
    mpl, mpl_pyplot = types.ModuleType("matplotlib"), types.ModuleType("matplotlib.pyplot")
    einops = types.ModuleType("einops")
    einops.rearrange = None
    return {
        "timm": timm,
        "timm.models": timm_models,
        "timm.models.layers": layers,
        "mmcv": mmcv,
        "mmcv.cnn": mmcv_cnn,
        "torchvision": tv,
        "torchvision.transforms": tv_transforms,
        "torchvision.utils": tv_utils,
        "matplotlib": mpl,
        "matplotlib.pyplot": mpl_pyplot,
        "einops": einops,
        "utils": types.ModuleType("utils"),
    }


def load_reference(ref_dir: Path, model: str) -> type[nn.Module]:
    """The authors' network class of ``model``, loaded from its file under ``ref_dir`` with stand-in imports."""
    rel, cls_name, _, _ = REFERENCES[model]
    path = ref_dir / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: clone the reference code first (see this script's docstring)")
    stand_ins = _stand_in_modules()
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        spec = importlib.util.spec_from_file_location(f"reference_{model}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return getattr(module, cls_name)


def _prob_bce_dice(prob: Tensor, target: Tensor) -> Tensor:
    """The references' BceDiceLoss: BCE on probabilities + (1 - soft Dice), computed in float32.

    Non-finite probabilities (a reference's bf16 NaN) become 0.5 so that the step still runs and is timed; the cell
    reports the non-finite output.
    """
    prob = prob.float().nan_to_num(0.5)
    inter = (prob * target).flatten(1).sum(1)
    dice = (2 * inter + 1) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    return F.binary_cross_entropy(prob, target) + (1 - dice).mean()


def _tensors(out: object) -> list[Tensor]:
    """The tensors of a network's output (a tensor, our ModelOutput, or nested tuples)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return [out.logits, *out.aux_logits]


def _reference_loss(model: str) -> Callable[[object, Tensor], Tensor]:
    if model == "unext":  # UNeXt's code returns logits; its BCEDiceLoss is BCE with logits + Dice of the sigmoid
        return lambda logits, target: _prob_bce_dice(torch.sigmoid(logits.float()), target)
    if model == "malunet":
        return _prob_bce_dice

    def gt_bce_dice(out: object, target: Tensor) -> Tensor:
        sides, main = out  # side outputs already upsampled to the input size, deepest first
        loss = _prob_bce_dice(main, target)
        return loss + sum(w * _prob_bce_dice(s, target) for w, s in zip(EGE_SIDE_WEIGHTS, sides))

    return gt_bce_dice


def _our_loss(model: str) -> tuple[Callable[[object, Tensor], Tensor], bool]:
    from lesionseg.losses import BCEDiceLoss, DeepSupervisionLoss

    if model == "egeunet":
        loss = DeepSupervisionLoss(BCEDiceLoss(), (1.0, *EGE_SIDE_WEIGHTS))
        return (lambda out, y: loss(out.logits, out.aux_logits, y)), True
    plain = BCEDiceLoss()
    return (lambda out, y: plain(out, y)), False


def _cell(ref_dir: Path, model: str, setting: str, threads: int, batch: int, size: int, rounds: int) -> dict:
    """Times one (model, setting, threads) cell in this process; returns its figures."""
    from lesionseg.models import create_model

    torch.set_num_threads(threads)
    channels_last, bf16 = setting.startswith("cl"), setting.endswith("bf16")
    ref_cls = load_reference(ref_dir, model)
    _, _, ref_kwargs, ours_name = REFERENCES[model]
    torch.manual_seed(0)
    ours = create_model(ours_name)
    torch.manual_seed(0)
    ref = ref_cls(**ref_kwargs)
    our_loss, aux = _our_loss(model)
    losses = {"ours": our_loss, "reference": _reference_loss(model)}
    nets = {"ours": ours, "reference": ref}
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for net in nets.values():
        net.to(memory_format=fmt).train()
    opts = {k: torch.optim.AdamW(n.parameters(), 1e-3) for k, n in nets.items()}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).contiguous(memory_format=fmt)
    y = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float()
    finite = {k: True for k in nets}

    def step(key: str) -> tuple[float, float]:
        net, opt = nets[key], opts[key]
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x, return_aux=True) if key == "ours" and aux else net(x)
        loss = losses[key](out, y)
        finite[key] &= all(bool(torch.isfinite(t).all()) for t in _tensors(out))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed = (time.perf_counter() - start, time.process_time() - start_cpu)
        finite[key] &= bool(torch.isfinite(loss))
        return elapsed

    for key in nets:  # warm-up: first-call allocations and oneDNN primitive creation
        step(key)
        step(key)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in nets}
    for r in range(rounds):
        for key in ("ours", "reference") if r % 2 == 0 else ("reference", "ours"):
            times[key].append(step(key))
    res: dict = {"finite": finite, "params": {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}}
    for clock, i in (("wall", 0), ("cpu", 1)):
        res[clock] = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(REFERENCES), help=f"any of {', '.join(REFERENCES)}")
    parser.add_argument("--reference-dir", type=Path, default=Path("third_party_ref"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cell", nargs=3, metavar=("MODEL", "SETTING", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        model, setting, threads = args.cell
        res = _cell(args.reference_dir, model, setting, int(threads), args.batch, args.size, args.rounds)
        print(json.dumps(res))
        return
    unknown = sorted(set(args.models) - set(REFERENCES))
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(REFERENCES)}")
    for model in args.models:  # fail early, before any timing, when a reference is missing
        load_reference(args.reference_dir, model)
    print(
        f"train step (forward + loss + backward + AdamW), batch {args.batch} at {args.size}x{args.size}, "
        f"torch {torch.__version__}, medians of {args.rounds} interleaved rounds; ratio = ours / reference"
    )
    print(
        f"{'model':8s} {'thr':>3s} {'setting':8s} {'ours s':>7s} {'ref s':>7s} {'ratio':>6s}   "
        f"{'ours cpu':>8s} {'ref cpu':>8s} {'ratio':>6s} {'vs fp32':>7s}  finite(ours/ref)  load"
    )
    for model in args.models:
        for threads in args.threads:
            ref_fp32_cpu = math.nan  # the reference's own default: fp32, contiguous
            for setting in args.settings:
                cmd = [sys.executable, __file__, "--cell", model, setting, str(threads)]
                cmd += ["--reference-dir", str(args.reference_dir), "--batch", str(args.batch)]
                cmd += ["--size", str(args.size), "--rounds", str(args.rounds)]
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                load = os.getloadavg()[0]
                if proc.returncode != 0:
                    why = f"signal {-proc.returncode}" if proc.returncode < 0 else proc.stderr.strip().splitlines()[-1]
                    print(f"{model:8s} {threads:3d} {setting:8s} crashed: {why}  load {load:.1f}", flush=True)
                    continue
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                if setting == args.settings[0] and threads == args.threads[0]:
                    n_ours, n_ref = res["params"]["ours"], res["params"]["reference"]
                    print(f"  {model}: parameters ours {n_ours:,}, reference {n_ref:,}")
                if setting == "fp32":
                    ref_fp32_cpu = res["cpu"]["reference"]
                cells = []
                for clock, width in (("wall", 7), ("cpu", 8)):
                    ours_s, ref_s = res[clock]["ours"], res[clock]["reference"]
                    ratio = ours_s / ref_s if ref_s else math.nan
                    cells.append(f"{ours_s:{width}.3f} {ref_s:{width}.3f} {ratio:6.2f}")
                vs_fp32 = res["cpu"]["ours"] / ref_fp32_cpu
                fin = f"{res['finite']['ours']!s:>5s}/{res['finite']['reference']!s:5s}"
                head = f"{model:8s} {threads:3d} {setting:8s}"
                print(f"{head} {cells[0]}   {cells[1]} {vs_fp32:7.2f}  {fin:16s}  {load:.1f}", flush=True)


if __name__ == "__main__":
    main()
