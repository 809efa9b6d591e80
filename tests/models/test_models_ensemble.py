"""Ensembles: a record listing member checkpoints, read strictly, and run as one model wherever a checkpoint goes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lesionseg.models import create_model
from lesionseg.models.ensemble import EnsembleModel
from lesionseg.models.hub import (
    CheckpointError,
    EnsembleRecord,
    ModelRecord,
    load_model,
    load_record,
    resolve_checkpoint,
    save_checkpoint,
    save_ensemble,
)


def make_members(root: Path) -> list[Path]:
    """Two tiny checkpoints of different architectures, input sizes and normalisations."""
    torch.manual_seed(0)
    a = save_checkpoint(
        root / "a" / "best",
        create_model("unet_small", channels=(4, 8)),
        ModelRecord(
            model="unet_small", model_kwargs={"channels": [4, 8]}, image_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3
        ),
    )
    b = save_checkpoint(
        root / "b" / "best",
        create_model("unet_small", channels=(4, 8, 16)),
        ModelRecord(
            model="unet_small",
            model_kwargs={"channels": [4, 8, 16]},
            image_size=(48, 40),
            mean=(0.4, 0.45, 0.5),
            std=(0.2, 0.25, 0.3),
        ),
    )
    return [a, b]


@pytest.fixture
def ensemble(tmp_path) -> Path:
    return save_ensemble(tmp_path / "ens" / "skin_ens.json", make_members(tmp_path), threshold=0.45)


def test_ensemble_record_round_trips_with_relative_members(ensemble):
    record = load_record(ensemble)
    assert isinstance(record, EnsembleRecord)
    assert [m.path for m in record.members] == ["../a/best", "../b/best"]
    assert record.image_size == (48, 40) and record.mean == (0.5,) * 3 and record.threshold == 0.45
    text = ensemble.with_suffix(".json").read_text()
    assert json.loads(text)["kind"] == "ensemble"
    assert EnsembleRecord.from_dict(json.loads(text)).to_json() == text
    assert resolve_checkpoint(ensemble.with_suffix(".json")) == ensemble


def _edit(stem: Path, change) -> None:
    path = stem.with_suffix(".json")
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(colour="red"), "unknown key 'colour'"),
        (lambda d: d.pop("members"), "missing required key 'members'"),
        (lambda d: d.update(format_version=99), "ensemble format_version 99"),
        (lambda d: d.update(kind="zoo"), "unknown record kind 'zoo'"),
        (lambda d: d.update(combine="median"), "combine: must be one of"),
        (lambda d: d["members"].pop(), "at least two members"),
        (lambda d: d["members"][0].update(sha256="0" * 64), r"members\[0\]: .* not the record the ensemble"),
        (lambda d: d["members"][1].update(path="../c/best"), r"members\[1\]: missing member '../c/best'"),
        (lambda d: d["members"][0].update(sha256="xyz"), "not a sha256 hex digest"),
    ],
)
def test_ensemble_record_is_read_strictly_naming_the_file(ensemble, change, message):
    _edit(ensemble, change)
    with pytest.raises(CheckpointError, match=message) as err:
        load_model(ensemble)
    assert str(ensemble.with_suffix(".json")) in str(err.value)


def test_a_retrained_member_is_refused(tmp_path, ensemble):
    a = tmp_path / "a" / "best"
    model, record = load_model(a)
    save_checkpoint(a, model, record.__class__(**{**record.__dict__, "threshold": 0.3}))
    with pytest.raises(CheckpointError, match="retrained or replaced"):
        load_model(ensemble)


def test_ensemble_model_is_the_mean_of_its_members_probabilities(tmp_path, ensemble):
    model, record = load_model(ensemble)
    assert isinstance(model, EnsembleModel) and not model.training
    (a, ra), (b, rb) = load_model(tmp_path / "a" / "best"), load_model(tmp_path / "b" / "best")
    raw = torch.rand(2, 3, 48, 40)
    x = (raw - torch.tensor(record.mean).view(1, 3, 1, 1)) / torch.tensor(record.std).view(1, 3, 1, 1)
    with torch.no_grad():
        got = torch.sigmoid(model(x))
        xa = (raw - torch.tensor(ra.mean).view(1, 3, 1, 1)) / torch.tensor(ra.std).view(1, 3, 1, 1)
        small = torch.nn.functional.interpolate(xa, size=(32, 32), mode="bilinear")
        pa = torch.nn.functional.interpolate(torch.sigmoid(a(small)), size=(48, 40), mode="bilinear")
        xb = (raw - torch.tensor(rb.mean).view(1, 3, 1, 1)) / torch.tensor(rb.std).view(1, 3, 1, 1)
        pb = torch.sigmoid(b(xb))
    assert got.shape == (2, 1, 48, 40)
    torch.testing.assert_close(got, ((pa + pb) / 2).clamp(1e-6, 1 - 1e-6), atol=1e-5, rtol=1e-4)


def test_weighted_ensemble(tmp_path):
    members = make_members(tmp_path)
    stem = save_ensemble(tmp_path / "w", members, weights=(3, 1))
    record = load_record(stem)
    assert record.combine == "weights" and record.member_weights() == (0.75, 0.25)
    model, _ = load_model(stem)
    assert model.weights == (0.75, 0.25)
    with pytest.raises(ValueError, match="weights: 1 for 2 members"):
        save_ensemble(tmp_path / "bad", members, weights=(1,))
    with pytest.raises(CheckpointError, match="itself an ensemble"):
        save_ensemble(tmp_path / "nested", [stem, members[0]])


def test_predictor_runs_an_ensemble_on_both_backends(ensemble):
    from lesionseg.inference import Predictor

    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    eager = Predictor.from_checkpoint(ensemble)
    assert isinstance(eager.model, EnsembleModel) and eager.threshold == 0.45 and eager.image_size == (48, 40)
    p_eager = eager.predict_proba([image])[0]
    assert p_eager.shape == (70, 90)
    pytest.importorskip("onnxruntime")
    ort = Predictor.from_checkpoint(ensemble, backend="onnxruntime")
    assert ort.session is not None
    np.testing.assert_allclose(ort.predict_proba([image])[0], p_eager, atol=1e-4)
