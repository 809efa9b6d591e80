"""Benchmarks: models x seeds under one protocol, a fixed number of epochs per model, results kept per run.

Modules, one job each: ``config`` (the YAML schema), ``runner`` (train, resume, shard, export), ``results`` (the
committed per-run files: write and read), ``report`` (report.md and results.csv from those files alone), ``figures``
(what a run keeps for the figures, and drawing them), ``precision`` (the ``auto`` precision probe). The split
protocols live in :mod:`lesionseg.data.splits`, the metric names in :mod:`lesionseg.metrics.registry`.

This package sits above ``engine`` and ``inference`` (it may import them) and below ``cli``.
"""

from __future__ import annotations

from .config import BenchmarkConfig, BenchmarkModel, CrossDataset, ReportConfig, load_benchmark_config
from .report import collect_runs, write_report
from .results import FeatureSummary, RunResults, read_run
from .runner import (
    BenchmarkError,
    benchmark_splits,
    export_finished_runs,
    export_run,
    measure_complexity,
    parse_shard,
    run_benchmark,
    run_dir_of,
    run_one,
    shard_runs,
)

__all__ = [
    "BenchmarkConfig",
    "BenchmarkError",
    "BenchmarkModel",
    "CrossDataset",
    "FeatureSummary",
    "ReportConfig",
    "RunResults",
    "benchmark_splits",
    "collect_runs",
    "export_finished_runs",
    "export_run",
    "load_benchmark_config",
    "measure_complexity",
    "parse_shard",
    "read_run",
    "run_benchmark",
    "run_dir_of",
    "run_one",
    "shard_runs",
    "write_report",
]
