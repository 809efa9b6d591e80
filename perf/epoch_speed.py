"""First-epoch and steady-epoch seconds of real training runs, without and with the on-disk case cache.

Usage: python perf/epoch_speed.py [MODEL_OR_CONFIG ...] [--dataset ph2|kvasir_seg] [--root PATH]
       [--epochs 3] [--precisions fp32,bf16] [--threads 1] [--cache-dir DIR]

Each model (a registered name, found as ``configs/<name>_ph2.yaml`` or the ``configs/*_ph2.yaml`` that trains it, or a
YAML config path) trains with the real :class:`~lesionseg.engine.Trainer` and its own recipe on the dataset's stored
split, channels-last, for ``--epochs`` epochs in each setting, back to back so that the settings share the machine's
load: (a) no disk cache, every case decoded in the first epoch (the source files may sit in the OS page cache);
(b) the disk cache warm (filled once beforehand, untimed per run). Per precision the table gives the Trainer's setup
seconds (model, data scan and the pre-epoch screening that reads every train/val case), the first epoch's and the
median later epoch's ``epoch_seconds`` from ``metrics.csv`` (training + validation). Runs, and the cache unless
``--cache-dir`` is given, live in temporary folders removed at the end.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from lesionseg.engine import Trainer
from lesionseg.engine.config import load_config
from lesionseg.runtime import cpu_flags, cpu_name

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("sc_unext", "unext", "efp_s", "unet_small")
DATASETS = {"ph2": "ph2", "kvasir_seg": "kvasir_seg"}  # dataset -> layout (and stored split of the same name)


def cpu_description() -> str:
    """CPU model, logical CPUs and whether the bf16 instructions (AVX512-BF16, AMX) are there."""
    flags = cpu_flags()
    marks = ", ".join(f"{f}: {'yes' if f in flags else 'no'}" for f in ("avx512_bf16", "amx_bf16", "amx_tile"))
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs; {marks}"


def resolve_config(arg: str) -> tuple[str, Path | None]:
    """``(label, config path)`` for a model name or a config path; no config = the library defaults."""
    path = Path(arg)
    if path.suffix in (".yaml", ".yml"):
        return path.stem, path
    own = REPO / "configs" / f"{arg}_ph2.yaml"
    if own.is_file():
        return arg, own
    for candidate in sorted((REPO / "configs").glob("*_ph2.yaml")):
        data = yaml.safe_load(candidate.read_text()) or {}
        if (data.get("model") or {}).get("name") == arg:
            return arg, candidate
    return arg, None


def overrides(args: argparse.Namespace, model: str, config: Path | None, precision: str) -> list[str]:
    layout = DATASETS[args.dataset]
    sets = [
        f"data.root={args.root}",
        f"data.layout={layout}",
        f"data.split={layout}",
        f"train.epochs={args.epochs}",
        "train.time_budget_min=null",
        f"train.threads={args.threads}",
        f"train.precision={precision}",
        "train.channels_last=true",
        "train.postprocess=false",  # chosen after the last epoch; not part of any epoch's time
        "train.device=cpu",
    ]
    return sets if config is not None else [f"model.name={model}", *sets]


def epoch_seconds(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(row["epoch_seconds"]) for row in csv.DictReader(f)]


def timed_run(sets: list[str], config: Path | None, out: Path, name: str, cache_dir: str) -> tuple[float, list[float]]:
    cfg = load_config(config, [*sets, f"data.cache_dir={cache_dir}", f"train.out_dir={out}", f"train.name={name}"])
    start = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    setup = time.perf_counter() - start
    trainer.fit()
    return setup, epoch_seconds(trainer.run_dir)


def fill_cache(sets: list[str], config: Path | None, out: Path, cache_dir: str) -> tuple[float, int]:
    """Decode and store every train/val case at the run's working size; seconds taken and cases."""
    cfg = load_config(config, [*sets, f"data.cache_dir={cache_dir}", f"train.out_dir={out}", "train.name=fill"])
    start = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    for dataset in (trainer.train_set, trainer.val_set):
        for i in range(len(dataset)):
            dataset.load_resized(i)
    return time.perf_counter() - start, len(trainer.train_set) + len(trainer.val_set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS), help="model names or config paths")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ph2")
    parser.add_argument("--root", help="data root (default ../shared/data/<dataset> next to the repository)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2 for a steady epoch)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (train.threads)")
    parser.add_argument("--cache-dir", help="disk cache folder to use and keep (default: a temporary one)")
    args = parser.parse_args()
    args.root = str(Path(args.root or REPO.parent / "shared" / "data" / args.dataset).resolve())
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]

    with tempfile.TemporaryDirectory(prefix="epoch_speed_") as tmp:
        cache_dir = args.cache_dir or str(Path(tmp) / "cache")
        runs = Path(tmp) / "runs"
        print(f"machine: {cpu_description()}")
        print(f"torch {torch.__version__}, train.threads={args.threads}, load average {os.getloadavg()[0]:.1f}")
        print(
            f"data: {args.root} ({args.dataset} split), {args.epochs} epochs per run, channels-last, cache {cache_dir}"
        )
        header = (
            f"{'model':12s} {'precision':9s} | {'no disk cache (cold)':^23s} | {'disk cache (warm)':^23s} | "
            f"{'saved':>6s}\n{'':12s} {'':9s} | {'setup':>7s}{'epoch 1':>8s}{'steady':>8s} | "
            f"{'setup':>7s}{'epoch 1':>8s}{'steady':>8s} | {'s/run':>6s}"
        )
        rows, filled = [], set()
        for arg in args.models:
            label, config = resolve_config(arg)
            for precision in precisions:
                sets = overrides(args, label, config, precision)
                cfg = load_config(config, sets)
                key = (tuple(cfg.data.image_size), cfg.data.in_channels)
                if key not in filled:
                    seconds, n = fill_cache(sets, config, runs, cache_dir)
                    filled.add(key)
                    print(f"cache filled for {key[0][0]}x{key[0][1]}x{key[1]}: {n} cases in {seconds:.1f} s")
                cells, totals = [], []
                for setting, where in (("plain", ""), ("cached", cache_dir)):
                    setup, epochs = timed_run(sets, config, runs, f"{label}_{precision}_{setting}", where)
                    steady = statistics.median(epochs[1:]) if len(epochs) > 1 else float("nan")
                    cells.append(f"{setup:7.1f}{epochs[0]:8.1f}{steady:8.1f}")
                    totals.append(setup + sum(epochs))
                rows.append(
                    f"{label:12s} {precision + '+CL':9s} | {cells[0]} | {cells[1]} | {totals[0] - totals[1]:6.1f}"
                )
                print(rows[-1], flush=True)
        print(
            f"\nseconds; steady = median of epochs 2..{args.epochs}; saved = (setup + all epochs) without - with cache"
        )
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
        print(header)
        print("\n".join(rows))


if __name__ == "__main__":
    main()
