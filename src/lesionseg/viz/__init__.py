"""Visualisation: training curves, overlays."""

from __future__ import annotations

from .curves import plot_training_curves
from .overlay import overlay_mask

__all__ = ["overlay_mask", "plot_training_curves"]
