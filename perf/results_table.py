"""Print a markdown table of evaluated runs: both reductions, the training length, the model size.

Usage: python perf/results_table.py RUN_DIR [RUN_DIR ...] [--eval eval_test] [--metrics dice,iou,...] [--paired]

Each RUN_DIR is a ``lesionseg train`` folder whose ``<eval>/metrics.json`` was written by
``lesionseg evaluate --model RUN_DIR/best --out RUN_DIR/<eval>``. Rows keep the order given. ``--paired`` adds
the two-sided Wilcoxon signed-rank p-value of each run's per-image Dice against the first run's, on the same images.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from lesionseg.engine import load_model
from lesionseg.metrics import METRICS
from lesionseg.metrics.stats import paired_wilcoxon
from lesionseg.models.complexity import count_parameters

NAMES = {m.name: m.short for m in METRICS if m.score is not None}


def row_of(run_dir: Path, eval_name: str, metrics: list[str]) -> list[str]:
    payload = json.loads((run_dir / eval_name / "metrics.json").read_text())
    res = payload["results"]
    with open(run_dir / "metrics.csv", newline="") as f:
        log = list(csv.DictReader(f))
    model, best = load_model(run_dir / "best")
    minutes = float(log[-1]["elapsed_seconds"]) / 60 if log else float("nan")
    cells = [run_dir.name, payload["model"], f"{count_parameters(model) / 1e6:.3f}"]
    cells += [f"{100 * res['per_image'][m]:.2f}" for m in metrics]
    cells += [f"{100 * res['global'][m]:.2f}" for m in metrics]
    cells += [f"{res['per_image'].get('hd95', float('nan')):.2f}", f"{len(log)}", f"{best.epoch}", f"{minutes:.1f}"]
    return cells


def per_image_dice(run_dir: Path, eval_name: str) -> dict[str, float]:
    with open(run_dir / eval_name / "per_image.csv", newline="") as f:
        return {row["id"]: float(row["dice"]) for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--eval", default="eval_test", help="evaluation folder inside each run (default eval_test)")
    parser.add_argument("--metrics", default="dice,iou,accuracy,sensitivity,specificity")
    parser.add_argument("--paired", action="store_true", help="Wilcoxon p of per-image Dice against the first run")
    args = parser.parse_args()
    metrics = args.metrics.split(",")
    head = ["Run", "Model", "Params (M)"]
    head += [f"{NAMES[m]} (img)" for m in metrics] + [f"{NAMES[m]} (glob)" for m in metrics]
    head += ["HD95 (img, px)", "Epochs", "Best epoch", "Train min"]
    if args.paired:
        head.append(f"p vs {args.runs[0].name}")
        ref = per_image_dice(args.runs[0], args.eval)
    print("| " + " | ".join(head) + " |")
    print("|---|---|" + "---:|" * (len(head) - 2))
    for i, run in enumerate(args.runs):
        cells = row_of(run, args.eval, metrics)
        if args.paired:
            other = per_image_dice(run, args.eval)
            ids = sorted(set(ref) & set(other))
            cells.append(
                "—" if i == 0 else f"{paired_wilcoxon([ref[k] for k in ids], [other[k] for k in ids]).p_value:.3g}"
            )
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
