"""Cross-validation folds (`train --folds`), out-of-fold files, the summary and find-best, on the tiny blobs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lesionseg.cli import main
from lesionseg.data import load_split
from lesionseg.engine.crossval import fold_state, pooled_scores, summarize_cv
from lesionseg.engine.find_best import Latency, find_best, score_oof


@pytest.fixture
def cv_config(tiny_config, tmp_path) -> Path:
    cfg = {**tiny_config, "train": {**tiny_config["train"], "trust": False}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(cv_config: Path, *extra: str) -> int:
    return main(["train", "--config", str(cv_config), "--folds", "2", "--name", "cv", "--no-progress", *extra])


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folds_train_oof_and_summary(cv_config, blob_split, tmp_path):
    cv = tmp_path / "runs" / "cv"
    assert _train(cv_config, "--fold", "1") == 0
    # only fold 1 trained; both split files written
    assert fold_state(cv / "fold_1") == "finished" and not (cv / "fold_0").exists()
    split = load_split(blob_split)
    folds = [load_split(cv / "splits" / f"fold_{i}.json") for i in range(2)]
    vals = [set(f.val) for f in folds]
    assert vals[0].isdisjoint(vals[1]) and vals[0] | vals[1] == set(split.train) | set(split.val)
    for f in folds:
        assert f.test == split.test and set(f.train) | set(f.val) == set(split.train) | set(split.val)
        assert set(f.train).isdisjoint(f.val)

    oof = np.load(cv / "fold_1" / "oof.npz")
    n = len(folds[1].val)
    assert sorted(oof["ids"].tolist()) == sorted(folds[1].val)
    assert oof["probs"].shape == oof["probs_flip"].shape == oof["truths"].shape == (n, 32, 32)
    assert oof["probs"].dtype == np.float16 and oof["truths"].dtype == np.uint8
    assert oof["probs"].min() >= 0 and oof["probs"].max() <= 1

    before = (cv / "fold_1" / "best.json").stat().st_mtime_ns
    assert _train(cv_config) == 0  # fold 1 skipped (untouched), fold 0 trained
    assert (cv / "fold_1" / "best.json").stat().st_mtime_ns == before
    assert fold_state(cv / "fold_0") == "finished"

    summary = json.loads((cv / "cv_summary.json").read_text())
    assert summary["finished_folds"] == [0, 1]
    rows = _rows(cv / "fold_0" / "oof_scores.csv") + _rows(cv / "fold_1" / "oof_scores.csv")
    assert len(rows) == 10
    expected = float(np.mean([float(r["dice"]) for r in rows]))
    assert summary["oof"]["plain"]["dice_per_image"] == pytest.approx(expected)
    assert summary["oof"]["flip"] == pooled_scores(rows, "_flip")
    assert (cv / "cv_summary.md").is_file()

    # a fold trained by plain `train` (no OOF files): summarize writes them
    (cv / "fold_0" / "oof.npz").unlink()
    (cv / "fold_0" / "oof_scores.csv").unlink()
    assert main(["cv", "summarize", str(cv)]) == 0
    assert (cv / "fold_0" / "oof.npz").is_file() and summarize_cv(cv)["oof"] == summary["oof"]

    # --oof-only trains nothing and rewrites the OOF files of the finished folds
    (cv / "fold_1" / "oof.npz").unlink()
    assert _train(cv_config, "--oof-only") == 0
    assert (cv / "fold_1" / "oof.npz").is_file() and (cv / "fold_1" / "best.json").stat().st_mtime_ns == before
    assert _train(cv_config, "--fold", "2") != 0  # folds are 0..1
    assert main(["train", "--config", str(cv_config), "--fold", "0"]) != 0  # --fold needs --folds

    # find-best on the real folder: every candidate scored, one chosen
    assert main(["cv", "find-best", str(cv), "--out", str(tmp_path / "fb"), "--no-latency"]) == 0
    result = json.loads((tmp_path / "fb" / "find_best.json").read_text())
    assert {c["kind"] for c in result["candidates"]} == {"single", "fold_ensemble"}
    assert result["choice"] is not None


def test_existing_folds_are_checked(cv_config, tmp_path):
    cv = tmp_path / "runs" / "cv"
    assert _train(cv_config, "--fold", "0", "--set", "train.epochs=1") == 0
    other = load_split(cv / "splits" / "fold_0.json")
    moved = other.val[0]
    data = json.loads((cv / "splits" / "fold_0.json").read_text())
    data["val"] = data["val"][1:]
    data["train"] = sorted([*data["train"], moved])
    (cv / "splits" / "fold_0.json").write_text(json.dumps(data))
    assert _train(cv_config, "--fold", "0") != 0


def test_interrupted_fold_is_resumed(cv_config, tmp_path):
    from lesionseg.engine import Trainer
    from lesionseg.engine.config import load_config
    from lesionseg.engine.crossval import CrossValidation

    cfg = load_config(cv_config, ["train.name=cv"])
    cv = CrossValidation.prepare(cfg, 2)
    trainer = Trainer(cv.fold_config(cv_config, [], 0), progress=False)
    trainer.fit(stop_after=1)
    trainer.close()
    assert fold_state(cv.run_dir(0)) == "partial"
    assert _train(cv_config, "--fold", "0") == 0
    assert fold_state(cv.run_dir(0)) == "finished"
    rows = _rows(cv.run_dir(0) / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # resumed, not restarted


def _fake_cv(root: Path, probs: np.ndarray, truths: np.ndarray, flip: np.ndarray | None = None) -> Path:
    ids = np.array([f"c{i}" for i in range(len(truths))])
    for f, part in enumerate(np.array_split(np.arange(len(truths)), 2)):
        (root / f"fold_{f}").mkdir(parents=True)
        np.savez(
            root / f"fold_{f}" / "oof.npz",
            ids=ids[part],
            probs=probs[part].astype(np.float16),
            probs_flip=(probs if flip is None else flip)[part].astype(np.float16),
            truths=truths[part],
        )
    return root


def test_find_best_picks_the_best_within_budget(tmp_path):
    rng = np.random.default_rng(0)
    truths = np.zeros((6, 16, 16), np.uint8)
    truths[:, 4:12, 4:12] = 1
    good = np.clip(truths + rng.normal(0, 0.2, truths.shape), 0, 1)
    noisy = np.clip(truths + rng.normal(0, 0.6, truths.shape), 0, 1)
    a = _fake_cv(tmp_path / "a", good, truths)
    b = _fake_cv(tmp_path / "b", noisy, truths, flip=good)
    fast, slow = Latency(10.0, 20.0, 4.0), Latency(30.0, 80.0, 20.0)
    lat = {str(a): slow, str(b): fast}
    result = find_best([a, b], out=tmp_path, measure=False, latencies=lat)
    scores = {c["name"]: c["dice_per_image"] for c in result["candidates"]}
    assert scores["a fold 0"] == pytest.approx(score_oof(good, truths)[0])
    assert scores["a fold 0"] > scores["b fold 0"]
    best = max(scores.values())
    assert result["choice"]["dice_per_image"] == pytest.approx(best)
    # ties go to more networks: the pooled OOF estimate is the fold ensemble's, not a single fold model's
    assert result["choice"]["kind"] != "single"
    alone = find_best([a], measure=False, latencies=lat)
    assert alone["choice"]["kind"] == "fold_ensemble" and not alone["choice"]["flip"]
    # over budget, the ensemble gives way to its single model
    assert find_best([a], budget_ms=31, measure=False, latencies=lat)["choice"]["name"] == "a fold 0"
    # a budget only b's flip-TTA single model meets (20 ms) and b's flip is as good as a
    tight = find_best([a, b], budget_ms=25, measure=False, latencies=lat)
    assert tight["choice"]["name"] == "b fold 0 + flip"
    assert "estimated" in (tmp_path / "find_best.md").read_text()
    assert find_best([a, b], budget_ms=1, measure=False, latencies=lat)["choice"] is None
    mixed = [c for c in result["candidates"] if c["kind"] == "mixed_ensemble"]
    mean = (good + noisy) / 2
    assert mixed[0]["dice_per_image"] == pytest.approx(score_oof(mean, truths)[0])
    assert mixed[0]["latency_estimated"] and mixed[0]["latency_ms"] == pytest.approx(30 - 20 + 2 * 20 + 2 * 4)


def test_find_best_scores_the_ids_every_folder_covers(tmp_path):
    truths = np.zeros((6, 8, 8), np.uint8)
    truths[:, 2:6, 2:6] = 1
    a = _fake_cv(tmp_path / "a", truths.astype(float), truths)
    b = _fake_cv(tmp_path / "b", truths.astype(float), truths)
    for name in ("fold_1",):
        (b / name / "oof.npz").unlink()
    result = find_best([a, b], measure=False)
    assert result["images"] == 3 and result["ids_left_out"] == ["c3", "c4", "c5"]
