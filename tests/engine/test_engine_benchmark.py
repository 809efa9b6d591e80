"""The benchmark command end to end on the synthetic blobs: runs, resume/skip, report, protocols."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lesionseg.cli import main
from lesionseg.engine.benchmark import BenchmarkError, load_benchmark_config, make_splits, run_benchmark


@pytest.fixture
def bench_config(tmp_path: Path, blob_root: Path, blob_split: Path, tiny_config: dict) -> Path:
    tiny_config["train"]["epochs"] = 1
    unet = tmp_path / "unet_small.yaml"
    unet.write_text(yaml.safe_dump(tiny_config))
    bench = {
        "name": "blobs",
        "out_dir": str(tmp_path / "bench"),
        "data": {"root": str(blob_root), "layout": "folder"},
        "protocol": {"kind": "fixed", "split": str(blob_split)},
        "seeds": [0, 1],
        "models": [
            {"config": str(unet), "label": "unet_a"},
            {"config": str(unet), "label": "unet_b", "set": ["model.kwargs.channels=[4, 8]"]},
        ],
        "train": ["train.epochs=2"],
        "cross": [{"name": "copy", "root": str(blob_root), "layout": "folder"}],
        "report": {
            "overlay_cases": 2,
            "feature_model": "unet_a",
            "feature_layer": "head",
            "bootstrap": 200,
            "latency_repeats": 2,
        },
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(bench))
    return path


def test_benchmark_trains_reports_and_skips_finished_runs(bench_config: Path, tmp_path: Path, capsys) -> None:
    assert main(["benchmark", "--config", str(bench_config), "--no-progress"]) == 0
    out = tmp_path / "bench"
    report = (out / "report.md").read_text()
    for section in (
        "## Global",
        "## Per-image mean",
        "## Size and speed",
        "## Confidence intervals",
        "## Paired comparison",
        "## Cross-dataset",
        "overlays.png",
        "feature_maps.png",
    ):
        assert section in report, section
    assert "Incomplete" not in report
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["model"], r["run"]) for r in rows) == [
        ("unet_a", "0"),
        ("unet_a", "1"),
        ("unet_b", "0"),
        ("unet_b", "1"),
    ]
    assert {r["epochs"] for r in rows} == {"2"}
    # the per-model overrides reached the runs: unet_b is the two-stage net, so it has fewer parameters
    params = {r["model"]: int(r["params"]) for r in rows}
    assert params["unet_b"] < params["unet_a"]
    for name in ("overlays.png", "feature_maps.png", "dice_per_image.png", "complexity.json"):
        assert (out / name).stat().st_size > 0
    # seeds differ per run, so the two runs of one model are different models
    a0 = json.loads((out / "runs/unet_a/run0/eval/metrics.json").read_text())
    assert a0["seed"] == 0 and a0["run"] == 0 and "machine" in a0
    w0 = load_file(out / "runs/unet_a/run0/best.safetensors")
    w1 = load_file(out / "runs/unet_a/run1/best.safetensors")
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)
    best = out / "runs/unet_a/run1/best.safetensors"
    stamp = best.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["benchmark", "--config", str(bench_config)]) == 0
    assert "unet_a run 1: done" in capsys.readouterr().err
    assert best.stat().st_mtime_ns == stamp
    assert (out / "report.md").read_text() == report


def test_benchmark_resumes_an_interrupted_run(bench_config: Path, tmp_path: Path) -> None:
    cfg = load_benchmark_config(
        bench_config,
        [
            "models=[{config: " + str(tmp_path / "unet_small.yaml") + "}]",
            "seeds=[0]",
            "cross=[]",
            "report.feature_model=null",
        ],
    )
    run_benchmark(cfg, progress=False)
    run_dir = tmp_path / "bench/runs/unet_small/run0"
    # simulate a crash after epoch 1 of a 3-epoch budget: the record says unfinished, evaluation missing
    last = json.loads((run_dir / "last.json").read_text())
    assert last["finished"] is True and last["epoch"] == 2
    cfg3 = load_benchmark_config(
        bench_config,
        [
            "models=[{config: " + str(tmp_path / "unet_small.yaml") + "}]",
            "seeds=[0]",
            "cross=[]",
            "report.feature_model=null",
            "train=[train.epochs=3]",
        ],
    )
    (run_dir / "eval/metrics.json").unlink()
    last["finished"] = False
    (run_dir / "last.json").write_text(json.dumps(last))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["train"]["epochs"] = 3
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    run_benchmark(cfg3, progress=False)
    with open(run_dir / "metrics.csv", newline="") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == [1, 2, 3]
    assert (run_dir / "eval/metrics.json").is_file()


@pytest.mark.parametrize(("kind", "runs"), [("repeated", 3), ("kfold", 4)])
def test_protocol_splits_are_drawn_once_and_disjoint(bench_config: Path, kind: str, runs: int) -> None:
    cfg = load_benchmark_config(bench_config, [f"protocol.kind={kind}", "protocol.k=4", "protocol.repeats=3"])
    paths = make_splits(cfg)
    assert len(paths) == runs == cfg.num_runs
    tests = []
    for p in paths:
        s = json.loads(p.read_text())
        assert not set(s["test"]) & (set(s["train"]) | set(s["val"]))
        assert s["val"], "validation ids come out of the training part"
        tests.append(set(s["test"]))
    if kind == "kfold":
        assert set.union(*tests) == {f"case{i:03d}" for i in range(12)}
        assert sum(len(t) for t in tests) == 12
    else:
        assert len({frozenset(t) for t in tests}) > 1
    stamp = [p.read_text() for p in paths]
    assert [p.read_text() for p in make_splits(cfg)] == stamp


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("protocol.kind=bootstrap", "protocol.kind"),
        ("models=[]", "at least one"),
        ("report.feature_model=nope", "feature_model"),
        ("data.spilt=x", "unknown key"),
        ("protocol.split=null", "needs protocol.split"),
    ],
)
def test_bad_benchmark_config_is_named(bench_config: Path, override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_benchmark_config(bench_config, [override])


def test_only_names_unknown_labels(bench_config: Path) -> None:
    cfg = load_benchmark_config(bench_config)
    with pytest.raises(ValueError, match="unknown model label"):
        run_benchmark(cfg, progress=False, only=["nope"])


def test_a_failing_run_is_reported_and_does_not_stop_the_others(bench_config: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: {name: no_such_model}\n")
    cfg = load_benchmark_config(
        bench_config,
        [
            f"models=[{{config: {broken}, label: broken}}, {{config: {tmp_path / 'unet_small.yaml'}, label: ok}}]",
            "seeds=[0]",
            "cross=[]",
            "report.feature_model=null",
        ],
    )
    with pytest.raises(BenchmarkError, match="broken run 0"):
        run_benchmark(cfg, progress=False)
    report = (tmp_path / "bench" / "report.md").read_text()
    assert "Failed in the last call" in report and "no_such_model" in report
    assert (tmp_path / "bench/runs/ok/run0/eval/metrics.json").is_file()
