"""The report from kept results alone, on partial tables (0-3 runs per model): n, missing runs, tests, the summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from lesionseg.benchmark import BenchmarkConfig, BenchmarkModel, ReportConfig, write_report
from lesionseg.benchmark.results import run_results_dir, write_json, write_run_results
from lesionseg.data.splits import SplitProtocol
from lesionseg.metrics import SegmentationMetrics, training_csv_columns

IDS = [f"img{i:02d}" for i in range(30)]


def _cfg(tmp_path: Path) -> BenchmarkConfig:
    return BenchmarkConfig(
        name="synthetic",
        results_dir=str(tmp_path / "results"),
        data={"root": "/nowhere/data", "layout": "folder"},
        protocol=SplitProtocol(kind="fixed", split="ph2"),
        seeds=(0, 1, 2),
        report=ReportConfig(bootstrap=200),
        models=tuple(
            BenchmarkModel(config=f"configs/{x}.yaml", label=x, epochs=5) for x in ("good", "close", "poor", "none")
        ),
    )


def _store(
    cfg: BenchmarkConfig,
    label: str,
    seed: int,
    noise: float,
    best_epoch: int = 4,
    exported_as: int | None = None,
    epochs: int = 5,
) -> None:
    """A run whose predictions are the truth with ``noise`` of each image's pixels flipped (seeded)."""
    rng = np.random.default_rng(1000 * seed + int(noise * 1000) + len(label))
    truth = np.zeros((30, 1, 16, 16), dtype=np.uint8)
    truth[:, :, 4:12, 4:12] = 1
    flips = rng.random(truth.shape) < noise * rng.uniform(0.5, 1.5, (30, 1, 1, 1))
    metrics = SegmentationMetrics(include_hd95=True)
    metrics.update(torch.from_numpy(truth ^ flips), torch.from_numpy(truth), ids=IDS)
    dest = run_results_dir(cfg.results_dir, label, cfg.run_key(seed))
    dest.mkdir(parents=True, exist_ok=True)
    rows = metrics.per_image_table()
    scratch = dest.parent / f"{dest.name}.csv"
    with open(scratch, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "run": seed if exported_as is None else exported_as,
        "seed": seed,
        "epochs": epochs,
        "best_epoch": best_epoch,
        "precision": "fp32",
        "threads": 1,
    }
    meta |= {"machine": "test host", "train_minutes": 1.5, "model": "unet_small", "results": metrics.aggregate()}
    write_run_results(dest, meta, scratch, None, None)
    scratch.unlink()


