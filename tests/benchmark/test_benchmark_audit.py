"""The protocol audit: the test curve is recorded without changing the run, kept small, and reported with its CIs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

from lesionseg.benchmark import load_benchmark_config, run_benchmark
from lesionseg.benchmark.audit import CURVE_FILE, SELECTED_FILE, TestCurveTrainer, chosen_epochs, read_test_curve
from lesionseg.engine import Trainer, evaluate_checkpoint
from lesionseg.engine.config import config_from_dict


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_test_curve_changes_nothing_in_the_run_and_matches_an_evaluation(tiny_config: dict, tmp_path: Path) -> None:
    cfg = dict(tiny_config, train={**tiny_config["train"], "epochs": 3})
    plain = Trainer(config_from_dict(cfg), run_dir=tmp_path / "plain", progress=False)
    plain.fit()
    audited = TestCurveTrainer(config_from_dict(cfg), run_dir=tmp_path / "audited", progress=False)
    audited.fit()
    # recorded only: the same weights and the same validation scores as the run without the curve
    for stem in ("last", "best"):
        a = load_file(str(tmp_path / "plain" / f"{stem}.safetensors"))
        b = load_file(str(tmp_path / "audited" / f"{stem}.safetensors"))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), stem
    drop = ("epoch_seconds", "elapsed_seconds")
    strip = [{k: v for k, v in r.items() if k not in drop} for r in _rows(tmp_path / "plain" / "metrics.csv")]
    assert strip == [{k: v for k, v in r.items() if k not in drop} for r in _rows(tmp_path / "audited/metrics.csv")]
    counts = _rows(tmp_path / "audited" / "test_curve_counts.csv")
    test_ids = json.loads(Path(cfg["data"]["split"]).read_text())["test"]
    assert [int(r["epoch"]) for r in counts] == [e for e in (1, 2, 3) for _ in test_ids]
    assert {r["id"] for r in counts} == set(test_ids)
    # the last epoch's counts are what an evaluation of the last weights finds (training size, no post-processing)
    ev = evaluate_checkpoint(
        tmp_path / "audited" / "last", split=cfg["data"]["split"], postprocess=False, include_hd95=False
    )
    want = {str(r["id"]): [int(r[k]) for k in ("tp", "fp", "fn", "tn")] for r in ev.metrics.per_image_table()}
    got = {r["id"]: [int(r[k]) for k in ("tp", "fp", "fn", "tn")] for r in counts if r["epoch"] == "3"}
    assert got == want


def test_test_curve_resumes_without_duplicate_epochs(tiny_config: dict, tmp_path: Path) -> None:
    cfg = dict(tiny_config, train={**tiny_config["train"], "epochs": 3})
    run = tmp_path / "run"
    TestCurveTrainer(config_from_dict(cfg), run_dir=run, progress=False).fit(stop_after=2)
    with open(run / "test_curve_counts.csv", "a") as f:  # a row written after the last checkpoint of a killed run
        f.write("3,stale,1,1,1,1\n")
    TestCurveTrainer.from_run_dir(run, progress=False).fit(resume=True)
    rows = _rows(run / "test_curve_counts.csv")
    assert "stale" not in {r["id"] for r in rows}
    assert sorted({int(r["epoch"]) for r in rows}) == [1, 2, 3]
    assert len(rows) == 3 * len({r["id"] for r in rows})


@pytest.fixture
def audit_config(bench_config: Path) -> Path:
    data = yaml.safe_load(bench_config.read_text())
    data["models"] = [dict(m, epochs=3) for m in data["models"]]
    data["cross"] = []
    data["report"]["feature_model"] = None
    data["audit"] = {"test_curve": True, "split_note": "The blobs have no groups."}
    bench_config.write_text(yaml.safe_dump(data))
    return bench_config


def test_benchmark_keeps_the_curve_and_reports_the_inflation(audit_config: Path, tmp_path: Path) -> None:
    cfg = load_benchmark_config(audit_config)
    report = run_benchmark(cfg, progress=False)
    text = report.read_text()
    assert "## How much the usual shortcuts inflate" in text
    assert "**Random versus grouped split.** The blobs have no groups." in text
    assert "Ranked by per-image Dice, chosen on validation: " in text and "Over the 2 models" in text
    for seed in (0, 1):
        res = tmp_path / "results" / "runs" / "unet_a" / f"seed{seed}"
        curve = read_test_curve(res / CURVE_FILE)
        assert list(curve["epoch"]) == [1, 2, 3]
        meta = json.loads((res / "metrics.json").read_text())
        chosen = chosen_epochs(curve, meta["best_epoch"])
        assert chosen["validation"] == meta["best_epoch"]
        assert curve["per_image"][chosen["test_per_image"] - 1] == curve["per_image"].max()
        selected = _rows(res / SELECTED_FILE)
        assert {int(r["epoch"]) for r in selected} == set(chosen.values())
        # the kept curve at an epoch equals the per-image Dice of that epoch's kept counts
        for epoch in set(chosen.values()):
            c = np.array([[float(r[k]) for k in ("tp", "fp", "fn")] for r in selected if int(r["epoch"]) == epoch])
            den = 2 * c[:, 0] + c[:, 1] + c[:, 2]
            dice = np.where(den > 0, 2 * c[:, 0] / np.maximum(den, 1), 1.0).mean()
            assert dice == pytest.approx(curve["per_image"][epoch - 1], abs=1e-12)
        assert "test_curve_counts.csv" not in {p.name for p in res.iterdir()}  # the working file stays behind
    section = text.split("## How much the usual shortcuts inflate")[1]
    row = next(line for line in section.splitlines() if line.startswith("| unet_a |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2"  # both seeds pooled
    delta = float(cells[6].split()[0])
    assert delta >= 0  # the maximum over epochs includes the validation's choice
    before = text
    run_benchmark(cfg, report_only=True)
    assert report.read_text() == before  # rebuilt from the kept files alone, byte for byte


def test_a_partial_curve_is_not_kept(tiny_config: dict, tmp_path: Path) -> None:
    from lesionseg.benchmark.audit import export_test_curve

    cfg = dict(tiny_config, train={**tiny_config["train"], "epochs": 2})
    run = tmp_path / "run"
    TestCurveTrainer(config_from_dict(cfg), run_dir=run, progress=False).fit()
    work = run / "test_curve_counts.csv"
    assert export_test_curve(run, tmp_path / "kept", 1)
    lines = work.read_text().splitlines()
    work.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if not ln.startswith("1,")]) + "\n")
    assert not export_test_curve(run, tmp_path / "partial", 1)  # epoch 1 was never recorded
    assert not (tmp_path / "partial").exists()
