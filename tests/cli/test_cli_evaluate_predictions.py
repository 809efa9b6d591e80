"""``evaluate --predictions``: a folder of masks scored like a checkpoint; on predict's masks, the very same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionseg.cli import main
from lesionseg.engine import evaluate_predictions
from lesionseg.engine.evaluator import match_predictions, read_prediction_mask

SAME = ("per_image.csv", "subgroups.csv")


def _same_evaluation(a: Path, b: Path) -> None:
    for name in SAME:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    assert ma["results"] == mb["results"]  # to the last digit
    assert ma["resolution"].startswith("native resolution") and mb["resolution"] == "native resolution"


def test_predict_masks_reproduce_evaluate_checkpoint_native(trained: Path, blob_root: Path, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    common = ["--split", "none"]
    assert main(["predict", "--model", str(trained / "best"), "--data-root", str(blob_root), *common, "--subset", "all",
                 "--out", str(masks), "--no-progress", "-q"]) == 0  # fmt: skip
    written = sorted(masks.glob("*_mask.png"))
    assert len(written) == 12 and any(read_prediction_mask(p).any() for p in written)  # not all empty
    by_ckpt, by_masks = tmp_path / "ckpt", tmp_path / "pred"
    assert main(["evaluate", "--model", str(trained), "--data-root", str(blob_root), "--native", *common,
                 "--out", str(by_ckpt), "--no-progress"]) == 0  # fmt: skip
    assert main(["evaluate", "--predictions", str(masks), "--data-root", str(blob_root), *common,
                 "--out", str(by_masks), "--no-progress"]) == 0  # fmt: skip
    _same_evaluation(by_ckpt, by_masks)
    assert json.loads((by_masks / "metrics.json").read_text())["predictions"]["missing"] == []


@pytest.mark.data
def test_skin_model_masks_on_ph2_test_ids_reproduce_evaluate_checkpoint(ph2_root: Path, tmp_path: Path) -> None:
    masks, by_ckpt, by_masks = tmp_path / "masks", tmp_path / "ckpt", tmp_path / "pred"
    split = ["--split", "ph2", "--subset", "test"]
    assert main(["predict", "--data-root", str(ph2_root), *split, "--backend", "torch", "--out", str(masks),
                 "--no-overlay", "-q", "--no-progress"]) == 0  # fmt: skip
    assert main(["evaluate", "--model", "skin", "--data-root", str(ph2_root), *split, "--native",
                 "--out", str(by_ckpt), "--no-progress"]) == 0  # fmt: skip
    assert main(["evaluate", "--predictions", str(masks), "--data-root", str(ph2_root), *split,
                 "--out", str(by_masks), "--no-progress"]) == 0  # fmt: skip
    _same_evaluation(by_ckpt, by_masks)
    assert len((by_masks / "per_image.csv").read_text().splitlines()) == 31  # the 30 test ids


def _mask(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_folder_of_foreign_masks_lists_missing_extra_and_bad_files(blob_root: Path, tmp_path: Path, capsys) -> None:
    ids = sorted(p.stem for p in (blob_root / "images").iterdir())
    truth = {i: np.asarray(Image.open(next((blob_root / "masks").glob(f"{i}.*"))).convert("L")) > 0 for i in ids}
    folder = tmp_path / "foreign"
    folder.mkdir()
    _mask(folder / f"{ids[0]}.png", truth[ids[0]] * 255)  # 0/255, named by id: Dice 1
    _mask(folder / f"{ids[1]}_mask.bmp", truth[ids[1]] * 1)  # 0/1 BMP, predict's name
    Image.fromarray((truth[ids[2]] * 255).astype(np.uint8)).save(folder / f"{ids[2]}_segmentation.jpg", quality=95)
    _mask(folder / f"{ids[3]}.png", np.zeros((5, 7)))  # another size than the truth
    _mask(folder / f"{ids[4]}.png", np.arange(truth[ids[4]].size).reshape(truth[ids[4]].shape) % 7)  # not binary
    _mask(folder / f"{ids[5]}.png", truth[ids[5]] * 255)
    _mask(folder / f"{ids[5]}_mask.png", truth[ids[5]] * 255)  # two files for one id
    _mask(folder / "not_a_case.png", truth[ids[0]] * 255)
    _mask(folder / f"{ids[0]}_overlay.png", truth[ids[0]] * 255)  # predict's overlay: not a mask, not listed
    ev = evaluate_predictions(folder, blob_root, include_hd95=False)
    rows = {r["id"]: r for r in ev.metrics.per_image_table()}
    assert sorted(rows) == ids[:3]
    assert all(float(r["dice"]) == pytest.approx(1.0, abs=0.02) for r in rows.values())
    files = ev.predictions
    assert files.missing == ids[6:]
    assert [p.name for p in files.extra] == ["not_a_case.png"]
    reasons = {case_id: reason for case_id, _, reason in files.problems}
    assert set(reasons) == {ids[3], ids[4], ids[5]}
    assert "differs from the ground truth" in reasons[ids[3]] and "7x5" in reasons[ids[3]]
    assert "not a binary mask" in reasons[ids[4]]
    assert "several masks" in reasons[ids[5]]
    assert f"3 with a usable prediction, {len(ids) - 3} left out" in ev.cases
    # the command line lists them and writes them into metrics.json
    out = tmp_path / "out"
    args = ["evaluate", "--predictions", str(folder), "--data-root", str(blob_root), "--out", str(out)]
    assert main([*args, "--no-progress", "--no-hd95"]) == 0
    err = capsys.readouterr().err
    assert f"{len(ids) - 6} case(s) without a prediction" in err and "not_a_case.png" in err
    saved = json.loads((out / "metrics.json").read_text())["predictions"]
    assert saved["scored"] == 3 and saved["extra"] == ["not_a_case.png"] and len(saved["problems"]) == 3


def test_predictions_refuse_what_they_cannot_use(blob_root: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "--predictions", str(empty), "--data-root", str(blob_root), "--no-progress"]) == 1
    assert "no predicted mask could be scored" in capsys.readouterr().err
    assert main(["evaluate", "--predictions", str(empty), "--no-progress"]) == 2  # a usage error
    assert "needs --data-root" in capsys.readouterr().err
    args = ["evaluate", "--predictions", str(empty), "--data-root", str(blob_root), "--tta"]
    assert main(args) == 2
    assert "--tta steer a model" in capsys.readouterr().err
    assert main(["evaluate", "--predictions", str(empty), "--model", "skin", "--data-root", str(blob_root)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["evaluate", "--no-progress"]) == 2
    with pytest.raises(FileNotFoundError, match="no such folder"):
        match_predictions(tmp_path / "nowhere", ["a"])
