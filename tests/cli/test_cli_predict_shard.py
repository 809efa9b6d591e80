"""``predict --shard I/N`` and ``--resume``: slices and resumed calls leave what one call would, table included."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lesionseg.cli import main
from lesionseg.inference import Predictor
from lesionseg.inference.files import parse_shard, segment_files


def _predict(trained: Path, images: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(images), "--model", str(trained / "best"), "--out", str(out), "-q", *extra])


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "measurements.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # the folder's name aside
        for key in ("mask", "overlay", "probability"):
            if row.get(key):
                row[key] = Path(row[key]).name
    return rows


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def test_slices_into_one_folder_equal_one_call(trained: Path, blob_root: Path, tmp_path: Path, capsys) -> None:
    images = blob_root / "images"
    assert _predict(trained, images, tmp_path / "one") == 0
    capsys.readouterr()
    for i in (2, 1, 3):  # in any order
        assert _predict(trained, images, tmp_path / "sliced", "--shard", f"{i}/3") == 0
        assert f"4 inputs (slice {i}/3): 4 segmented" in capsys.readouterr().out
    assert _outputs(tmp_path / "sliced") == _outputs(tmp_path / "one")
    assert _table(tmp_path / "sliced") == _table(tmp_path / "one")  # the same rows in the same order
    sliced = json.loads((tmp_path / "sliced" / "measurements.json").read_text())
    assert len(sliced["images"]) == 12


def test_slices_at_the_same_time_lose_no_row(trained: Path, blob_root: Path, tmp_path: Path) -> None:
    """Two slices whose tables are rewritten while the other runs (every image here): the lock and the merge keep
    every row, whichever writes last."""
    predictor = Predictor.from_checkpoint(trained / "best")
    paths = sorted((blob_root / "images").iterdir())
    out = tmp_path / "out"
    original = predictor.predict
    other: list[int] = []

    def predict_and_let_the_other_slice_write(images):  # slice 2 runs in the middle of slice 1
        if not other:
            other.append(1)
            segment_files(Predictor.from_checkpoint(trained / "best"), paths, out, shard=(2, 2), table_every=0)
        return original(images)

    predictor.predict = predict_and_let_the_other_slice_write  # type: ignore[method-assign]
    segment_files(predictor, paths, out, shard=(1, 2), table_every=0)
    assert [Path(r["image"]) for r in json.loads((out / "measurements.json").read_text())["images"]] == paths


def test_resume_redoes_only_what_is_not_whole(trained: Path, blob_root: Path, tmp_path: Path) -> None:
    predictor = Predictor.from_checkpoint(trained / "best")
    paths = sorted((blob_root / "images").iterdir())
    out = tmp_path / "out"
    first = segment_files(predictor, paths, out)
    before, table = _outputs(out), _table(out)
    names = [Path(r["mask"]).name.removesuffix("_mask.png") for r in first.rows]
    (out / f"{names[0]}_mask.png").unlink()  # gone
    (out / f"{names[1]}_overlay.png").write_bytes((out / f"{names[1]}_overlay.png").read_bytes()[:40])  # truncated
    data = json.loads((out / "measurements.json").read_text())  # killed before its row reached the table
    data["images"] = [r for r in data["images"] if Path(r["mask"]).name != f"{names[2]}_mask.png"]
    (out / "measurements.json").write_text(json.dumps(data))
    calls = []
    original = predictor.predict
    predictor.predict = lambda images: calls.append(1) or original(images)  # type: ignore[method-assign]
    again = segment_files(predictor, paths, out, resume=True)
    assert len(calls) == 3 and again.resumed == len(paths) - 3
    assert _outputs(out) == before and _table(out) == table
    calls.clear()
    assert segment_files(predictor, paths, out, resume=True).resumed == len(paths) and not calls


def test_resume_keeps_the_dice_of_the_images_it_skips(trained: Path, blob_root: Path, tmp_path: Path) -> None:
    args = ["predict", "--model", str(trained / "best"), "--data-root", str(blob_root), "--split", "none"]
    assert main([*args, "--subset", "all", "--out", str(tmp_path / "out"), "-q"]) == 0
    first = json.loads((tmp_path / "out" / "measurements.json").read_text())
    assert main([*args, "--subset", "all", "--out", str(tmp_path / "out"), "-q", "--resume"]) == 0
    again = json.loads((tmp_path / "out" / "measurements.json").read_text())
    assert again["dice_global"] == first["dice_global"] and again["dice_per_image"] == first["dice_per_image"]
    assert "12 already done" in again["summary"]


def test_bad_slice_or_resume_with_overwrite_stop_before_any_image(blob_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(blob_root / "images"), "--shard", "5/4", "--out", str(out)]) == 2
    assert "--shard '5/4': I must be in 1..N" in capsys.readouterr().err and not out.exists()
    assert main(["predict", str(blob_root / "images"), "--resume", "--overwrite", "--out", str(out)]) == 2
    assert "give one" in capsys.readouterr().err and not out.exists()


def test_parse_shard() -> None:
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/2", "3/2", "a/b", "2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_tables_written_mid_run_with_ground_truth_carry_the_dice_so_far(
    trained: Path, blob_root: Path, tmp_path: Path
) -> None:
    """A long run rewrites its tables while it goes (here after every image): with ground truth the summary line of
    a table written before the first image was scored must not need the global Dice (it crashed on Kvasir-SEG)."""
    predictor = Predictor.from_checkpoint(trained / "best")
    paths = sorted((blob_root / "images").iterdir())
    truths = {p: (blob_root / "masks" / p.name, 128) for p in paths}
    out = tmp_path / "out"
    summary = segment_files(predictor, paths, out, truths=truths, table_every=0)
    table = json.loads((out / "measurements.json").read_text())
    assert summary.dice_global is not None and table["dice_global"] == summary.dice_global
    assert f"global {100 * summary.dice_global:.2f}" in table["summary"]
