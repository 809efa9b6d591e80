"""The benchmark command end to end on the synthetic blobs: fixed epochs, kept results, skip/export/resume, rebuilds."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from lesionseg.benchmark import (
    BenchmarkError,
    benchmark_splits,
    export_finished_runs,
    load_benchmark_config,
    run_benchmark,
)
from lesionseg.benchmark.results import read_masks
from lesionseg.benchmark.runner import _calibration, run_overrides
from lesionseg.cli import main
from lesionseg.engine import Trainer, load_config

REBUILT = ("report.md", "results.csv", "dice_per_image.png", "overlays.jpg", "feature_maps.jpg")


def _bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in REBUILT}


def test_benchmark_keeps_results_skips_them_and_rebuilds_the_report_byte_for_byte(
    bench_config: Path, tmp_path: Path, capsys
) -> None:
    assert main(["benchmark", "--config", str(bench_config), "--no-progress"]) == 0
    out, res = tmp_path / "bench", tmp_path / "results"
    report = (res / "report.md").read_text()
    for section in (
        "## What the table says",
        "## Runs",
        "## Per-image mean",
        "## Global",
        "## Confidence intervals",
        "## Paired comparison",
        "## Calibration",
        "## Size and speed",
        "## Training",
        "## Cross-dataset",
        "overlays.jpg",
        "feature_maps.jpg",
    ):
        assert section in report, section
    assert "All 4 runs (2 models x 2) are finished." in report
    assert str(tmp_path) not in report  # no absolute path in the page
    # the kept files of one run, and no weights anywhere in results_dir
    run = res / "runs/unet_a/seed1"
    meta = json.loads((run / "metrics.json").read_text())
    assert meta["seed"] == 1 and meta["epochs"] == 2 and meta["precision"] == "fp32" and meta["threads"] == 1
    for key in ("machine", "train_minutes", "best_epoch", "finished", "lesionseg_commit", "results"):
        assert key in meta, key
    assert meta["trained_by_commit"] == meta["lesionseg_commit"]  # trained and exported by the same code here
    assert set(meta["results"]) == {"global", "per_image"}
    # calibration on the test ids: the figures of the test evaluation itself (no second pass); two validation ids
    # are too few to fit a temperature, so none is claimed
    calib, ev = meta["calibration"], json.loads((out / "runs/unet_a/seed1/eval/metrics.json").read_text())["trust"]
    assert json.loads((run / "checkpoint.json").read_text()).get("temperature") is None
    assert calib == {
        "bins": 15,
        "ece_t1": ev["ece_before"],
        "ece_fitted": None,
        "temperature": None,
        "images": ev["images"],
        "resolution": "32x32",
    }
    for name in ("per_image.csv", "train_metrics.csv", "checkpoint.json", "features.npz", "cross/copy/metrics.json"):
        assert (run / name).is_file(), name
    assert not (res / "runs/unet_b/seed0/features.npz").exists()  # only the report's feature model keeps maps
    masks = read_masks(run / "masks.npz")
    assert sorted(masks) == meta["overlay_cases"] and len(masks) == 2
    assert all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} and m.ndim == 2 for m in masks.values())
    assert not list(res.rglob("*.png")) or all(p.parent == res for p in res.rglob("*.png"))  # no per-case images
    with np.load(run / "features.npz", allow_pickle=False) as z:
        assert z["channels"].dtype == np.float16 and z["channels"].ndim == 3
    assert not list(res.rglob("*.safetensors"))
    assert set(json.loads((res / "complexity.json").read_text())) == {"unet_a", "unet_b"}
    with open(res / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["model"], r["seed"]) for r in rows) == [
        ("unet_a", "0"),
        ("unet_a", "1"),
        ("unet_b", "0"),
        ("unet_b", "1"),
    ]
    assert {r["epochs"] for r in rows} == {"2"} and "per_image_hd95" in rows[0] and "global_dice" in rows[0]
    params = {r["model"]: int(r["params"]) for r in rows}
    assert params["unet_b"] < params["unet_a"]  # the per-model overrides reached the runs

    # a second call trains nothing and writes the same bytes
    best = out / "runs/unet_a/seed1/best.safetensors"
    stamp = best.stat().st_mtime_ns
    first = _bytes(res)
    capsys.readouterr()
    assert main(["benchmark", "--config", str(bench_config)]) == 0
    assert "unet_a run 1: done" in capsys.readouterr().err
    assert best.stat().st_mtime_ns == stamp
    assert _bytes(res) == first

    # results lost but the run folder finished: exported again, not retrained
    shutil.rmtree(res / "runs/unet_b/seed0")
    assert main(["benchmark", "--config", str(bench_config), "--export-only", "--no-progress"]) == 0
    assert (res / "runs/unet_b/seed0/metrics.json").is_file()
    assert best.stat().st_mtime_ns == stamp
    assert _bytes(res)["report.md"] == first["report.md"]

    # --report-only from results_dir alone (no run folder, no data), twice: the same bytes every time
    shutil.rmtree(out)
    shutil.rmtree(tmp_path / "blobs")
    for _ in range(2):
        assert main(["benchmark", "--config", str(bench_config), "--report-only", "--no-progress"]) == 0
        assert _bytes(res) == first


def test_an_interrupted_run_resumes_to_its_fixed_epochs(bench_config: Path, tmp_path: Path) -> None:
    cfg = load_benchmark_config(bench_config, ["seeds=[0]", "cross=[]", "report.feature_model=null"])
    model = cfg.models[0]
    split = benchmark_splits(cfg)[0]
    # the run the benchmark would start, killed after its first epoch
    run_dir = tmp_path / "bench/runs/unet_a/seed0"
    run_cfg = load_config(model.config, [*run_overrides(cfg, model, 0, split), "train.precision=fp32"])
    Trainer(run_cfg, run_dir=run_dir, progress=False).fit(stop_after=1)
    assert json.loads((run_dir / "last.json").read_text())["finished"] is False
    run_benchmark(cfg, progress=False, only=["unet_a"])
    with open(run_dir / "metrics.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]
    assert json.loads((tmp_path / "results/runs/unet_a/seed0/metrics.json").read_text())["epochs"] == 2


def test_a_run_folder_of_another_protocol_is_refused(bench_config: Path, tmp_path: Path) -> None:
    cfg = load_benchmark_config(bench_config, ["seeds=[0]", "cross=[]", "report.feature_model=null"])
    model = cfg.models[0]
    split = benchmark_splits(cfg)[0]
    # a wall-clock run of the old protocol left in out_dir
    run_dir = tmp_path / "bench/runs/unet_a/seed0"
    overrides = [*run_overrides(cfg, model, 0, split), "train.time_budget_min=5", "train.epochs=1"]
    Trainer(load_config(model.config, overrides), run_dir=run_dir, progress=False).fit()
    with pytest.raises(ValueError, match="time_budget_min=5"):
        export_finished_runs(cfg)
    with pytest.raises(BenchmarkError, match="unet_a run 0"):
        run_benchmark(cfg, progress=False)
    assert "Failed in the last call" in (tmp_path / "results/report.md").read_text()
    assert (tmp_path / "results/runs/unet_b/seed0/metrics.json").is_file()  # the other model still ran


def test_a_seeds_override_trains_its_own_seed_and_an_old_folder_is_adopted_only_by_its_run(
    bench_config: Path, tmp_path: Path
) -> None:
    light = ["cross=[]", "report.feature_model=null", "report.overlay_cases=0"]
    seed0 = load_benchmark_config(bench_config, ["seeds=[0]", *light])
    seed1 = load_benchmark_config(bench_config, ["seeds=[1]", *light])  # its first run is seed 1
    run_benchmark(seed0, progress=False, only=["unet_a"])
    out, res = tmp_path / "bench/runs/unet_a", tmp_path / "results/runs/unet_a"
    # the folder as earlier versions named it, by position in `seeds`, its results not kept
    (out / "seed0").rename(out / "run0")
    shutil.rmtree(res / "seed0")
    stamp = (out / "run0/best.safetensors").stat().st_mtime_ns

    run_benchmark(seed1, progress=False, only=["unet_a"])
    assert yaml.safe_load((out / "seed1/config.yaml").read_text())["train"]["seed"] == 1  # trained, not borrowed
    assert json.loads((res / "seed1/metrics.json").read_text())["seed"] == 1
    assert json.loads((res / "seed1/checkpoint.json").read_text())["config"]["train"]["seed"] == 1
    assert (out / "run0").is_dir() and not (res / "seed0").exists()  # seed 0's folder left alone

    # under seeds [0] the old folder is that run's (same seed, same split): adopted and exported, not retrained
    export_finished_runs(seed0)
    assert not (out / "run0").exists() and (out / "seed0/best.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((res / "seed0/checkpoint.json").read_text())["config"]["train"]["seed"] == 0

    # a folder of another seed under this run's name is refused, never exported as this seed
    shutil.rmtree(res / "seed1")
    shutil.rmtree(out / "seed1")
    shutil.copytree(out / "seed0", out / "seed1")
    with pytest.raises(ValueError, match=r"train.seed=0; run seed1 of this benchmark is seed 1"):
        export_finished_runs(seed1)
    assert not (res / "seed1").exists()


def test_precision_auto_asks_the_probe_and_records_its_choice(bench_config: Path, tmp_path: Path, monkeypatch) -> None:
    asked = []

    def resolve_precision(record_dir, label, config, overrides, device=None):
        asked.append((record_dir, label, list(overrides)))
        return "bf16"

    probe = types.ModuleType("lesionseg.benchmark.precision")
    probe.resolve_precision = resolve_precision  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lesionseg.benchmark.precision", probe)
    cfg = load_benchmark_config(
        bench_config,
        [
            "seeds=[0]",
            "cross=[]",
            "report.feature_model=null",
            "report.overlay_cases=0",
            "precision=auto",
            f"precision_records={tmp_path / 'records'}",
            f"models=[{{config: {tmp_path / 'unet_small.yaml'}, label: a, epochs: 1}}, "
            f"{{config: {tmp_path / 'unet_small.yaml'}, label: b, epochs: 1, precision: fp32}}]",
        ],
    )
    run_benchmark(cfg, progress=False)
    assert [(a[0], a[1]) for a in asked] == [(tmp_path / "records", "a")]
    assert "train.epochs=1" in asked[0][2] and "train.time_budget_min=null" in asked[0][2]
    assert yaml.safe_load((tmp_path / "bench/runs/a/seed0/config.yaml").read_text())["train"]["precision"] == "bf16"
    assert json.loads((tmp_path / "results/runs/a/seed0/metrics.json").read_text())["precision"] == "bf16"
    assert json.loads((tmp_path / "results/runs/b/seed0/metrics.json").read_text())["precision"] == "fp32"


@pytest.mark.parametrize(("kind", "runs"), [("repeated", 3), ("kfold", 4)])
def test_protocol_splits_are_drawn_once_and_disjoint(bench_config: Path, tmp_path: Path, kind: str, runs: int) -> None:
    cfg = load_benchmark_config(bench_config, [f"protocol.kind={kind}", "protocol.k=4", "protocol.repeats=3"])
    paths = benchmark_splits(cfg)
    assert len(paths) == runs == cfg.num_runs
    assert all(p.parent == tmp_path / "results" / "splits" for p in paths)  # kept with the results
    assert [cfg.run_key(r) for r in range(runs)][:3] == ["run0-seed0", "run1-seed1", "run2-seed0"]
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
    assert [p.read_text() for p in benchmark_splits(cfg)] == stamp


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("protocol.kind=bootstrap", "protocol.kind"),
        ("models=[]", "at least one"),
        ("report.feature_model=nope", "feature_model"),
        ("data.spilt=x", "unknown key"),
        ("protocol.split=null", "needs protocol.split"),
        ("models=[{config: x.yaml}]", "epochs:` is required"),
        ("train=[train.time_budget_min=10]", "fixed compute"),
        ("models=[{config: x.yaml, epochs: 3, set: [train.time_budget_min=1]}]", "fixed compute"),
        ("train=[train.epochs=10]", "its `epochs:`"),
        ("train=[train.threads=2]", "top-level `threads:`"),
        ("precision=fp16", "precision must be one of"),
        ("seeds=[1, 1]", "distinct"),
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
            f"models=[{{config: {broken}, label: broken, epochs: 1}}, "
            f"{{config: {tmp_path / 'unet_small.yaml'}, label: ok, epochs: 1}}]",
            "seeds=[0]",
            "cross=[]",
            "report.feature_model=null",
        ],
    )
    with pytest.raises(BenchmarkError, match="broken run 0"):
        run_benchmark(cfg, progress=False)
    report = (tmp_path / "results" / "report.md").read_text()
    assert "Failed in the last call" in report and "no_such_model" in report
    assert "Without any finished run: broken." in report
    assert (tmp_path / "results/runs/ok/seed0/metrics.json").is_file()


_ORPHAN_SCRIPT = """
import os, sys, time
from pathlib import Path
from lesionseg.benchmark.runner import worker_pool

