"""Visualisation: training curves, overlays, benchmark figures."""

from __future__ import annotations

from .curves import plot_training_curves
from .figures import plot_feature_maps, plot_overlay_grid, plot_score_distributions
from .overlay import overlay_mask

__all__ = [
    "overlay_mask",
    "plot_feature_maps",
    "plot_overlay_grid",
    "plot_score_distributions",
    "plot_training_curves",
]
