"""One metric registry: every table, CSV column and log line that names a metric is generated from it.

Each :class:`MetricSpec` says what a metric is called in results (``name``), how a table heads it (``label``,
``short``), its unit and display scale, which way is better, under which reductions it exists, and where it is used:
``report`` (the benchmark's tables) and ``training`` (scored on the validation ids every epoch; the trainer's
``metrics.csv`` has ``val_<name>_<reduction>`` columns for these). Adding a metric is one entry here (plus its score
function when it is computed from confusion counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from lesionseg.metrics.scores import Reduction, accuracy, dice, f1, iou, precision, sensitivity, specificity
from lesionseg.registry import Registry

__all__ = [
    "METRICS",
    "METRIC_REGISTRY",
    "MetricSpec",
    "REPORT_METRICS",
    "REPORT_REDUCTIONS",
    "SCORE_FUNCTIONS",
    "TRAINING_METRICS",
    "get_metric",
    "training_csv_columns",
]

ScoreFn = Callable[[Tensor, Tensor, Tensor, Tensor, Reduction], Tensor]


@dataclass(frozen=True)
class MetricSpec:
    """A metric and how it is shown.

    Attributes:
        name: key in results mappings, JSON and CSV (``dice``).
        label: table heading (``Dice``).
        short: compact heading for wide tables (``Acc``).
        unit: ``%`` for fractions shown as percentages, ``px`` for distances in pixels.
        scale: factor from the stored value to the shown one (100 for percentages).
        higher_is_better: direction of improvement.
        reductions: reductions under which it exists (``global``, ``per_image``).
        score: score function of confusion counts; None for metrics computed otherwise (HD95).
        report: shown in the benchmark's tables.
        training: scored on the validation ids every epoch by the trainer.
    """

    name: str
    label: str
    short: str
    unit: str
    scale: float
    higher_is_better: bool
    reductions: tuple[str, ...]
    score: ScoreFn | None = None
    report: bool = True
    training: bool = False

    @property
    def column(self) -> str:
        """Heading with the unit when it is a percentage (``Dice (%)``); other units depend on the pixel spacing."""
        return f"{self.label} (%)" if self.unit == "%" else self.label

    def show(self, value: float) -> float:
        return value * self.scale


_BOTH = ("global", "per_image")

#: Every metric, in the column order of every table.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("dice", "Dice", "Dice", "%", 100.0, True, _BOTH, dice, report=True, training=True),
    MetricSpec("iou", "IoU", "IoU", "%", 100.0, True, _BOTH, iou, report=True, training=True),
    MetricSpec("accuracy", "Accuracy", "Acc", "%", 100.0, True, _BOTH, accuracy),
    MetricSpec("sensitivity", "Sensitivity", "Sens", "%", 100.0, True, _BOTH, sensitivity),
    MetricSpec("specificity", "Specificity", "Spec", "%", 100.0, True, _BOTH, specificity),
    MetricSpec("precision", "Precision", "Prec", "%", 100.0, True, _BOTH, precision, report=False),
    # F1 equals Dice for binary masks; computed and stored as a check, left out of the benchmark's tables.
    MetricSpec("f1", "F1", "F1", "%", 100.0, True, _BOTH, f1, report=False),
    MetricSpec("hd95", "HD95", "HD95", "px", 1.0, False, ("per_image",)),
)

#: The same metrics by name (``get_metric``).
METRIC_REGISTRY: Registry[MetricSpec] = Registry("metric")
for _spec in METRICS:
    METRIC_REGISTRY.add(_spec.name, _spec)

#: Score name -> function of confusion counts, in table order.
SCORE_FUNCTIONS: dict[str, ScoreFn] = {m.name: m.score for m in METRICS if m.score is not None}
#: The metrics of the benchmark's tables.
REPORT_METRICS: tuple[MetricSpec, ...] = tuple(m for m in METRICS if m.report)
#: The metrics the trainer scores on the validation ids every epoch.
TRAINING_METRICS: tuple[MetricSpec, ...] = tuple(m for m in METRICS if m.training)
#: Reductions in the order the report shows them.
REPORT_REDUCTIONS: tuple[str, ...] = ("per_image", "global")


def get_metric(name: str) -> MetricSpec:
    """The registry entry called ``name``.

    Raises:
        UnknownNameError: unknown name, a ``ValueError`` (and a ``KeyError``); the message suggests the closest and
            lists the known ones.
    """
    return METRIC_REGISTRY.get(name)


def training_csv_columns() -> tuple[str, ...]:
    """The validation columns of the trainer's ``metrics.csv``: ``val_<name>_per_image``, ``val_<name>_global``."""
    return tuple(f"val_{m.name}_{red}" for m in TRAINING_METRICS for red in ("per_image", "global"))
