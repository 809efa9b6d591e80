"""A benchmark's configuration: models x seeds under one split protocol, each model a fixed number of epochs.

The protocol is fixed compute: every model entry names its ``epochs``; the runner trains exactly that many, with no
wall-clock budget, ``threads`` torch threads and the chosen precision, on every machine. Everything else comes from
the model's own config (its paper recipe). Settings that would break that contract (``train.time_budget_min``, and
``train.epochs`` / ``train.threads`` / ``train.precision``, which have their own keys here) are refused with the key
to use instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.splits import SplitProtocol
from ..engine.config import _from_dict, apply_overrides, read_yaml_mapping

__all__ = [
    "AuditConfig",
    "BENCHMARK_PRECISIONS",
    "BenchmarkConfig",
    "BenchmarkModel",
    "CrossDataset",
    "ReportConfig",
    "load_benchmark_config",
]

#: ``auto`` lets the runner probe, once per machine and model, whether bf16 autocast trains correctly and faster.
BENCHMARK_PRECISIONS = ("fp32", "bf16", "auto")

# Keys a benchmark sets itself; a ``train:`` or ``set:`` override of them is refused, naming the key to use.
_RESERVED = {
    "train.time_budget_min": "runs are fixed compute: give each model its `epochs:`; wall-clock time is only recorded",
    "train.epochs": "give each model its `epochs:`",
    "train.threads": "use the top-level `threads:`",
    "train.precision": "use the top-level `precision:` or a model's own `precision:`",
    "train.seed": "use the top-level `seeds:`",
    "data.root": "use the top-level `data.root`",
    "data.split": "the split comes from `protocol:`",
}


def _check_overrides(overrides: Sequence[str], where: str) -> None:
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in _RESERVED:
            raise ValueError(f"{where}: {item!r} is not allowed in a benchmark: {_RESERVED[key]}")


@dataclass
class BenchmarkModel:
    """One model of the benchmark.

    Attributes:
        config: the model's run config (its recipe); every setting not named here is kept.
        epochs: training epochs of every run of this model (required; the same on every machine).
        label: name in tables and folders; defaults to the config file's stem.
        set: ``key=value`` overrides of the model's config.
        precision: ``fp32``, ``bf16`` or ``auto``; None = the benchmark's ``precision``.
    """

    config: str
    epochs: int | None = None
    label: str | None = None
    set: tuple[str, ...] = ()
    precision: str | None = None

    def __post_init__(self) -> None:
        if self.epochs is None:
            raise ValueError(f"models: {self.config}: `epochs:` is required (runs are a fixed number of epochs)")
        if self.epochs < 1:
            raise ValueError(f"models: {self.config}: epochs must be >= 1, got {self.epochs}")
        if self.precision is not None and self.precision not in BENCHMARK_PRECISIONS:
            raise ValueError(f"models: {self.name}: precision must be one of {BENCHMARK_PRECISIONS}")
        _check_overrides(self.set, f"models: {self.name}: set")

    @property
    def name(self) -> str:
        return self.label or Path(self.config).stem


@dataclass
class CrossDataset:
    """Another data root every finished run is also evaluated on (all its labelled cases)."""

    name: str
    root: str
    layout: str | None = None


@dataclass
class ReportConfig:
    """What the report shows beyond the tables.

    Attributes:
        overlay_cases: how many test cases of run 0 (by sorted id, evenly spaced) the overlay figure shows; their
            predicted masks are kept with every run.
        feature_model: label of the model whose feature maps are drawn; None = no feature-map figure.
        feature_layer: dotted module path inside that model (e.g. ``decoder.stages.0``).
        bootstrap: resamples of the bootstrap intervals.
        latency_repeats: timed forward passes per model (batch 1, fp32, eval size).
        latency_threads: torch threads for the latency figure (0 = torch's default).
    """

    overlay_cases: int = 4
    feature_model: str | None = None
    feature_layer: str | None = None
    bootstrap: int = 2000
    latency_repeats: int = 20
    latency_threads: int = 0


@dataclass
class AuditConfig:
    """The protocol audit (:mod:`lesionseg.benchmark.audit`): what the usual shortcuts would have reported.

    Attributes:
        test_curve: every run also scores its test ids after every epoch (recorded only, never used to choose), and
            the report compares the test Dice of the checkpoint chosen on the test ids with the one chosen on
            validation.
        split_note: what the report says under "random versus grouped split" (whether the dataset has groups, and
            what a random split leaks there).
    """

    test_curve: bool = False
    split_note: str = (
        "This dataset gives no groups (patients, lesions, sequences), so a random split and a grouped split are the "
        "same here; the comparison needs a dataset with groups (`lesionseg data split --group-by`)."
    )


@dataclass
class BenchmarkConfig:
    """A benchmark: models x seeds under one protocol, a fixed number of epochs per model.

    Attributes:
        name: benchmark name (report title; default folders).
        out_dir: working run folders (``runs/<label>/seed<s>/``, named as the results; weights included; never
            committed); empty = ``runs/benchmark/<name>``.
        results_dir: the committed results (small files per run, the report); empty = ``docs/results/<name>``.
        data: ``root`` (and optionally ``layout``) of the dataset, applied to every model's config.
        protocol: how the runs' splits are made.
        seeds: training seeds; ``fixed``/``official`` run one run per seed, ``repeated``/``kfold`` use
            ``seeds[r % len]`` for run r.
        models: the models to compare, each with its ``epochs``.
        train: ``key=value`` overrides applied to every run (not the reserved keys: see the module docstring).
        precision: ``fp32``, ``bf16`` or ``auto`` (probed once per machine and model) for every model without its own.
        precision_records: folder of the ``auto`` decisions (``<machine key>/<label>.json``), shared by every
            benchmark: the choice depends on the machine and the model, not on the dataset.
        threads: torch threads of every run (0 = torch's default); fixed so results do not depend on ``--jobs``.
        native: evaluate at each image's native resolution instead of the training size.
        cross: other data roots to evaluate every run on.
        report: figures and statistics of the report.
        audit: the protocol audit (off by default).
    """

    name: str = "benchmark"
    out_dir: str = ""
    results_dir: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    protocol: SplitProtocol = field(default_factory=lambda: SplitProtocol(kind="official"))
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[BenchmarkModel, ...] = ()
    train: tuple[str, ...] = ()
    precision: str = "fp32"
    precision_records: str = "docs/results/precision"
    threads: int = 1
    native: bool = False
    cross: tuple[CrossDataset, ...] = ()
    report: ReportConfig = field(default_factory=ReportConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a benchmark needs at least one entry under models")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        if not self.data.get("root"):
            raise ValueError("data.root is required")
        unknown = set(self.data) - {"root", "layout"}
        if unknown:
            raise ValueError(f"data: unknown key(s) {sorted(unknown)}; known: ['layout', 'root']")
        if self.precision not in BENCHMARK_PRECISIONS:
            raise ValueError(f"precision must be one of {BENCHMARK_PRECISIONS}, got {self.precision!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = torch's default), got {self.threads}")
        _check_overrides(self.train, "train")
        labels = [m.name for m in self.models]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"models: duplicate label(s) {dupes}; give each a distinct label")
        if self.report.feature_model and self.report.feature_model not in labels:
            raise ValueError(f"report.feature_model {self.report.feature_model!r} is not one of {labels}")
        names = [c.name for c in self.cross]
        if len(set(names)) != len(names):
            raise ValueError(f"cross: duplicate name(s) in {names}")
        self.out_dir = self.out_dir or f"runs/benchmark/{self.name}"
        self.results_dir = self.results_dir or f"docs/results/{self.name}"

    @property
    def num_runs(self) -> int:
        """Runs per model: one per seed, or one per draw of ``repeated`` / ``kfold``."""
        return self.protocol.draws or len(self.seeds)

    def seed_of(self, run: int) -> int:
        return self.seeds[run % len(self.seeds)]

    def run_key(self, run: int) -> str:
        """The results folder name of run ``run``: ``seed<s>``, or ``run<r>-seed<s>`` when runs outnumber seeds."""
        if self.num_runs <= len(self.seeds):
            return f"seed{self.seed_of(run)}"
        return f"run{run}-seed{self.seed_of(run)}"

    def precision_of(self, model: BenchmarkModel) -> str:
        """``fp32``, ``bf16`` or ``auto`` for ``model``."""
        return model.precision or self.precision

    def model(self, label: str) -> BenchmarkModel:
        for m in self.models:
            if m.name == label:
                return m
        raise KeyError(f"no model labelled {label!r}; known: {[m.name for m in self.models]}")


def load_benchmark_config(path: str | Path, overrides: Sequence[str] = ()) -> BenchmarkConfig:
    """Read a benchmark YAML (unknown keys and wrong types raise ``ValueError`` naming them), apply overrides."""
    path = Path(path)
    data = read_yaml_mapping(path, "benchmark config")
    apply_overrides(data, list(overrides))
    data.setdefault("name", path.stem)
    try:
        return _from_dict(BenchmarkConfig, data, "")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
