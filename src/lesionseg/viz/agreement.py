"""Bland-Altman figure: one panel per measurement, difference against the mean of the two measurements."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_bland_altman"]


def plot_bland_altman(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, Any]],
    out_png: str | Path,
    title: str | None = None,
    cols: int = 4,
    dpi: int = 110,
) -> Path:
    """Draw Bland-Altman plots and save them as a PNG.

    Args:
        panels: ``(label, mean of the pair per image, difference per image, summary)`` per measurement; the summary is
            a :class:`~lesionseg.metrics.agreement.BlandAltman` (its bias and limits are drawn as lines, its
            ``relative`` flag names the y axis).
        out_png: output file.
        title: figure title.
        cols: panels per row.
        dpi: resolution.
    """
    if not panels:
        raise ValueError("no measurements to plot")
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.0 * rows), squeeze=False)
    for ax, (label, mean, diff, summary) in zip(axes.flat, panels):
        ax.scatter(mean, diff, s=10, alpha=0.7, color="tab:blue", edgecolors="none")
        ax.axhline(0, color="0.6", lw=0.8)
        if not math.isnan(summary.bias):
            ax.axhline(summary.bias, color="tab:red", lw=1.2, label=f"bias {summary.bias:+.2f}")
        if not math.isnan(summary.sd):
            for y in (summary.lower, summary.upper):
                ax.axhline(y, color="tab:red", lw=0.9, ls="--")
            limits = f"95% LoA {summary.lower:+.1f}, {summary.upper:+.1f}"
            ax.plot([], [], color="tab:red", ls="--", lw=0.9, label=limits)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("mean of predicted and truth", fontsize=8)
        ax.set_ylabel("(pred - truth) / truth (%)" if summary.relative else "pred - truth (points)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="best", frameon=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