if __name__ == "__main__":
    pool = worker_pool(1)
    worker = pool.submit(os.getpid).result()
    pool.submit(time.sleep, 300)
    Path(sys.argv[1]).write_text(str(worker))
    time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended; only its reaping is left


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads process states from /proc")
def test_jobs_workers_end_when_the_benchmark_process_is_killed(tmp_path: Path) -> None:
    script, pid_file = tmp_path / "bench.py", tmp_path / "worker.pid"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)])
    worker = None
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pid_file.exists(), "the pool never started its worker"
        worker = int(pid_file.read_text())
        assert _alive(worker)
        parent.kill()  # SIGKILL: no cleanup of the pool runs in the parent
        parent.wait()
        deadline = time.monotonic() + 30
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "a --jobs worker outlived the killed benchmark process"
    finally:
        parent.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_the_calibration_block_keeps_the_evaluation_figures_at_the_fitted_temperature() -> None:
    trust = {"images": 30, "bins": 15, "temperature": 1.8745, "ece_before": 0.01304, "ece_after": 0.02196}
    record = types.SimpleNamespace(temperature=1.87449, image_size=(256, 256))
    assert _calibration(trust, record) == {
        "bins": 15,
        "ece_t1": 0.01304,
        "ece_fitted": 0.02196,
        "temperature": 1.8745,
        "images": 30,
        "resolution": "256x256",
    }
    del trust["bins"]  # evaluated before the summary named its bins: CalibrationStats' 15
    assert _calibration(trust, record)["bins"] == 15
    assert _calibration(None, record) is None  # evaluated before trust figures existed: no block, no number
