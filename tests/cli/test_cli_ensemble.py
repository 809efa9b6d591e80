"""An ensemble record is a --model for evaluate and serve as a checkpoint is."""

from __future__ import annotations

import pytest

from lesionseg.cli import main
from lesionseg.models.hub import save_ensemble


def test_evaluate_and_serve_take_an_ensemble(trained, tmp_path, capsys):
    stem = save_ensemble(tmp_path / "ens.json", [trained / "best", trained / "best"], weights=(2, 1))
    assert main(["evaluate", "--model", str(stem) + ".json", "--no-progress", "--no-trust"]) == 0
    text = capsys.readouterr().out
    assert "per-image" in text and "2 split test ids" in text
    pytest.importorskip("fastapi")
    from lesionseg.serve.models import describe_model, load_models

    models = load_models([str(stem) + ".json"], backend="torch")
    ((mid, predictor),) = models.items()
    assert mid == "ens" and describe_model(mid, predictor)["model"] == "ensemble"
