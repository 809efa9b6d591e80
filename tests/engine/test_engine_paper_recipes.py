"""The papers' configs run as shipped: the split they reference is drawn on first use; SC-UNeXt's recipe end to end
on an ISIC 2018 Task 1 layout (tiny blobs) with a small override, then evaluated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lesionseg.cli import main
from lesionseg.data.isic import ISIC_SUBSETS
from lesionseg.engine.config import load_config

REPO = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = sorted((REPO / "configs").glob("*_paper.yaml"))


def _isic2018(root: Path, blobs: Path, n_train: int, n_val: int) -> Path:
    """ISIC 2018 Task 1 folders (training and validation subsets) holding the blob images and masks."""
    names = sorted(p.name for p in (blobs / "images").iterdir())
    subsets = {s: (inputs, truth, suffix) for s, inputs, truth, suffix in ISIC_SUBSETS["isic2018"]}
    for k, name in enumerate(names[: n_train + n_val]):
        inputs, truth, suffix = subsets["train" if k < n_train else "val"]
        cid = f"ISIC_{1000 + k:07d}"
        (root / inputs).mkdir(parents=True, exist_ok=True)
        (root / truth).mkdir(parents=True, exist_ok=True)
        shutil.copy(blobs / "images" / name, root / inputs / f"{cid}.png")
        shutil.copy(blobs / "masks" / name, root / truth / f"{cid}{suffix}.png")
    return root


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_every_paper_config_draws_its_missing_split(path: Path):
    cfg = load_config(path)
    assert cfg.data.split.endswith(".json") and cfg.data.draw_split is not None
    assert cfg.data.draw_split.subsets  # drawn among the official training images, never the challenge test set


def test_sc_unext_paper_recipe_end_to_end(tmp_path, make_blobs, capsys, monkeypatch):
    root = _isic2018(tmp_path / "isic2018", make_blobs(tmp_path / "blobs", n=22, size=32), n_train=20, n_val=2)
    monkeypatch.chdir(tmp_path)  # the config's relative split path lands here
    overrides = [f"data.root={root}", "data.image_size=[32,32]", "data.batch_size=4", "train.epochs=1"]
    overrides += ["train.threads=1", f"train.out_dir={tmp_path / 'runs'}"]
    config = str(REPO / "configs" / "sc_unext_paper.yaml")
    assert main(["train", "--config", config, "--set", *overrides, "--no-progress"]) == 0
    err = capsys.readouterr().err  # a log record, on stderr like every other
    assert "splits/isic2018_8020_seed0.json did not exist: drew it from 20 cases" in err
    split = json.loads((tmp_path / "splits/isic2018_8020_seed0.json").read_text())
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (14, 2, 4)
    assert not {"ISIC_0001020", "ISIC_0001021"} & {i for part in ("train", "val", "test") for i in split[part]}
    run = tmp_path / "runs" / "sc_unext_paper"
    record = json.loads((run / "best.json").read_text())
    assert record["model"] == "sc_unext" and record["config"]["optim"]["scheduler"] == "cosine"
    # the second run reads the stored split back instead of drawing again
    assert main(["train", "--config", config, "--set", *overrides, "--overwrite", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "did not exist" not in captured.out + captured.err
    assert main(["evaluate", "--model", str(run), "--no-hd95", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "sc_unext on 6 cases" in out and "4 split test ids + 2 ids not in the split" in out


def test_missing_split_without_draw_names_the_command(tmp_path, make_blobs, capsys, monkeypatch):
    root = _isic2018(tmp_path / "isic2018", make_blobs(tmp_path / "blobs", n=6, size=32), n_train=6, n_val=0)
    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs" / "vmunet_paper.yaml")
    overrides = [f"data.root={root}", "data.layout=isic2018", "data.draw_split=null"]
    code = main(["train", "--config", config, "--set", *overrides])
    assert code == 1
    err = capsys.readouterr().err
    assert "splits/isic2017_7030_seed0.json: no such split file" in err and "lesionseg data split" in err
