"""`lesionseg predict` with the shipped model, bad files named while the rest go on; `export`; `models --pretrained`."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionseg.cli import main


def bomb_png(path):
    """A small PNG that declares 30000 x 30000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 300010))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def mixed_folder(blob_root, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((blob_root / "images").iterdir())[:3]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(good[0].read_bytes()[:200])
    (folder / "text.jpg").write_text("not an image")
    bomb_png(folder / "bomb.png")
    return folder, [p.stem for p in good]


def test_predict_default_model_processes_good_files_and_names_bad_ones(mixed_folder, tmp_path, capsys):
    folder, good = mixed_folder
    out = tmp_path / "pred"
    rc = main(["predict", str(folder), "--out", str(out), "--pixel-size", "0.01", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1  # some inputs failed
    for name in ("empty.png", "truncated.png", "text.jpg", "bomb.png"):
        assert f"FAILED {folder / name}" in captured.err
    assert "7 inputs: 3 segmented, 4 failed" in captured.out
    assert "model skin (sc_unext" in captured.out
    for stem in good:
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == (40, 40) and set(np.unique(mask)) <= {0, 255}
        assert (out / f"{stem}_overlay.png").is_file()
    rows = list(csv.DictReader((out / "measurements.csv").open()))
    assert [r["image"] for r in rows] == [str(folder / f"{s}.png") for s in good]
    for r in rows:
        assert float(r["area_mm2"]) == pytest.approx(float(r["area"]) * 1e-4, abs=1e-4)
    report = json.loads((out / "measurements.json").read_text())
    assert {f["path"] for f in report["failures"]} == {
        str(folder / n) for n in ("empty.png", "truncated.png", "text.jpg", "bomb.png")
    }
    assert report["model"]["pretrained"] == "skin" and report["pixel_size_mm"] == 0.01


def test_predict_glob_and_missing_inputs(mixed_folder, tmp_path, capsys):
    folder, good = mixed_folder
    out = tmp_path / "pred"
    assert main(["predict", str(folder / "case*.png"), "--out", str(out), "--no-progress", "-q"]) == 0
    assert "3 inputs: 3 segmented, 0 failed" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "nope*.png"), str(tmp_path / "nope.png")]) == 2
    err = capsys.readouterr().err
    assert "pattern matches no file" in err and "no such file or folder" in err


def test_predict_dataset_scores_against_ground_truth(trained, blob_root, blob_split, tmp_path, capsys):
    out = tmp_path / "pred"
    args = ["predict", "--data-root", str(blob_root), "--split", str(blob_split), "--model", str(trained)]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "2 cases of" in text and "Dice vs ground truth (2 images" in text
    rows = list(csv.DictReader((out / "measurements.csv").open()))
    assert len(rows) == 2 and all(0 <= float(r["dice"]) <= 1 for r in rows)
    report = json.loads((out / "measurements.json").read_text())
    assert report["dice_per_image"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]), abs=1e-5)


def test_export_writes_onnx_and_record(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", "--onnx", str(out), "--model", str(trained)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["model"] == "unet_small" and record["image_size"] == [32, 32] and "state" not in record
    assert out.stat().st_size > 1000


def test_models_pretrained_lists_shipped_models(capsys):
    assert main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "skin" in out and "polyp" in out and "sc_unext" in out


def test_predict_writes_probabilities_and_says_how_far_to_trust_each_mask(mixed_folder, tmp_path, capsys):
    folder, good = mixed_folder
    out = tmp_path / "pred"
    image = folder / f"{good[0]}.png"
    black = tmp_path / "white.png"
    Image.fromarray(np.full((30, 50, 3), 255, np.uint8)).save(black)
    rc = main(["predict", str(image), str(black), "--out", str(out), "--save-probabilities", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    prob = np.asarray(Image.open(out / f"{good[0]}_prob.png"))
    assert prob.dtype == np.uint16 and prob.shape == (40, 40)  # 16-bit, the image's own size
    mask = np.asarray(Image.open(out / f"{good[0]}_mask.png")) > 0
    # The mask is the probability map cut at the model's threshold carried to its temperature.
    from lesionseg.inference import Predictor

    predictor = Predictor.from_pretrained("skin")
    agree = (prob.astype(np.float64) / 65535 > predictor.prob_threshold) == mask
    assert agree.mean() > 0.99
    rows = {Path(r["image"]).name: r for r in json.loads((out / "measurements.json").read_text())["images"]}
    first, dark = rows[image.name], rows["white.png"]
    assert 0 < first["predicted_dice"] < 1 and isinstance(first["out_of_distribution"], bool)
    assert dark["lesion_found"] is False and "no lesion found" in dark["notes"]
    # Blobs and a white frame look nothing like dermoscopy: flagged, in the table in words.
    assert first["out_of_distribution"] and dark["out_of_distribution"]
    assert "unlike the training images" in text and "no lesion found" in text and "pred Dice" in text
    header = next(csv.reader((out / "measurements.csv").open()))
    assert {"probability", "predicted_dice", "low_confidence", "ood_score", "out_of_distribution", "notes"} <= set(
        header
    )
