"""Run loggers: TensorBoard events read back with TensorBoard's own reader, the run's ETA, the end-of-run summary."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import yaml

from lesionseg.cli import main
from lesionseg.engine import Trainer
from lesionseg.engine.config import config_from_dict


def _config(tiny_config: dict, **train) -> dict:
    return dict(tiny_config, train={**tiny_config["train"], **train})


def _events(run_dir: Path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_hold_every_epoch_row_and_the_overlays(tiny_config: dict, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    cfg = _config(tiny_config, epochs=3, loggers=["csv", "tensorboard"], log_images_every=2)
    run = tmp_path / "run"
    Trainer(config_from_dict(cfg), run_dir=run, progress=False).fit()
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    acc = _events(run)
    tags = acc.Tags()
    for key, tag in (("train_loss", "train/loss"), ("lr", "train/lr"), ("val_dice_per_image", "val/dice_per_image"),
                     ("val_dice_global", "val/dice_global"), ("epoch_seconds", "time/epoch_seconds")):  # fmt: skip
        assert tag in tags["scalars"], tag
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3]
        assert [e.value for e in events] == pytest.approx([float(r[key]) for r in rows], rel=1e-6)
    images = acc.Images("val/overlays")
    assert [e.step for e in images] == [2, 3]  # every 2 epochs, and the last
    assert images[0].width == 2 * 32 and images[0].height == 32  # the 2 validation images side by side


def test_tensorboard_resume_purges_the_events_past_the_checkpoint(tiny_config: dict, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    cfg = _config(tiny_config, epochs=4, loggers=["csv", "tensorboard"], checkpoint_every=2)
    run = tmp_path / "run"
    first = Trainer(config_from_dict(cfg), run_dir=run, progress=False)
    first.fit(stop_after=3)  # epoch 3 is logged, but the last checkpoint holds epoch 2: as a run killed in epoch 4
    first.close()
    assert [e.step for e in _events(run).Scalars("train/loss")] == [1, 2, 3]
    again = Trainer.from_run_dir(run, progress=False)
    again.fit(resume=True)
    again.close()
    events = _events(run).Scalars("train/loss")
    assert [e.step for e in events] == [1, 2, 3, 4]  # epoch 3 of the first call purged, not doubled
    with open(run / "metrics.csv", newline="") as f:
        assert [float(r["train_loss"]) for r in csv.DictReader(f)] == pytest.approx([e.value for e in events])


def test_unknown_logger_and_bad_image_interval_are_named(tiny_config: dict) -> None:
    with pytest.raises(ValueError, match="train.loggers.*csv, tensorboard"):
        config_from_dict(_config(tiny_config, loggers=["csv", "wandb"]))
    with pytest.raises(ValueError, match="log_images_every"):
        config_from_dict(_config(tiny_config, log_images_every=-1))


def test_epoch_line_has_a_whole_run_eta(tiny_config: dict, tmp_path: Path, caplog) -> None:
    cfg = _config(tiny_config, epochs=2)
    with caplog.at_level(logging.INFO, logger="lesionseg"):
        Trainer(config_from_dict(cfg), run_dir=tmp_path / "run", progress=False).fit()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert "ETA " in lines[0] and "min, ~" in lines[0]
    assert lines[-1].endswith("done)")


def test_train_ends_with_a_human_summary_or_json(tiny_config: dict, tmp_path: Path, capsys) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    run = Path(tiny_config["train"]["out_dir"]) / "tiny"
    assert "best epoch" in out and "val Dice per-image" in out and "global" in out
    assert f"lesionseg evaluate --model {run} --native" in out and '"run_dir"' not in out
    assert main(["train", "--config", str(path), "--no-progress", "--overwrite", "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n") :])
    assert summary["run_dir"] == str(run) and summary["best_epoch"] >= 1 and summary["finished"] is True
