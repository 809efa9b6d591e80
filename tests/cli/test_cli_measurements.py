"""`evaluate --measurements` (agreement with the ground truth, subgroups) and refused pixel sizes."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from lesionseg.cli import main
from lesionseg.data.io import read_mask
from lesionseg.inference.measure import measure_lesion


def test_evaluate_measurements_and_subgroups(trained, blob_root, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(trained), "--native", "--measurements", "--pixel-size", "0.1"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "lesion size: small" in text and "lesion size: large" in text
    assert "| Max Feret diameter | mm |" in text and "| Compactness | 1 |" in text and "ICC(2,1)" in text
    for name in ("measurements.csv", "agreement.md", "bland_altman.png", "subgroups.csv", "report.md"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "measurements.csv") as f:
        rows = list(csv.DictReader(f))
    with open(out / "per_image.csv") as f:
        assert [r["id"] for r in rows] == [r["id"] for r in csv.DictReader(f)]
    for row in rows:  # the ground truth's side is measure_lesion of the mask file, in mm
        truth = measure_lesion(read_mask(blob_root / "masks" / f"{row['id']}.png"))
        assert float(row["truth_area"]) == pytest.approx(truth.area * 0.01)
        assert float(row["truth_compactness"]) == pytest.approx(truth.compactness)
    assert "Bias" in (out / "report.md").read_text()


def test_evaluate_measurements_need_native_resolution(trained, capsys):
    assert main(["evaluate", "--model", str(trained), "--measurements", "--no-progress"]) == 2
    assert "add --native" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(trained), "--native", "--pixel-size", "0.1", "--no-progress"]) == 2
    assert "add --measurements" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-0.02", "nan", "inf", "1e4", "abc"])
def test_bad_pixel_size_is_refused_before_any_image(bad, blob_root, tmp_path, capsys):
    out = tmp_path / "pred"
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(blob_root / "images"), "--out", str(out), f"--pixel-size={bad}"])
    assert stop.value.code == 2
    assert "pixel size must be" in capsys.readouterr().err
    assert not out.exists()  # nothing was segmented or written
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--model", "skin", "--native", "--measurements", f"--pixel-size={bad}"])
    assert stop.value.code == 2


def test_library_entry_points_refuse_bad_pixel_sizes_first(tmp_path):
    from lesionseg.engine import evaluate_checkpoint
    from lesionseg.inference.files import segment_files

    with pytest.raises(ValueError, match="pixel size"):  # before the predictor or any path is touched
        segment_files(None, [tmp_path / "missing.png"], tmp_path / "out", pixel_size=-1.0)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="pixel size"):  # before the (missing) checkpoint is looked for
        evaluate_checkpoint(tmp_path / "nothing", native=True, measurements=True, pixel_size=np.nan)
