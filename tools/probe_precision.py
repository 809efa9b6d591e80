"""Probe fp32 vs bf16 for every model of a benchmark config on this machine, and propose fixed epoch counts.

Usage:
    python tools/probe_precision.py configs/benchmark/ph2.yaml [--jobs 2] [--only LABEL ...] [--minutes 10]

Runs :func:`lesionseg.benchmark.precision.resolve_precision` for each model (two short trainings per model, each
in a subprocess, one torch thread), ``--jobs`` models at a time, and records every decision under
``docs/results/precision/<machine key>/`` (shared by the benchmarks). Then prints, per model, the steady epoch
time in the chosen precision and the epoch count that fits ``--minutes`` of training (one torch thread, ``--jobs``
runs sharing the machine), which is how the benchmark configs' ``epochs:`` were chosen.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from lesionseg.benchmark.precision import record_path, resolve_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes the epoch counts target")
    parser.add_argument("--epochs", type=int, default=4, help="trial length")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bench = yaml.safe_load(Path(args.config).read_text())
    record_dir = Path(bench.get("precision_records") or "docs/results/precision")
    data = bench["data"]
    split = (bench.get("protocol") or {}).get("split")
    base = [f"data.root={data['root']}", "train.threads=1"]
    if data.get("layout"):
        base.append(f"data.layout={data['layout']}")
    if split:
        base.append(f"data.split={split}")
    models = [m for m in bench["models"] if not args.only or m["label"] in args.only]

    def one(m: dict) -> str:
        return resolve_precision(record_dir, m["label"], m["config"], base, epochs=args.epochs)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, models))
    print(
        f"{'model':18s} {'choice':6s} {'fp32 s/ep':>9s} {'bf16 s/ep':>9s} {'x':>5s} {'Dice32':>7s} {'Dice16':>7s} "
        f"{'epochs':>6s}  reason"
    )
    for m in models:
        decision = json.loads(record_path(record_dir, m["label"]).read_text())
        f32, b16 = decision.get("fp32", {}), decision.get("bf16", {})
        chosen = (b16 if decision["precision"] == "bf16" else f32).get("steady_epoch_s")
        epochs = max(1, math.floor(args.minutes * 60 / chosen)) if chosen else None
        s32, s16 = f32.get("steady_epoch_s", math.nan), b16.get("steady_epoch_s", math.nan)
        d32, d16 = f32.get("best_val_dice_per_image") or math.nan, b16.get("best_val_dice_per_image") or math.nan
        print(
            f"{m['label']:18s} {decision['precision']:6s} {s32:9.2f} {s16:9.2f} {s32 / s16:5.2f} {d32:7.4f} {d16:7.4f} "
            f"{epochs!s:>6s}  {decision['reason']}"
        )


if __name__ == "__main__":
    main()
