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
        (lambda d: d["members"][0].update(weight=1.0), "combine 'mean': members must not carry weights"),
        (lambda d: d["members"][0].update(path="/abs/best"), "must be relative to the ensemble record"),
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


def _oof(path: Path, probs: np.ndarray, truths: np.ndarray, flip: np.ndarray | None = None) -> Path:
    arrays = {"ids": np.array([f"c{i}" for i in range(len(probs))]), "probs": probs.astype(np.float16)}
    arrays["truths"] = truths.astype(np.uint8)
    if flip is not None:
        arrays["probs_flip"] = flip.astype(np.float16)
    np.savez(path, **arrays)
    return path


def _synthetic_oof(seed: int, n: int = 12, size: tuple[int, int] = (48, 40)):
    """Discs with blurred, noisy probabilities whose edge sits low: a lower threshold fits them better."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    truths, probs = [], []
    for _ in range(n):
        cy, cx, r = rng.integers(15, 33), rng.integers(12, 28), rng.integers(6, 12)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        truths.append(d <= r)
        probs.append(1 / (1 + np.exp((d - r + 1.5) / 1.5)) * rng.uniform(0.7, 1.0) + rng.uniform(0, 0.05, size))
    return np.clip(np.stack(probs), 0, 1), np.stack(truths)


def test_fit_ensemble_from_oof_writes_the_settings(tmp_path, ensemble):
    from lesionseg.inference.ensemble_fit import fit_ensemble_from_oof

    probs_a, truths = _synthetic_oof(0)
    probs_b = np.clip(probs_a + np.random.default_rng(1).normal(0, 0.05, probs_a.shape), 0, 1)
    a = _oof(tmp_path / "a.npz", probs_a, truths, flip=probs_a)
    b = _oof(tmp_path / "b.npz", probs_b[:, ::2, ::2], truths[:, ::2, ::2])  # another working size
    record = fit_ensemble_from_oof(ensemble, [a, b])
    assert record == load_record(ensemble)
    assert record.threshold in (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65)
    assert record.temperature is not None and record.quality.single is not None and record.quality.flip is None
    assert record.trust_validation["n_cases"] == 12 and record.oof["n_cases"] == 12
    assert -1 <= record.trust_validation["disagreement"]["spearman_with_dice"] <= 1
    assert record.trust_validation["dice_per_image"] >= record.trust_validation["dice_per_image_by_threshold"]["0.5"]
    # The fitted ensemble still predicts, with its own settings.
    from lesionseg.inference import Predictor

    predictor = Predictor.from_checkpoint(ensemble)
    assert predictor.threshold == record.threshold and predictor.quality is not None
    result = predictor.predict([np.zeros((30, 30, 3), np.uint8)])[0]
    assert 0 <= result.trust.predicted_dice <= 1


def test_fit_ensemble_keeps_one_half_unless_another_threshold_helps():
    from lesionseg.inference.ensemble_fit import fit_ensemble

    _, truths = _synthetic_oof(0)
    exact = np.where(truths, 0.9, 0.1).astype(np.float32)
    fit = fit_ensemble(exact, truths, probs_flip=exact)
    assert fit.threshold == 0.5 and fit.postprocess.steps == () and fit.quality.flip is not None
    with pytest.raises(ValueError, match="at least 3 cases"):
        fit_ensemble(exact[:2], truths[:2])


def test_bad_oof_files_are_named(tmp_path):
    from lesionseg.inference.ensemble_fit import average_oof, read_oof

    probs, truths = _synthetic_oof(0, n=4)
    np.savez(tmp_path / "bad.npz", ids=np.array(["a"]), probs=probs)
    with pytest.raises(ValueError, match=r"bad.npz: missing keys \['truths'\]"):
        read_oof(tmp_path / "bad.npz")
    a = read_oof(_oof(tmp_path / "a.npz", probs, truths))
    b = read_oof(_oof(tmp_path / "b.npz", probs[:3], truths[:3]))
    with pytest.raises(ValueError, match="hold different cases"):
        average_oof([a, b])


def test_ensemble_cli_create_fit_predict_and_list(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from lesionseg import cli
    from lesionseg.models import hub

    members = make_members(tmp_path)
    oof = _oof(tmp_path / "oof.npz", *_synthetic_oof(0))
    out = tmp_path / "e.json"
    args = ["ensemble", "create", "--member", str(members[0]), "--member", str(members[1]), "--oof", str(oof)]
    assert cli.main([*args, "--image-size", "48", "40", "--out", str(out)]) == 0
    assert "fitted on 12 out-of-fold cases" in capsys.readouterr().out
    assert load_record(out).quality is not None
    assert cli.main(["ensemble", "fit", "--out", str(out)]) == 2  # no --oof: a usage error
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(tmp_path / "x.png")
    assert cli.main(["predict", str(tmp_path / "x.png"), "--model", str(out), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred").is_dir()

    # A shipped ensemble tag: its record in weights/, members in weights/<tag>/.
    weights = tmp_path / "weights"
    for i, m in enumerate(members):
        model, record = load_model(m)
        save_checkpoint(weights / "derm_ens" / f"fold{i}", model, record)
    save_ensemble(weights / "derm_ens.json", [weights / "derm_ens" / "fold0", weights / "derm_ens" / "fold1"])
    monkeypatch.setattr(hub, "WEIGHTS_DIR", weights)
    info = hub.list_pretrained()["derm_ens"]
    assert info.model == "ensemble" and info.members == ("unet_small (derm_ens/fold0)", "unet_small (derm_ens/fold1)")
    assert isinstance(hub.load_pretrained("derm_ens")[0], EnsembleModel)
    assert cli.main(["models", "--pretrained"]) == 0
    assert "member unet_small (derm_ens/fold1)" in capsys.readouterr().out


def test_fold_files_are_pooled_and_families_averaged():
    from lesionseg.inference.ensemble_fit import OutOfFold, average_oof, pool_oof

    probs, truths = _synthetic_oof(0, n=6)
    ids = [f"c{i}" for i in range(6)]

    def fold(rows, offset=0.0):
        return OutOfFold([ids[i] for i in rows], np.clip(probs[rows] + offset, 0, 1), truths[rows], source=str(rows))

    # Family A in three folds, family B in two folds over the same six cases, in another order.
    families = pool_oof([fold([0, 1]), fold([2, 3]), fold([4, 5]), fold([3, 4, 5], 0.1), fold([0, 1, 2], 0.1)])
    assert [f.ids for f in families] == [ids, ["c3", "c4", "c5", "c0", "c1", "c2"]]
    mean = average_oof(families)
    np.testing.assert_allclose(mean.probs, (probs + np.clip(probs + 0.1, 0, 1)) / 2, atol=1e-6)
    assert mean.ids == ids and (mean.truths == truths).all()
    # Folds of one family with and without the flip average cannot be pooled.
    half = OutOfFold(ids[:3], probs[:3], truths[:3], probs[:3], "f0")
    with pytest.raises(ValueError, match="probs_flip in one fold file"):
        pool_oof([half, fold([3, 4, 5])])
