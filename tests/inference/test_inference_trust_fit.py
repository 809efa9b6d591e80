"""Trust parts end to end: the predictor applies them, fit_trust and the trainer's hook fit them, evaluate reports."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from lesionseg.data.base import find_cases
from lesionseg.engine import Trainer, evaluate_checkpoint, load_config
from lesionseg.inference import Predictor
from lesionseg.inference.trust import QualityEstimator
from lesionseg.inference.trust_fit import _case_at_working_size, evaluate_trust, fit_trust
from lesionseg.models import create_model
from lesionseg.models.hub import CheckpointError, ModelRecord, load_record, save_checkpoint


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet_small", channels=(4, 8))
    record = ModelRecord(
        model="unet_small",
        model_kwargs={"channels": [4, 8]},
        image_size=(32, 32),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        threshold=0.5,
    )
    return save_checkpoint(tmp_path / "ckpt", model, record), model


def test_temperature_changes_probabilities_not_masks(tmp_path):
    _, model = _checkpoint(tmp_path)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (45, 61, 3), dtype=np.uint8) for _ in range(3)]
    for threshold in (0.5, 0.45):
        plain = Predictor(model, (32, 32), (0.5,) * 3, (0.25,) * 3, threshold)
        hot = Predictor(model, (32, 32), (0.5,) * 3, (0.25,) * 3, threshold, temperature=3.0)
        for a, b in zip(plain.predict(images), hot.predict(images)):
            assert np.array_equal(a.mask, b.mask)
            assert not np.allclose(a.prob, b.prob)
            # T > 1 pulls every probability towards 0.5.
            assert np.all(np.abs(b.prob - 0.5) <= np.abs(a.prob - 0.5) + 1e-6)
            assert b.trust.predicted_dice is None and b.trust.out_of_distribution is None
    with pytest.raises(ValueError, match="temperature"):
        Predictor(model, temperature=0.0)


def test_masks_cut_at_t1_equal_the_calibrated_cut_and_probabilities_are_computed_when_read(tmp_path):
    _, model = _checkpoint(tmp_path)
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (45, 61, 3), dtype=np.uint8), rng.integers(0, 255, (300, 500, 3), dtype=np.uint8)]
    hot = Predictor(model, (32, 32), (0.5,) * 3, (0.25,) * 3, 0.5, temperature=2.144716, postprocess=("fill_holes",))
    for prediction, prob in zip(hot.predict(images), hot.predict_proba(images)):
        # The mask as it was defined before: the calibrated probability cut at prob_threshold.
        np.testing.assert_array_equal(prediction.mask, hot.mask_from_proba(prob))
        np.testing.assert_array_equal(hot.predict_mask([images[0]])[0], hot.predict([images[0]])[0].mask)
        assert "prob" not in vars(prediction)  # not computed until read
        np.testing.assert_array_equal(prediction.prob, prob)
        small = prediction.small_prob(64)
        h, w = prob.shape
        assert max(small.shape) == min(64, max(h, w))
        if max(h, w) > 64:
            size = (small.shape[1], small.shape[0])
            assert np.abs(small - cv2.resize(prob, size, interpolation=cv2.INTER_AREA)).max() < 0.02


def test_fit_trust_then_predict_reports_quality_and_out_of_distribution(blob_root, tmp_path):
    stem, model = _checkpoint(tmp_path)
    cases = find_cases(blob_root)
    base = Predictor.from_checkpoint(stem)
    fit = fit_trust(base, cases[:8], cases[8:])
    assert fit.temperature > 0 and set(fit.quality) == {"single", "flip"}
    assert all(0 < q.low_confidence_below < 1 and q.mode == m for m, q in fit.quality.items())
    assert fit.description.n_train == 8 and fit.description.n_val == 4
    assert {"ece_before", "ece_after", "quality"} <= set(fit.validation)
    assert set(fit.validation["quality"]) == {"single", "flip"}
    assert "signal_temperature_spearman" in fit.validation["quality"]["single"]
    record = fit.apply_to(load_record(stem))
    assert ModelRecord.from_json(record.to_json()) == record  # the typed fields survive a round trip
    stem = save_checkpoint(stem, model, record)
    predictor = Predictor.from_checkpoint(stem)
    assert predictor.temperature == pytest.approx(fit.temperature, rel=1e-5)
    blob = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(cases[0].image).convert("RGB"))
    green = np.zeros((40, 40, 3), np.uint8)
    green[..., 1] = 230
    same, other = predictor.predict([blob, green])
    assert 0 < same.trust.predicted_dice < 1 and isinstance(same.trust.low_confidence, bool)
    assert same.trust.out_of_distribution is False
    assert other.trust.out_of_distribution is True and "unlike the training images" in other.trust.notes()
    assert other.trust.ood_score > predictor.description.threshold
    evaluation = evaluate_trust(predictor, cases[8:])
    summary = evaluation.summary()
    assert summary["images"] == 4 and summary["temperature"] == pytest.approx(fit.temperature, abs=1e-4)
    assert summary["ece_before"] == pytest.approx(fit.validation["ece_before"], abs=1e-4)
    assert any("calibration" in line for line in evaluation.lines())
    with pytest.raises(ValueError, match="at least 3"):
        fit_trust(base, cases[:8], cases[8:10])


def test_training_end_fits_trust_and_evaluate_reports_it(tiny_config, blob_root, tmp_path):
    ids = sorted(p.stem for p in (blob_root / "images").iterdir())
    split = tmp_path / "split4.json"
    split.write_text(json.dumps({"info": {}, "train": ids[:6], "val": ids[6:10], "test": ids[10:]}))
    tiny_config["data"]["split"] = str(split)
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config))
    trainer = Trainer(load_config(cfg_path), progress=False)
    trainer.fit()
    record = load_record(trainer.run_dir / "best")
    assert record.temperature > 0
    assert record.quality.single.n_fit == record.quality.flip.n_fit == 4 and record.image_description.n_train == 6
    assert record.postprocess is not None  # chosen in the same hook
    evaluation = evaluate_checkpoint(trainer.run_dir, include_hd95=False)
    assert evaluation.trust is not None and evaluation.trust.summary()["images"] == 2
    out = evaluation.save(tmp_path / "eval")
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "metrics.json").read_text())["trust"]["ece_after"] >= 0
    assert "calibration (pixel-level ECE" in (out / "report.md").read_text()
    assert evaluate_checkpoint(trainer.run_dir, include_hd95=False, trust=False).trust is None


def test_record_refuses_bad_trust_fields_and_reads_records_without_them(tmp_path):
    stem, _ = _checkpoint(tmp_path)
    data = json.loads(stem.with_suffix(".json").read_text())
    assert load_record(stem).temperature is None  # a record from before: T = 1, no estimator, no description
    with pytest.raises(CheckpointError, match="temperature"):
        ModelRecord.from_dict({**data, "temperature": -1.0}, "x.json")
    quality = {"a": 0.0, "b": -1.0, "low_confidence_below": 0.8, "rule": "youden", "n_fit": 3, "dice_cut": 0.8}
    with pytest.raises(CheckpointError, match="quality"):
        ModelRecord.from_dict({**data, "quality": {**quality, "signal_temperature": 1.0}}, "x.json")
    with pytest.raises(CheckpointError, match="signal_temperature"):
        ModelRecord.from_dict({**data, "quality": quality}, "x.json")
    with pytest.raises(CheckpointError, match="quality.single"):
        ModelRecord.from_dict({**data, "quality": {"single": quality}}, "x.json")
    with pytest.raises(CheckpointError, match="no curve"):
        ModelRecord.from_dict({**data, "quality": {}}, "x.json")


_CURVE = {"a": 0.1, "b": 1.2, "low_confidence_below": 0.7, "rule": "youden", "n_fit": 5, "dice_cut": 0.8}


def test_one_curve_records_read_as_the_flip_mode_and_run_its_passes(tmp_path):
    stem, model = _checkpoint(tmp_path)
    data = json.loads(stem.with_suffix(".json").read_text())
    old = ModelRecord.from_dict({**data, "quality": {**_CURVE, "signal_temperature": 1.0}}, "old.json")
    assert old.quality.single is None and old.quality.flip.a == 0.1
    assert ModelRecord.from_json(old.to_json()) == old  # written back in the per-mode form, read the same
    assert "flip" in json.loads(old.to_json())["quality"]
    calls = []
    for tta in (False, True):
        predictor = Predictor.from_record(model, old, tta=tta)
        assert predictor.quality.mode == "flip" and predictor.quality.a == 0.1
        run = predictor._run
        predictor._run = lambda x, run=run: calls.append(1) or run(x)
        image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
        assert 0 < predictor.predict([image])[0].trust.predicted_dice < 1
    assert len(calls) == 6  # a flip curve reads the three passes, with or without tta


def test_each_mode_gets_its_own_curve_and_only_its_passes(tmp_path):
    stem, model = _checkpoint(tmp_path)
    data = json.loads(stem.with_suffix(".json").read_text())
    single, flip = {**_CURVE, "signal_temperature": 0.5}, {**_CURVE, "a": -0.3, "signal_temperature": 1.0}
    record = ModelRecord.from_dict({**data, "quality": {"single": single, "flip": flip}}, "new.json")
    image = np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    for tta, mode, a, passes in ((False, "single", 0.1, 1), (True, "flip", -0.3, 3)):
        predictor = Predictor.from_record(model, record, tta=tta)
        assert (predictor.quality.mode, predictor.quality.a) == (mode, a)
        calls = []
        run = predictor._run
        predictor._run = lambda x, run=run, calls=calls: calls.append(1) or run(x)
        (prediction,) = predictor.predict([image])
        assert len(calls) == passes
        # The signal is that of the mode's own passes: the plain pass alone by default.
        x = predictor._to_batch([image])
        logits = predictor._passes(x, flips=True)[:, 0, 0]
        small = predictor._cut(1 / (1 + np.exp(-(logits.mean(0) if tta else logits[0]))))
        inputs = list(logits) if tta else [logits[0]]
        expected = predictor.quality.predict(predictor.quality.signal(inputs, small))
        assert prediction.trust.predicted_dice == pytest.approx(expected, abs=1e-6)


def test_fit_trust_fits_each_mode_on_its_own_signal(blob_root, tmp_path, monkeypatch):
    stem, _ = _checkpoint(tmp_path)
    cases = find_cases(blob_root)
    seen = {}
    fit_curve = QualityEstimator.fit.__func__

    def spy(cls, signals, dice, **kwargs):
        seen[kwargs["mode"]] = (np.asarray(signals), np.asarray(dice), kwargs["signal_temperature"])
        return fit_curve(cls, signals, dice, **kwargs)

    monkeypatch.setattr(QualityEstimator, "fit", classmethod(spy))
    predictor = Predictor.from_checkpoint(stem)
    fit = fit_trust(predictor, cases[:8], cases[8:])
    assert fit.quality_for(False) is fit.quality["single"] and fit.quality_for(True) is fit.quality["flip"]
    # Each mode's curve is fitted on its own signal: one pass and its mask, or the three passes and the averaged mask.
    _, z, _ = _case_at_working_size(predictor, cases[8])
    for mode, inputs, cut_from in (("single", [z[0]], z[0]), ("flip", list(z), z.mean(0))):
        signals, _, t = seen[mode]
        mask = predictor._cut(1 / (1 + np.exp(-cut_from)))
        assert signals[0] == pytest.approx(QualityEstimator(signal_temperature=t).signal(inputs, mask), abs=1e-9)
    assert not np.allclose(seen["single"][0], seen["flip"][0], rtol=1e-6, atol=0.0)
    record = fit.apply_to(load_record(stem))
    assert record.quality.single.a == pytest.approx(fit.quality["single"].a, abs=1e-6)
    assert record.quality.flip.a == pytest.approx(fit.quality["flip"].a, abs=1e-6)
