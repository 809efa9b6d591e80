"""Figures of a benchmark: overlays of several models on the same cases, feature maps, score distributions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .overlay import overlay_mask  # noqa: E402

__all__ = ["plot_feature_maps", "plot_feature_panels", "plot_overlay_grid", "plot_score_distributions"]


def plot_overlay_grid(
    cases: Sequence[tuple[str, np.ndarray, np.ndarray]],
    predictions: Mapping[str, Sequence[np.ndarray]],
    out_png: str | Path,
    cell_inches: float = 2.2,
    dpi: int = 110,
) -> Path:
    """One row per case: the image with its ground truth, then each model's prediction (truth outlined in green).

    Args:
        cases: ``(id, image HxWx3 uint8, truth HxW {0,1})`` per row.
        predictions: model label -> one HxW {0,1} mask per case, in the order of ``cases``.
        out_png: output file; a ``.jpg`` name writes a JPEG (quality 85), a tenth of the PNG's size for these
            photographs (what a committed figure of 20 models needs).
        cell_inches: size of one panel.
        dpi: resolution.
    """
    if not cases:
        raise ValueError("no cases to plot")
    for label, masks in predictions.items():
        if len(masks) != len(cases):
            raise ValueError(f"{label}: {len(masks)} predictions for {len(cases)} cases")
    cols = 1 + len(predictions)
    fig, axes = plt.subplots(len(cases), cols, figsize=(cell_inches * cols, cell_inches * len(cases)), squeeze=False)
    for r, (case_id, image, truth) in enumerate(cases):
        axes[r][0].imshow(overlay_mask(image, truth, color=(0, 255, 0), alpha=0.25))
        axes[r][0].set_ylabel(case_id, fontsize=8)
        for c, (label, masks) in enumerate(predictions.items(), start=1):
            axes[r][c].imshow(overlay_mask(image, masks[r], truth=truth))
            if r == 0:
                axes[r][c].set_title(label, fontsize=8)
        if r == 0:
            axes[r][0].set_title("ground truth", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out_png = Path(out_png)
    extra = {"pil_kwargs": {"quality": 85}} if out_png.suffix.lower() in (".jpg", ".jpeg") else {}
    fig.savefig(out_png, dpi=dpi, **extra)
    plt.close(fig)
    return out_png


def plot_feature_maps(
    image: np.ndarray,
    features: torch.Tensor,
    out_png: str | Path,
    title: str = "",
    channels: int = 7,
) -> Path:
    """The input, the channel-mean of |activation|, and the ``channels`` most active channels of one feature map.

    Args:
        image: HxWx3 uint8 input as the model saw it.
        features: (C, h, w) activations of one image at the chosen layer.
        out_png: output file.
        title: figure title (model and layer).
        channels: how many single channels to show, by decreasing mean |activation|.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be (C, h, w), got {tuple(features.shape)}")
    f = features.detach().float().cpu()
    energy = f.abs().mean(dim=(1, 2))
    top = torch.argsort(energy, descending=True)[: min(channels, f.shape[0])]
    panels = [("mean |activation|", f.abs().mean(0).numpy())]
    panels += [(f"channel {int(i)}", f[i].numpy()) for i in top]
    return plot_feature_panels(image, panels, out_png, title)


def plot_feature_panels(
    image: np.ndarray, panels: Sequence[tuple[str, np.ndarray]], out_png: str | Path, title: str = ""
) -> Path:
    """The input, then one (h, w) map per panel (e.g. stored feature maps), in one row.

    Args:
        image: HxWx3 uint8 input as the model saw it.
        panels: ``(caption, (h, w) array)`` per panel.
        out_png: output file (a ``.jpg`` name writes a JPEG, quality 85).
        title: figure title (model and layer).
    """
    panels = [("input", image), *panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.1 * len(panels), 2.4), squeeze=False)
    for ax, (name, data) in zip(axes[0], panels):
        ax.imshow(data, cmap=None if data.ndim == 3 else "viridis")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    extra = {"pil_kwargs": {"quality": 85}} if out_png.suffix.lower() in (".jpg", ".jpeg") else {}
    fig.savefig(out_png, dpi=110, **extra)
    plt.close(fig)
    return out_png


def plot_score_distributions(scores: Mapping[str, Sequence[float]], out_png: str | Path, ylabel: str) -> Path:
    """Box plot of per-image scores per model (all runs pooled), models in the given order."""
    if not scores:
        raise ValueError("no scores to plot")
    labels = list(scores)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(labels) + 1.5), 3.6))
    ax.boxplot([np.asarray(scores[k], dtype=float) for k in labels], showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
