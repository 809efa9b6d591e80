"""``predict --shard I/N`` and ``--resume``: slices and resumed calls leave what one call would, table included."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lesionseg.cli import main
from lesionseg.inference import Predictor
from lesionseg.inference.files import ROWS_DIR, parse_shard, segment_files


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
    assert _predict(trained, images, tmp_path / "sliced", "--shard", "2/3") == 0
    out = capsys.readouterr().out
    assert "4 inputs (slice 2/3): 4 segmented" in out and "every call and slice into this folder" not in out
    assert _predict(trained, images, tmp_path / "sliced", "--shard", "1/3") == 0
    assert _predict(trained, images, tmp_path / "sliced", "--shard", "3/3") == 0
    assert "(12 images, every call and slice into this folder)" in capsys.readouterr().out
    assert _outputs(tmp_path / "sliced") == _outputs(tmp_path / "one")
    assert _table(tmp_path / "sliced") == _table(tmp_path / "one")
    one = json.loads((tmp_path / "one" / "measurements.json").read_text())
    sliced = json.loads((tmp_path / "sliced" / "measurements.json").read_text())
    assert len(sliced["images"]) == len(one["images"]) == 12


def test_a_second_call_into_the_same_folder_keeps_the_first_calls_rows(
    trained: Path, blob_root: Path, tmp_path: Path
) -> None:
    files = sorted((blob_root / "images").iterdir())
    out = tmp_path / "out"
    assert _predict(trained, files[0], out) == 0
    assert _predict(trained, files[1], out) == 0
    assert [r["image"] for r in _table(out)] == [str(files[1]), str(files[0])]  # this call's inputs first


def test_resume_redoes_only_what_is_not_whole(trained: Path, blob_root: Path, tmp_path: Path) -> None:
    predictor = Predictor.from_checkpoint(trained / "best")
    paths = sorted((blob_root / "images").iterdir())
    out = tmp_path / "out"
    first = segment_files(predictor, paths, out)
    before, table = _outputs(out), _table(out)
    names = [Path(r["mask"]).name.removesuffix("_mask.png") for r in first.rows]
    (out / f"{names[0]}_mask.png").unlink()  # gone
    (out / f"{names[1]}_overlay.png").write_bytes((out / f"{names[1]}_overlay.png").read_bytes()[:40])  # truncated
    (out / ROWS_DIR / f"{names[2]}.json").unlink()  # killed before its row was written
    calls = []
    original = predictor.predict
    predictor.predict = lambda images: calls.append(1) or original(images)  # type: ignore[method-assign]
    again = segment_files(predictor, paths, out, resume=True)
    assert len(calls) == 3 and again.resumed == len(paths) - 3
    assert _outputs(out) == before and _table(out) == table
    calls.clear()
    assert segment_files(predictor, paths, out, resume=True).resumed == len(paths) and not calls


def test_resume_refuses_a_folder_of_another_model_or_setting(trained: Path, blob_root: Path, tmp_path: Path) -> None:
    images = blob_root / "images"
    assert _predict(trained, images, tmp_path / "out") == 0
    assert _predict(trained, images, tmp_path / "out", "--resume", "--threshold", "0.9") == 1


def test_a_bad_slice_stops_predict_before_any_image(blob_root: Path, tmp_path: Path, capsys) -> None:
    assert main(["predict", str(blob_root / "images"), "--shard", "5/4", "--out", str(tmp_path / "out")]) == 1
    assert "--shard '5/4': I must be in 1..N" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_parse_shard() -> None:
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("0/2", "3/2", "a/b", "2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
