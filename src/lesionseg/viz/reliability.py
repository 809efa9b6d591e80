"""Reliability diagram: predicted foreground probability against observed foreground frequency, per bin."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..metrics.calibration import ReliabilityDiagram

__all__ = ["plot_reliability_diagram"]


def plot_reliability_diagram(
    diagrams: Mapping[str, ReliabilityDiagram], out_png: str | Path, title: str = "", dpi: int = 110
) -> Path:
    """One panel: each diagram's bins as points (mean probability, foreground fraction), the diagonal, and below
    it the share of pixels per bin on a log scale (the background bin holds most of them).

    Args:
        diagrams: label (e.g. ``"T = 1 (ECE 0.031)"``) -> :class:`~lesionseg.metrics.calibration.ReliabilityDiagram`.
        out_png: output file.
        title: figure title.
        dpi: resolution.
    """
    if not diagrams:
        raise ValueError("no reliability diagrams to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.8, 5.6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True, constrained_layout=True
    )
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    width = None
    for i, (label, diagram) in enumerate(diagrams.items()):
        seen = diagram.counts > 0
        top.plot(diagram.confidence[seen], diagram.frequency[seen], marker="o", markersize=4, label=label)
        centres = (diagram.edges[:-1] + diagram.edges[1:]) / 2
        width = (diagram.edges[1] - diagram.edges[0]) / (len(diagrams) + 1)
        share = diagram.counts / max(int(diagram.counts.sum()), 1)
        bottom.bar(centres + (i - (len(diagrams) - 1) / 2) * width, np.where(seen, share, np.nan), width=width)
    top.set_ylabel("observed foreground fraction")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    if title:
        top.set_title(title, fontsize=9)
    bottom.set_yscale("log")
    bottom.set_ylabel("share of pixels")
    bottom.set_xlabel("predicted foreground probability (bin mean)")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png
