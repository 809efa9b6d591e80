"""Issue 25's sharp edges through the command line: tables over several runs into one folder, a full disk, resuming
from a mixed or damaged checkpoint, a record without its training split, a local file named like a shipped tag."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from lesionseg.cli import main
from lesionseg.engine import evaluate_checkpoint
from lesionseg.models.hub import pretrained_stem


def _images(blob_root: Path, folder: Path, names: slice) -> list[str]:
    folder.mkdir(exist_ok=True)
    out = []
    for p in sorted((blob_root / "images").iterdir())[names]:
        shutil.copyfile(p, folder / p.name)
        out.append(str(folder / p.name))
    return out


def _table(out: Path) -> list[str]:
    with open(out / "measurements.csv", newline="") as f:
        return sorted(Path(r["image"]).name for r in csv.DictReader(f))


def test_a_second_predict_into_the_same_folder_keeps_the_tables_whole(trained, blob_root, tmp_path, capsys):
    first = _images(blob_root, tmp_path / "a", slice(0, 2))
    second = _images(blob_root, tmp_path / "b", slice(1, 3))
    out = tmp_path / "pred"
    ckpt = str(trained / "best")
    assert main(["predict", *first, "--model", ckpt, "--out", str(out), "--no-progress", "-q"]) == 0
    # The second run redoes one image of the first (same name, another folder: a file of its own) and adds one.
    assert main(["predict", *second, "--model", ckpt, "--out", str(out), "--no-progress", "-q"]) == 0
    assert "with 2 image(s) of earlier runs" in capsys.readouterr().out
    names = [Path(p).name for p in first + second]
    assert _table(out) == sorted(names)
    data = json.loads((out / "measurements.json").read_text())
    masks = [r["mask"] for r in data["images"]]
    assert len(set(masks)) == 4 and all(Path(m).is_file() for m in masks)
    assert sorted(p.name for p in out.glob("*_mask.png")) == sorted(Path(m).name for m in masks)
    # Rerunning an image replaces its row and its files.
    assert main(["predict", second[1], "--model", ckpt, "--out", str(out), "--no-progress", "-q"]) == 0
    assert _table(out) == sorted(names)


def test_predict_refuses_to_mix_models_in_one_folder_unless_overwrite(trained, blob_root, tmp_path, capsys):
    images = _images(blob_root, tmp_path / "a", slice(0, 2))
    out = tmp_path / "pred"
    ckpt = str(trained / "best")
    assert main(["predict", images[0], "--model", ckpt, "--out", str(out), "--no-progress", "-q"]) == 0
    capsys.readouterr()
    rc = main(["predict", images[1], "--model", ckpt, "--threshold", "0.3", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "holds predictions of another run (its threshold differ" in err and "--overwrite" in err
    assert _table(out) == [Path(images[0]).name]
    rc = main(["predict", images[1], "--model", ckpt, "--threshold", "0.3", "--out", str(out), "--overwrite", "-q"])
    assert rc == 0 and _table(out) == [Path(images[1]).name]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"{Path(images[1]).stem}_{kind}.png" for kind in ("mask", "overlay")
    )


def test_predict_onto_a_full_disk_names_the_file_prints_the_summary_and_leaves_nothing_partial(
    trained, blob_root, tmp_path, capsys, monkeypatch
):
    images = _images(blob_root, tmp_path / "a", slice(0, 2))
    out = tmp_path / "pred"
    real_open = open

    def full_open(file, mode="r", *args, **kwargs):
        name = str(file)
        if "w" in mode and ("overlay" in name or "measurements" in name):
            f = real_open(file, mode, *args, **kwargs)
            f.write(b"\x89PNG" if "b" in mode else "image")  # the start of the file, then the disk is full
            f.close()
            raise OSError(28, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_open)
    rc = main(["predict", *images, "--model", str(trained / "best"), "--out", str(out), "--no-progress", "-q"])
    captured = capsys.readouterr()
    assert rc == 1 and "Traceback" not in captured.err
    assert "_overlay.png: could not write (No space left on device)" in captured.err
    assert "measurements.csv: could not write (No space left on device)" in captured.err
    assert "2 inputs: 0 segmented, 2 failed" in captured.out
    # No partial file: neither the half-written overlays nor any temporary name nor a table.
    assert not [p.name for p in out.iterdir() if "overlay" in p.name or "tmp" in p.name or "measurements" in p.name]


def _cfg_file(tiny_config: dict, tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    return path


def test_resume_refuses_files_of_two_epochs_and_says_how_to_go_on(tiny_config, tmp_path, capsys):
    cfg = _cfg_file(tiny_config, tmp_path)
    run = tmp_path / "runs" / "tiny"
    assert main(["train", "--config", str(cfg), "--set", "train.epochs=1", "--no-progress"]) == 0
    epoch1 = {p.name: p.read_bytes() for p in run.glob("last.*")}
    assert main(["train", "--resume", str(run), "--set", "train.epochs=2", "--no-progress"]) == 0
    # A kill between the renames of epoch 2: epoch 1's record and state beside epoch 2's weights.
    for name in ("last.json", "last.state.safetensors"):
        (run / name).write_bytes(epoch1[name])
    capsys.readouterr()
    rc = main(["train", "--resume", str(run), "--set", "train.epochs=3", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "last.safetensors: does not belong to last.json" in err
    assert f"lesionseg train --config {run / 'config.yaml'} --overwrite" in err
    assert f"lesionseg evaluate --checkpoint {run / 'best'}" in err
    # A truncated state file: refused the same way.
    (run / "last.safetensors").write_bytes(epoch1["last.safetensors"])
    (run / "last.state.safetensors").write_bytes(epoch1["last.state.safetensors"][:100])
    rc = main(["train", "--resume", str(run), "--set", "train.epochs=3", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "last.state.safetensors: does not belong to last.json" in err


def test_train_onto_a_full_disk_names_the_file_and_leaves_no_partial_checkpoint(
    tiny_config, tmp_path, capsys, monkeypatch
):
    import safetensors.torch

    def disk_full(tensors, path):
        Path(path).write_bytes(b"\0" * 8)
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    cfg = _cfg_file(tiny_config, tmp_path)
    rc = main(["train", "--config", str(cfg), "--set", "train.epochs=1", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1 and "Traceback" not in captured.err
    assert "best.safetensors: could not write (Error while serializing" in captured.err
    assert "trained 1 epoch(s)" in captured.out  # the summary of what ran
    run = tmp_path / "runs" / "tiny"
    assert not list(run.glob("*.tmp")) and not list(run.glob("*.safetensors"))


def test_evaluate_of_a_record_without_its_split_refuses_to_score_unknown_ids(trained, blob_root):
    record = trained / "best.json"
    data = json.loads(record.read_text())
    del data["dataset"]
    record.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="names no training split.*--split none"):
        evaluate_checkpoint(trained / "best", data_root=blob_root, include_hd95=False)
    everything = evaluate_checkpoint(trained / "best", data_root=blob_root, split=None, include_hd95=False)
    assert everything.cases.startswith("all ")


def test_a_local_file_named_like_the_tag_does_not_hide_the_shipped_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # What `lesionseg export --onnx skin.onnx --model skin` leaves in the folder: skin.onnx and skin.json.
    Path("skin.json").write_text(pretrained_stem("skin").with_suffix(".json").read_text())
    Path("skin.onnx").write_bytes(b"onnx")
    image = Image.new("RGB", (64, 48), (200, 150, 130))
    image.save("x.png")
    assert main(["predict", "x.png", "--no-progress", "-q"]) == 0
    assert "model skin (sc_unext" in capsys.readouterr().out
