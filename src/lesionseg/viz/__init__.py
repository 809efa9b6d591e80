"""Visualisation: training curves, overlays, benchmark figures, Bland-Altman plots, reliability diagrams.

The figure modules import matplotlib; they load on first use so that ``overlay_mask`` (OpenCV only) keeps
``lesionseg predict`` quick to start.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "overlay_mask",
    "plot_bland_altman",
    "plot_feature_maps",
    "plot_feature_panels",
    "plot_overlay_grid",
    "plot_reliability_diagram",
    "plot_score_distributions",
    "plot_training_curves",
]

_WHERE = {
    "overlay_mask": ".overlay",
    "plot_bland_altman": ".agreement",
    "plot_feature_maps": ".figures",
    "plot_feature_panels": ".figures",
    "plot_overlay_grid": ".figures",
    "plot_reliability_diagram": ".reliability",
    "plot_score_distributions": ".figures",
    "plot_training_curves": ".curves",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
