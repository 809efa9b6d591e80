"""Epochs for a converged benchmark, from the training curves of a pilot benchmark's kept runs.

Usage:
    python tools/pilot_epochs.py docs/results/kvasir_seg [--margin 1.5]

For every kept run (``runs/<label>/seed<s>/train_metrics.csv``) it fits a saturating curve to the validation per-image
Dice, ``v(e) = a - b exp(-e / tau)`` (least squares), takes the residual standard deviation ``sigma`` as the noise of
one validation, and the epoch where the fitted curve comes within that noise of its plateau,
``e* = tau ln(b / sigma)``. A fit whose plateau ``a`` is above 1 has found no plateau (the curve is still in its
straight part) and is not used. A model's epochs are then the smallest multiple of 10 at or above

    margin * max(e* over its usable runs) / 0.8

so that the plateau comes before the last fifth of the epochs, and at least twice the pilot's epochs (every pilot run
whose best epoch fell in its last fifth was stopped early). ``margin`` (default 1.5) allows for the pilot's schedule:
its cosine learning rate had fallen to its floor by the last epoch, which flattens a curve earlier than the same
schedule stretched over more epochs will. A model with no usable run gets four times the pilot's epochs.

Prints one row per run and the chosen epochs per model. An estimate to start from: the benchmark's report then says
per run whether the best validation epoch did come before the last fifth.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit

__all__ = ["fit_plateau", "main", "model_epochs"]


def _curve(e: np.ndarray, a: float, b: float, tau: float) -> np.ndarray:
    return a - b * np.exp(-e / tau)


def fit_plateau(values: list[float]) -> dict[str, float]:
    """Fits ``a - b exp(-e / tau)`` to validation scores of epochs 1..n; returns a, b, tau, sigma and e*."""
    v = np.asarray(values, dtype=float)
    e = np.arange(1, len(v) + 1, dtype=float)
    (a, b, tau), _ = curve_fit(
        _curve, e, v, p0=[v.max() + 0.05, 0.4, len(v) / 2], bounds=([0, 0, 0.5], [1.5, 3, 2000]), maxfev=20000
    )
    sigma = float(np.std(v - _curve(e, a, b, tau))) or 1e-6
    e_star = tau * math.log(b / sigma) if b > sigma else 0.0
    return {"a": float(a), "b": float(b), "tau": float(tau), "sigma": sigma, "e_star": e_star}


def model_epochs(fits: list[dict[str, float]], pilot_epochs: int, margin: float) -> int:
    """The epochs a model gets from its runs' fits (see the module docstring)."""
    usable = [f["e_star"] for f in fits if f["a"] <= 1.0]
    if not usable:
        return 10 * math.ceil(4 * pilot_epochs / 10)
    return 10 * math.ceil(max(margin * max(usable) / 0.8, 2 * pilot_epochs) / 10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results_dir", help="a benchmark's results folder (runs/<label>/seed<s>/train_metrics.csv)")
    p.add_argument("--margin", type=float, default=1.5, help="factor on the latest plateau epoch (default 1.5)")
    args = p.parse_args(argv)
    runs = sorted(Path(args.results_dir).glob("runs/*/*/train_metrics.csv"))
    if not runs:
        print(f"pilot_epochs: no runs/<label>/<seed>/train_metrics.csv under {args.results_dir}", file=sys.stderr)
        return 2
    by_model: dict[str, list[dict[str, float]]] = {}
    pilot: dict[str, int] = {}
    print(f"{'model':14s} {'run':6s} {'epochs':>6s} {'best':>4s} {'a':>5s} {'tau':>6s} {'sigma':>6s} {'e*':>6s}  used")
    for path in runs:
        with open(path, newline="") as f:
            values = [float(r["val_dice_per_image"]) for r in csv.DictReader(f)]
        label, run = path.parent.parent.name, path.parent.name
        best = json.loads((path.parent / "metrics.json").read_text()).get("best_epoch")
        fit = fit_plateau(values)
        by_model.setdefault(label, []).append(fit)
        pilot[label] = max(pilot.get(label, 0), len(values))
        print(
            f"{label:14s} {run:6s} {len(values):6d} {best!s:>4s} {fit['a']:5.2f} {fit['tau']:6.1f} "
            f"{fit['sigma']:6.3f} {fit['e_star']:6.1f}  {'yes' if fit['a'] <= 1.0 else 'no (no plateau)'}"
        )
    print(f"\nepochs = 10 * ceil(max({args.margin} * max e* / 0.8, 2 * pilot epochs) / 10)")
    for label, fits in by_model.items():
        print(f"  {label:14s} pilot {pilot[label]:3d} -> {model_epochs(fits, pilot[label], args.margin)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
