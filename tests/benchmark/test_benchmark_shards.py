"""Benchmark runs spread over machines: --shard I/N slices into one results folder, --report-only merges; --jobs K."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lesionseg.benchmark import load_benchmark_config, parse_shard, shard_runs
from lesionseg.cli import main

LIGHT = ["--set", "cross=[]", "report.overlay_cases=0", "report.feature_model=null", "report.latency_repeats=1"]


def _done(results: Path) -> set[tuple[str, int]]:
    return {(p.parts[-3], int(p.parts[-2][4:])) for p in results.glob("runs/*/seed*/metrics.json")}


def test_shards_are_deterministic_round_robin(bench_config: Path):
    models = "models=[{config: a.yaml, epochs: 1}, {config: b.yaml, epochs: 1}]"
    cfg = load_benchmark_config(bench_config, [models, "report.feature_model=null"])
    names = lambda pairs: [(m.name, r) for m, r in pairs]  # noqa: E731
    assert names(shard_runs(cfg)) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert names(shard_runs(cfg, (1, 2))) == [("a", 0), ("b", 0)]
    assert names(shard_runs(cfg, (2, 2))) == [("a", 1), ("b", 1)]
    assert names(shard_runs(cfg, (3, 3))) == [("b", 0)]
    # --only filters a slice; it never moves a run to another slice
    assert names(shard_runs(cfg, (2, 2), only=["b"])) == [("b", 1)]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "1-2", "a/b"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_two_slices_then_merged_report(bench_config: Path, tmp_path: Path, capsys):
    out, res = tmp_path / "bench", tmp_path / "results"
    # slice 1 of 2 with two runs at once (two worker processes)
    assert (
        main(["benchmark", "--config", str(bench_config), "--shard", "1/2", "--jobs", "2", "--no-progress", *LIGHT])
        == 0
    )
    assert _done(res) == {("unet_a", 0), ("unet_b", 0)}
    assert not (res / "report.md").exists()  # slices write runs only; the report is merged afterwards
    assert "--report-only" in capsys.readouterr().out
    assert main(["benchmark", "--config", str(bench_config), "--report-only", "--no-progress", *LIGHT]) == 0
    partial = (res / "report.md").read_text()
    assert "2 of 4 runs are finished; missing: unet_a: seed1; unet_b: seed1." in partial
    assert "| unet_a | 1 |" in partial and "| unet_a | `" in partial and "| 1/2 | seed1 |" in partial
    # slice 2 of 2 (another machine, the same results folder), then the merge covers all four runs
    args = ["benchmark", "--config", str(bench_config), "--shard", "2/2", "--no-progress", "--device", "cpu", *LIGHT]
    assert main(args) == 0
    assert _done(res) == {("unet_a", 0), ("unet_a", 1), ("unet_b", 0), ("unet_b", 1)}
    assert main(["benchmark", "--config", str(bench_config), "--report-only", "--no-progress", *LIGHT]) == 0
    report = (res / "report.md").read_text()
    assert "All 4 runs" in report and "| unet_a | 2 |" in report and "| unet_b | 2 |" in report
    # every run trained with the benchmark's threads, whether it ran under --jobs or not
    for run in ("seed0", "seed1"):
        train = yaml.safe_load((out / "runs/unet_a" / run / "config.yaml").read_text())["train"]
        assert train["threads"] == 1 and train["epochs"] == 2 and train["time_budget_min"] is None
