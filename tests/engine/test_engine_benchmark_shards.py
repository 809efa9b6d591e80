"""Benchmark runs spread over machines: --shard I/N slices into one results folder, --report-only merges; --jobs K."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lesionseg.cli import main
from lesionseg.engine.benchmark import load_benchmark_config, parse_shard, shard_runs


@pytest.fixture
def bench(tmp_path: Path, blob_root: Path, blob_split: Path, tiny_config: dict) -> Path:
    tiny_config["train"].update(epochs=1, threads=0)
    unet = tmp_path / "unet_small.yaml"
    unet.write_text(yaml.safe_dump(tiny_config))
    cfg = {
        "name": "blobs",
        "out_dir": str(tmp_path / "bench"),
        "data": {"root": str(blob_root), "layout": "folder"},
        "protocol": {"kind": "fixed", "split": str(blob_split)},
        "seeds": [0, 1],
        "models": [
            {"config": str(unet), "label": "a"},
            {"config": str(unet), "label": "b", "set": ["model.kwargs.channels=[4, 8]"]},
        ],
        "report": {"overlay_cases": 0, "bootstrap": 50, "latency_repeats": 1},
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _done(out: Path) -> set[tuple[str, int]]:
    return {(p.parts[-4], int(p.parts[-3][3:])) for p in out.glob("runs/*/run*/eval/metrics.json")}


def test_shards_are_deterministic_round_robin(bench: Path):
    cfg = load_benchmark_config(bench)
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


def test_two_slices_then_merged_report(bench: Path, tmp_path: Path, capsys):
    out = tmp_path / "bench"
    # slice 1 of 2 with two runs at once (two single-thread worker processes)
    assert main(["benchmark", "--config", str(bench), "--shard", "1/2", "--jobs", "2", "--no-progress"]) == 0
    assert _done(out) == {("a", 0), ("b", 0)}
    assert not (out / "report.md").exists()  # slices write runs only; the report is merged afterwards
    assert "--report-only" in capsys.readouterr().out
    assert main(["benchmark", "--config", str(bench), "--report-only", "--no-progress"]) == 0
    partial = (out / "report.md").read_text()
    assert "**Incomplete**: 2 of 4 runs not finished: a run 1, b run 1" in partial
    # slice 2 of 2 (another machine, the same folder), then the merge covers all four runs
    assert main(["benchmark", "--config", str(bench), "--shard", "2/2", "--no-progress", "--device", "cpu"]) == 0
    assert _done(out) == {("a", 0), ("a", 1), ("b", 0), ("b", 1)}
    assert main(["benchmark", "--config", str(bench), "--report-only", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert "Incomplete" not in report and "| a | 2 |" in report and "| b | 2 |" in report
    # the runs of --jobs trained with one torch thread each; the others as their config says
    assert "threads: 1\n" in (out / "runs/a/run0/config.yaml").read_text()
    assert "threads: 0\n" in (out / "runs/a/run1/config.yaml").read_text()