def test_partial_tables_say_what_is_missing_and_what_is_significant(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    for seed in (0, 1, 2):
        _store(cfg, "good", seed, 0.048)
    _store(cfg, "close", 0, 0.05, best_epoch=5)  # still improving at its last epoch
    _store(cfg, "close", 1, 0.05, exported_as=0)  # exported by `--set seeds=[1]`: run 0 there, seed1 here
    _store(cfg, "poor", 0, 0.25, best_epoch=5)
    path = write_report(cfg)
    report = path.read_text()
    first = path.read_bytes()
    assert write_report(cfg).read_bytes() == first  # a rebuild gives the same bytes
    assert "By mean per-image Dice the best model is **good**" in report
    assert "good is significantly better than poor" in report
    assert "The difference from close (Δ +0.71, p = 0.416) is not significant" in report
    assert "Without any finished run: none." in report
    assert (
        "Still improving when their fixed compute ended (the checkpoint chosen on validation comes from the last "
        "tenth of the epochs): close (1 of 2 runs) and poor; the table compares them at this compute" in report
    )
    assert "6 of 12 runs are finished; missing: close: seed2; poor: seed1, seed2; none: seed0, seed1, seed2." in report
    # n per model, std only where defined, a dash for a model without runs
    lines = report.splitlines()
    per_image = lines[lines.index(next(x for x in lines if x.startswith("## Per-image mean"))) + 4 :][:4]
    assert per_image[0].startswith("| good | 3 | ") and " ± " in per_image[0]
    assert per_image[1].startswith("| close | 2 | ") and " ± " in per_image[1]
    assert per_image[2].startswith("| poor | 1 | ") and " ± " not in per_image[2]
    assert per_image[3] == "| none | 0 | — | — | — | — | — | — |"
    assert "| none | `configs/none.yaml` | 5 | fp32 | 0/3 | seed0, seed1, seed2 |" in report
    # the comparison with a one-run model uses only the seed both finished
    assert "| poor | seed0 | 30 |" in report
    assert "| close | seed0, seed1 | 30 |" in report  # paired by the runs' seeds, not by the exporter's index
    assert "| none | — | 0 |" not in report  # models without runs are listed above, not tested
    assert "not measured yet" in report  # no complexity.json: said, not invented

    # a run is added: the summary follows
    _store(cfg, "close", 2, 0.05)
    assert "5 of 12 runs are finished" not in write_report(cfg).read_text()
    assert "missing: poor: seed1, seed2; none" in (tmp_path / "results" / "report.md").read_text()


def test_each_run_says_whether_it_converged_before_the_last_fifth_of_its_epochs(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _store(cfg, "good", 0, 0.05, best_epoch=8, epochs=10)  # epochs 9-10 are the last fifth: converged
    _store(cfg, "good", 1, 0.05, best_epoch=9, epochs=10)  # in the last fifth, not in the last tenth
    _store(cfg, "close", 0, 0.05, best_epoch=4, epochs=5)  # the last fifth of 5 epochs is epoch 5
    report = write_report(cfg).read_text()
    assert "| good | seed0 | 10 | 8 | fp32 | 1 | 1.5 | test host | yes |" in report
    assert "| good | seed1 | 10 | 9 | fp32 | 1 | 1.5 | test host | no |" in report
    assert "| close | seed0 | 5 | 4 | fp32 | 1 | 1.5 | test host | yes |" in report
    assert "Still improving when" not in report  # epoch 9 of 10 is not in the last tenth
    assert "Not converged (the best validation epoch falls in the last fifth of the epochs; " in report
    assert "says so per run): good (1 of 2 runs)." in report
    with open(tmp_path / "results" / "results.csv", newline="") as f:
        assert [r["converged"] for r in csv.DictReader(f)] == ["yes", "no", "yes"]

    _store(cfg, "good", 1, 0.05, best_epoch=7, epochs=10)  # retrained: now every run converged
    report = write_report(cfg).read_text()
    assert "Every finished run converged: its best validation epoch comes before the last fifth" in report
    assert "Not converged" not in report


def test_no_finished_run_gives_a_short_report(tmp_path: Path) -> None:
    report = write_report(_cfg(tmp_path)).read_text()
    assert "No run has finished yet (0 of 12)." in report
    assert "## Paired comparison" not in report and "## Confidence intervals" not in report


def test_the_trainer_csv_columns_come_from_the_registry() -> None:
    from lesionseg.engine.trainer import _CSV_FIELDS

    # the columns of existing runs' metrics.csv, unchanged
    assert training_csv_columns() == ("val_dice_per_image", "val_dice_global", "val_iou_per_image", "val_iou_global")
    assert _CSV_FIELDS[4:8] == training_csv_columns()


def test_the_precision_section_says_per_machine_what_the_trials_trained_on(tmp_path: Path) -> None:
    import dataclasses
    import json

    from lesionseg.benchmark.report import _precision_section

    records = tmp_path / "records"
    trial = {"status": "ok", "first_epoch_s": 9.0, "steady_epoch_s": 8.0, "best_val_dice_per_image": 0.8}
    for machine, data, epochs in (("cpu-a", None, 3), ("gpu-b", "../data/kvasir", 4)):
        (records / machine).mkdir(parents=True)
        rec = {"criteria": {"epochs": epochs, "min_speedup": 1.1, "dice_tolerance": 0.02}, "precision": "fp32"}
        rec |= {"fp32": trial, "bf16": trial, "reason": "bf16 is 1.00x fp32's speed"} | ({"data": data} if data else {})
        (records / machine / "good.json").write_text(json.dumps(rec))
    (records / "gpu-b" / "not_in_this_benchmark.json").write_text("{}")
    lines = _precision_section(dataclasses.replace(_cfg(tmp_path), precision_records=str(records)))
    assert "Machine `cpu-a` (trials of 3 epochs; data not recorded):" in lines
    assert "Machine `gpu-b` (trials of 4 epochs; `../data/kvasir`):" in lines
    assert sum(line.startswith("| good |") for line in lines) == 2 and not any("not_in" in line for line in lines)


def test_subgroups_by_diagnosis_and_lesion_size_from_the_kept_results(tmp_path: Path) -> None:
    from lesionseg.benchmark.results import read_run, write_case_groups

    cfg = _cfg(tmp_path)
    for seed in (0, 1):
        _store(cfg, "good", seed, 0.05)
    section = write_report(cfg).read_text().split("## Subgroups")[1].split("\n## ")[0]
    assert "By diagnosis" not in section and "lesion size only" in section  # no case_groups.json: no diagnosis
    # every truth is the same 8x8 square: the tertiles fall back on the ids, 10 each
    assert "| Model | small (n=10, 64-64 px²) | medium (n=10, 64-64 px²) | large (n=10, 64-64 px²) |" in section

    names = ("common nevus", "atypical nevus", "melanoma")
    write_case_groups(cfg.results_dir, {"diagnosis": {k: names[i % 3] for i, k in enumerate(IDS)}}, "test")
    first = write_report(cfg).read_bytes()
    assert write_report(cfg).read_bytes() == first
    section = first.decode().split("## Subgroups")[1].split("\n## ")[0]
    runs = [read_run(run_results_dir(cfg.results_dir, "good", f"seed{s}"), "good") for s in (0, 1)]
    dice = {k: np.mean([float(r["dice"]) for run in runs for r in run.rows if r["id"] == k]) for k in IDS}
    melanoma = np.mean([dice[k] for i, k in enumerate(IDS) if i % 3 == 2])
    row = next(x for x in section.splitlines() if x.startswith("| good |") and "By lesion" not in x)
    assert "| Model | common nevus (n=10) | atypical nevus (n=10) | melanoma (n=10) |" in section
    assert row.split(" | ")[3].startswith(f"{100 * melanoma:.2f} [")


def test_the_runner_keeps_the_test_ids_diagnoses_once(tmp_path: Path) -> None:
    import json

    from PIL import Image

    from lesionseg.benchmark.results import read_case_groups
    from lesionseg.benchmark.runner import record_case_groups

    images = tmp_path / "PH2Dataset" / "PH2 Dataset images"
    codes = {"IMD002": 0, "IMD003": 1, "IMD010": 2, "IMD058": 0}
    for cid in codes:
        for sub, name in ((f"{cid}_Dermoscopic_Image", f"{cid}.bmp"), (f"{cid}_lesion", f"{cid}_lesion.bmp")):
            (images / cid / sub).mkdir(parents=True)
            Image.fromarray(np.full((8, 8), 255, np.uint8)).save(images / cid / sub / name)
    rows = ["Name\tClinical Diagnosis"] + [f"{c}\t{d}" for c, d in codes.items()]
    (tmp_path / "PH2Dataset" / "PH2_dataset.txt").write_text("\n".join(rows) + "\n")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"info": {}, "train": ["IMD002"], "val": ["IMD058"], "test": ["IMD003", "IMD010"]}))
    cfg = BenchmarkConfig(
        name="ph2like",
        results_dir=str(tmp_path / "results"),
        data={"root": str(tmp_path), "layout": "ph2"},
        protocol=SplitProtocol(kind="fixed", split=str(split)),
        seeds=(0,),
        models=(BenchmarkModel(config="configs/x.yaml", label="x", epochs=1),),
    )
    record_case_groups(cfg, [split])
    assert read_case_groups(cfg.results_dir) == {"diagnosis": {"IMD003": "atypical nevus", "IMD010": "melanoma"}}
    path = tmp_path / "results" / "case_groups.json"
    stamp = path.stat().st_mtime_ns
    record_case_groups(cfg, [split])  # unchanged: not rewritten
    assert path.stat().st_mtime_ns == stamp


