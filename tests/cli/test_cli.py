"""CLI smoke: train -> evaluate (split, other root, native) -> predict -> models -> data, in-process."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from lesionseg.cli import main


def test_train_refuses_to_overwrite_and_resumes(trained, tiny_config, tmp_path, capsys):
    cfg_path = tmp_path / "tiny.yaml"
    assert main(["train", "--config", str(cfg_path), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (
        main(["train", "--resume", str(trained), "--set", "train.epochs=2", "train.val_every=1", "--no-progress"]) == 0
    )
    assert '"epochs": 2' in capsys.readouterr().out


def test_evaluate_prints_both_reductions(trained, capsys, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(trained / "best"), "--out", str(out), "--no-progress"]) == 0
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
    assert main(["evaluate", "--checkpoint", str(trained), "--data-root", str(other), "--native", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "0 split test ids + 3 ids not in the split" in text
    assert "native resolution" in text


def test_predict_writes_masks_at_image_size(trained, blob_root, tmp_path):
    image = blob_root / "images" / "case000.png"
    big = tmp_path / "big.jpg"
    Image.open(image).resize((75, 50)).convert("RGB").save(big)
    out = tmp_path / "pred"
    assert main(["predict", str(big), str(blob_root / "images"), "--checkpoint", str(trained), "--out", str(out)]) == 0
    mask = np.asarray(Image.open(out / "big_mask.png"))
    assert mask.shape == (50, 75)
    assert set(np.unique(mask)) <= {0, 255}
    assert (out / "big_overlay.png").is_file()
    assert len(list(out.glob("case*_mask.png"))) == 12


def test_predict_missing_input(trained, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.png"), "--checkpoint", str(trained)]) == 2
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
    out = tmp_path / "s.json"
    assert main(["data", "split", str(blob_root), "--out", str(out), "--seed", "3"]) == 0
    split = json.loads(out.read_text())
    assert len(split["test"]) + len(split["val"]) + len(split["train"]) == 12


def test_bad_config_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    assert main(["train", "--config", str(bad)]) == 1
    assert "unknown key" in capsys.readouterr().err
