"""Training curves from a run's metrics CSV."""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["plot_training_curves"]


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Plot loss, validation Dice and learning rate per epoch into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{metrics_csv}: no rows to plot")

    def col(name: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in rows:
            if r.get(name) not in (None, ""):
                xs.append(float(r["epoch"]))
                ys.append(float(r[name]))
        return xs, ys

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(*col("train_loss"), label="train")
    if any(r.get("val_loss") for r in rows):
        axes[0].plot(*col("val_loss"), label="val")
    axes[0].set_title("loss")
    axes[0].legend()
    for key, label in (("val_dice_per_image", "per-image mean"), ("val_dice_global", "global (all pixels)")):
        axes[1].plot(*col(key), label=label)
    axes[1].set_title("validation Dice")
    axes[1].legend()
    axes[2].plot(*col("lr"))
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return Path(out_png)