def _section(report: str, title: str) -> list[str]:
    lines = report.splitlines()
    start = lines.index(title)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def test_calibration_per_model_from_the_kept_blocks_and_said_when_not_recorded(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    for seed in (0, 1):
        _store(cfg, "good", seed, 0.048)
        _store(cfg, "close", seed, 0.05)
    # runs exported before calibration was kept: one sentence, no number, no crash
    section = _section(write_report(cfg).read_text(), "## Calibration")
    assert section[1:] == ["", "Not recorded for these runs (exported before the benchmark kept it).", ""]

    for seed, (t, before, after) in enumerate([(1.5, 0.02, 0.01), (2.5, 0.04, 0.03)]):
        dest = run_results_dir(cfg.results_dir, "good", cfg.run_key(seed))
        meta = json.loads((dest / "metrics.json").read_text())
        meta["calibration"] = {
            "bins": 15,
            "ece_t1": before,
            "ece_fitted": after,
            "temperature": t,
            "images": 30,
            "resolution": "16x16",
        }
        write_json(dest / "metrics.json", meta)
    report = write_report(cfg).read_text()
    section = _section(report, "## Calibration")
    assert "15 equal-width bins" in section[2] and "global reduction" in section[2]
    assert "| good | 2 | 2.00 ± 0.71 | 3.00 ± 1.41 | 2.00 ± 1.41 |" in section
    assert not any(line.startswith("| close") for line in section)
    assert section[-2] == "Not recorded (runs exported before the benchmark kept it): close."
    lines = report.splitlines()
    assert lines.index("## Calibration") < lines.index("## Size and speed")
