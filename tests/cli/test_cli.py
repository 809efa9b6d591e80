"""CLI smoke: train -> evaluate (split, other root, native) -> predict -> models -> data, in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from lesionseg.cli import main
from lesionseg.data import SegmentationDataset


def test_train_refuses_to_overwrite_and_resumes(trained, tiny_config, tmp_path, capsys):
    cfg_path = tmp_path / "tiny.yaml"
    assert main(["train", "--config", str(cfg_path), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (
        main(["train", "--resume", str(trained), "--set", "train.epochs=2", "train.val_every=1", "--no-progress"]) == 0
    )
    assert "trained 2 epoch(s)" in capsys.readouterr().out


def test_evaluate_prints_both_reductions(trained, capsys, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(trained / "best"), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "global" in text and "per-image" in text
    assert "2 split test ids + 0 ids not in the split" in text
    result = json.loads((out / "metrics.json").read_text())
    assert set(result["results"]) >= {"global", "per_image"}
    assert (out / "per_image.csv").read_text().count("\n") == 3


def test_evaluate_other_root_counts_unknown_ids(trained, tmp_path, capsys, make_blobs):
    other = make_blobs(tmp_path / "other", n=3, seed=5)
    for i, p in enumerate(sorted((other / "images").iterdir())):
        p.rename(other / "images" / f"new{i}.png")
    for i, p in enumerate(sorted((other / "masks").iterdir())):
        p.rename(other / "masks" / f"new{i}.png")
    assert main(["evaluate", "--model", str(trained), "--data-root", str(other), "--native", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "0 split test ids + 3 ids not in the split" in text
    assert "native resolution" in text


def test_predict_writes_masks_at_image_size(trained, blob_root, tmp_path):
    image = blob_root / "images" / "case000.png"
    big = tmp_path / "big.jpg"
    Image.open(image).resize((75, 50)).convert("RGB").save(big)
    out = tmp_path / "pred"
    assert main(["predict", str(big), str(blob_root / "images"), "--model", str(trained), "--out", str(out)]) == 0
    mask = np.asarray(Image.open(out / "big_mask.png"))
    assert mask.shape == (50, 75)
    assert set(np.unique(mask)) <= {0, 255}
    assert (out / "big_overlay.png").is_file()
    assert len(list(out.glob("case*_mask.png"))) == 12


def test_predict_missing_input(trained, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.png"), "--model", str(trained)]) == 2
    assert "nope.png" in capsys.readouterr().err


def test_models_lists_registry(capsys):
    assert main(["models", "unet_small", "--flops", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "unet_small" in out and "1.943" in out and "0.190" in out  # 3.032 GMACs at 256 / 16
    assert main(["models", "no_such_*"]) == 2


def test_data_check_and_split(blob_root, tmp_path, capsys):
    assert main(["data", "check", str(blob_root)]) == 0
    (blob_root / "images" / "case003.png").write_bytes(b"not an image")
    assert main(["data", "check", str(blob_root)]) == 1
    assert "case003.png" in capsys.readouterr().out
    (blob_root / "images" / "case003.png").unlink()
    (blob_root / "masks" / "case003.png").unlink()
    out = tmp_path / "s.json"
    assert main(["data", "split", str(blob_root), "--out", str(out), "--seed", "3"]) == 0
    split = json.loads(out.read_text())
    parts = [set(split[k]) for k in ("train", "val", "test")]
    ids = {f"case{i:03d}" for i in range(12)} - {"case003"}
    assert set.union(*parts) == ids and sum(map(len, parts)) == len(ids)  # a partition of the ids on disk
    assert (len(split["test"]), len(split["val"])) == (round(0.2 * 11), round(0.1 * 11))
    assert split["info"]["seed"] == 3 and split["info"]["stratified_by"] is None
    again = tmp_path / "again.json"
    assert main(["data", "split", str(blob_root), "--out", str(again), "--seed", "3"]) == 0
    assert json.loads(again.read_text()) == split
    assert main(["data", "split", str(blob_root), "--out", str(again), "--stratify", "diagnosis"]) == 1


def _ph2_root(root, diagnoses):
    base = root / "PH2Dataset"
    for cid, d in diagnoses.items():
        case = base / "PH2 Dataset images" / cid
        (case / f"{cid}_Dermoscopic_Image").mkdir(parents=True)
        (case / f"{cid}_lesion").mkdir()
        Image.new("RGB", (10, 8), (d * 60, 0, 0)).save(case / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp")
        Image.new("L", (10, 8), 255).save(case / f"{cid}_lesion" / f"{cid}_lesion.bmp")
    rows = ["Name\tClinical Diagnosis"] + [f"{c}\t{d}" for c, d in diagnoses.items()]
    (base / "PH2_dataset.txt").write_text("\n".join(rows) + "\n")
    return root


def test_data_split_stratified_by_diagnosis(tmp_path):
    diagnoses = {f"IMD{i:03d}": 0 if i < 10 else (1 if i < 16 else 2) for i in range(20)}  # 10 / 6 / 4
    root = _ph2_root(tmp_path / "ph2", diagnoses)
    out = tmp_path / "s.json"
    args = ["data", "split", str(root), "--out", str(out), "--stratify", "diagnosis", "--test-fraction", "0.25"]
    assert main(args + ["--val-fraction", "0.2"]) == 0
    split = json.loads(out.read_text())
    assert split["info"]["stratified_by"] == "diagnosis"
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(diagnoses)

    def per_class(ids):
        return [sum(diagnoses[i] == d for i in ids) for d in (0, 1, 2)]

    # every class keeps its share in test: round(0.25 * n) of each (10 -> 2 or 3, 6 -> 2, 4 -> 1)
    assert per_class(split["test"]) in ([2, 2, 1], [3, 2, 1])
    assert all(v >= 1 for v in per_class(split["val"]))  # and in validation


def test_bad_config_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    assert main(["train", "--config", str(bad)]) == 1
    assert "unknown key" in capsys.readouterr().err


def test_data_check_names_every_broken_case_without_a_traceback(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    try:
        from test_data_check import build_broken
    finally:
        sys.path.pop(0)
    expected = build_broken(tmp_path / "broken")
    assert main(["data", "check", str(tmp_path / "broken"), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = captured.out.splitlines()
    for cid, kind in expected.items():
        assert any(kind in line and cid in line for line in lines), (cid, kind)
    assert "7 error(s), 1 warning(s), 1 note(s)" in lines[-1]
    assert main(["data", "check", str(tmp_path / "broken"), "--json", "--no-progress"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert sorted((p["case_id"], p["kind"]) for p in report["problems"]) == sorted(expected.items())
    assert report["counts"]["unreadable"] == 3
    # a lower pixel limit refuses the good images too, with the limit in the message
    assert main(["data", "check", str(tmp_path / "broken"), "--max-pixels", "100", "--json", "--no-progress"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert any(p["case_id"] == "good" and "limit of 100 pixels" in p["message"] for p in report["problems"])


def _corrupt(path):
    path.write_bytes(path.read_bytes()[:40])


def test_train_refuses_bad_files_or_skips_them(tiny_config, blob_root, tmp_path, capsys):
    _corrupt(blob_root / "images" / "case002.png")
    (blob_root / "masks" / "case008.png").unlink()
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", "--config", str(cfg_path), "--set", "train.epochs=1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "case002.png" in err and "case008.png" in err and f"lesionseg data check {blob_root}" in err
    args = ["train", "--config", str(cfg_path), "--set", "train.epochs=1", "--no-progress", "--skip-bad"]
    assert main(args) == 0
    skipped = json.loads((tmp_path / "runs" / "tiny" / "skipped.json").read_text())
    assert skipped["cases"] == ["case002", "case008"]


def test_evaluate_refuses_bad_test_files_or_skips_them(trained, blob_root, tmp_path, capsys):
    _corrupt(blob_root / "images" / "case011.png")  # a test id
    assert main(["evaluate", "--model", str(trained), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "case011.png" in err and "Traceback" not in err
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(trained), "--no-progress", "--skip-bad", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1 split test ids + 0 ids not in the split (1 skipped for unusable files)" in captured.out
    assert "case011.png" in captured.err
    assert json.loads((out / "skipped.json").read_text())["cases"] == ["case011"]
    assert (out / "per_image.csv").read_text().count("\n") == 2


def test_evaluate_tta_at_working_size(trained, capsys):
    from lesionseg.data import select_cases
    from lesionseg.engine import evaluate_checkpoint, load_model

    plain = evaluate_checkpoint(trained, tta=False)
    tta = evaluate_checkpoint(trained, tta=True)
    assert "flip TTA" in tta.title and "flip TTA" not in plain.title
    # recompute the flip-averaged prediction by hand for each test case
    model, record = load_model(trained / "best")
    model.eval()
    cases, _ = select_cases(record.dataset.root, record.dataset.layout, record.dataset.split)
    ds = SegmentationDataset(cases, size=record.image_size, mean=record.mean, std=record.std)
    rows = {r["id"]: r for r in tta.metrics.per_image_table()}
    differs = False
    with torch.no_grad():
        for x, y, cid in (ds[i] for i in range(len(ds))):
            x = x[None]
            logits = (model(x) + model(x.flip(-1)).flip(-1) + model(x.flip(-2)).flip(-2)) / 3
            pred = (torch.sigmoid(logits) > record.threshold).float()
            inter, total = float((pred * y).sum()), float(pred.sum() + y.sum())
            dice = 2 * inter / total if total else 1.0
            assert abs(float(rows[cid]["dice"]) - dice) < 1e-6, cid
            plain_pred = (torch.sigmoid(model(x)) > record.threshold).float()
            differs |= not torch.equal(plain_pred, pred)
    assert differs or plain.results() == tta.results()
