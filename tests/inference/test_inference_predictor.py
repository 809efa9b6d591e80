"""Predictor: one normalisation path with the dataset, grayscale models, post-processing, onnxruntime backend."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lesionseg.data.base import SegmentationDataset, find_cases
from lesionseg.engine import Trainer, load_config
from lesionseg.inference import Predictor
from lesionseg.models import create_model
from lesionseg.models.hub import ModelRecord, PostProcessing, load_record, save_checkpoint


def test_grayscale_model_gets_one_channel_normalised_like_training(blob_root):
    cases = find_cases(blob_root, "folder")
    rgb_stats = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    dataset = SegmentationDataset(cases[:1], size=(32, 32), in_channels=1, cache=False, **rgb_stats)
    x_train, _, _ = dataset[0]
    model = create_model("unet_small", in_channels=1, channels=(4, 8))
    predictor = Predictor(model, (32, 32), in_channels=1, **rgb_stats)
    image = np.asarray(Image.open(cases[0].image).convert("L"))[..., None]
    x_pred = predictor._to_batch([image])[0]
    assert x_pred.shape == (1, 32, 32)
    np.testing.assert_array_equal(x_pred, x_train.numpy())
    prob = predictor.predict_proba([image])[0]
    assert prob.shape == image.shape[:2]


def test_normalisation_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="mean has 1 values for 3 input channels"):
        Predictor(create_model("unet_small", channels=(4, 8)), mean=(0.5,), std=(0.2, 0.2, 0.2))


def _tiny_checkpoint(tmp_path, postprocess=None):
    torch.manual_seed(0)
    model = create_model("unet_small", channels=(4, 8))
    record = ModelRecord(
        model="unet_small",
        model_kwargs={"channels": [4, 8]},
        image_size=(32, 32),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        postprocess=None if postprocess is None else PostProcessing(steps=postprocess),
    )
    return save_checkpoint(tmp_path / "ckpt", model, record), model


def test_from_checkpoint_applies_recorded_postprocessing(tmp_path):
    stem, _ = _tiny_checkpoint(tmp_path, postprocess=["largest_component"])
    predictor = Predictor.from_checkpoint(stem, threshold=0.01)
    assert predictor.postprocess == ("largest_component",)
    prob = np.zeros((20, 20), np.float32)
    prob[2:5, 2:5] = 0.9
    prob[10:18, 10:18] = 0.9
    assert predictor.mask_from_proba(prob).sum() == 64
    assert predictor.mask_from_proba(prob, postprocess=False).sum() == 73
    assert Predictor.from_checkpoint(stem, postprocess=()).postprocess == ()


def test_onnxruntime_backend_matches_eager(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("LESIONSEG_CACHE", str(tmp_path / "cache"))
    stem, _ = _tiny_checkpoint(tmp_path)
    eager = Predictor.from_checkpoint(stem)
    ort = Predictor.from_checkpoint(stem, backend="onnxruntime")
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1  # exported once into the cache
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (45, 61, 3), dtype=np.uint8), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)]
    for a, b in zip(eager.predict_proba(images), ort.predict_proba(images)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)
    Predictor.from_checkpoint(stem, backend="onnxruntime")
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1  # reused, not exported again


def test_training_end_chooses_postprocessing_on_validation(tiny_config, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config))
    trainer = Trainer(load_config(cfg_path), progress=False)
    trainer.fit()
    chosen = load_record(trainer.run_dir / "best").postprocess
    assert chosen.reduction == "per_image" and "none" in chosen.val_dice
    assert set(chosen.steps) <= {"largest_component", "fill_holes"}
    # A step is kept only if it raised the validation Dice.
    for step in chosen.steps:
        assert chosen.val_dice["+" + step] > chosen.val_dice["none"]
    written = json.loads((trainer.run_dir / "best.json").read_text())["postprocess"]
    assert set(written) == {"steps", "reduction", "val_dice"}


def test_predict_dataset_at_working_and_native_size(blob_root, tmp_path):
    """The batched working-size path is the model on the dataset's batches, thresholded and post-processed; the
    native path is :meth:`Predictor.predict_mask` on each case at its own size."""
    from lesionseg.data.base import load_case
    from lesionseg.inference.postprocess import apply_postprocessing

    stem, model = _tiny_checkpoint(tmp_path, postprocess=["largest_component"])
    predictor = Predictor.from_checkpoint(stem, threshold=0.45)
    cases = find_cases(blob_root, "folder")[:5]
    dataset = SegmentationDataset(cases, size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, cache=False)
    got = list(predictor.predict_dataset(dataset, batch_size=2))
    assert [ids for _, _, ids in got] == [[c.id for c in cases[:2]], [c.id for c in cases[2:4]], [cases[4].id]]
    masks = torch.cat([m for m, _, _ in got])
    with torch.inference_mode():
        x = torch.stack([dataset[i][0] for i in range(len(dataset))])
        raw = (torch.sigmoid(model.eval()(x)) > 0.45).to(torch.uint8)[:, 0].numpy()
    expected = np.stack([apply_postprocessing(m, ["largest_component"]) for m in raw])
    np.testing.assert_array_equal(masks[:, 0].numpy(), expected)
    truths = torch.cat([t for _, t, _ in got])
    np.testing.assert_array_equal(truths, torch.stack([dataset[i][1] for i in range(len(dataset))]).to(torch.uint8))

    for (mask, truth, ids), case in zip(predictor.predict_dataset(dataset, native=True), cases):
        image, true_mask = load_case(case)
        assert ids == [case.id] and mask.shape == (1, 1, *image.shape[:2])
        np.testing.assert_array_equal(mask[0, 0].numpy(), predictor.predict_mask([image])[0])
        np.testing.assert_array_equal(truth[0, 0].numpy(), true_mask)


def test_predict_dataset_refuses_a_dataset_prepared_otherwise(blob_root, tmp_path):
    stem, _ = _tiny_checkpoint(tmp_path)
    predictor = Predictor.from_checkpoint(stem)
    cases = find_cases(blob_root, "folder")[:2]
    other = SegmentationDataset(cases, size=(40, 40), mean=(0.5,) * 3, std=(0.25,) * 3, cache=False)
    with pytest.raises(ValueError, match=r"dataset prepared as .*\(40, 40\).* expects .*\(32, 32\)"):
        next(predictor.predict_dataset(other))
    imagenet = SegmentationDataset(cases, size=(32, 32), cache=False)
    with pytest.raises(ValueError, match="dataset prepared as"):
        next(predictor.predict_dataset(imagenet))


def test_from_record_keeps_record_values_unless_overridden(tmp_path):
    stem, model = _tiny_checkpoint(tmp_path, postprocess=["fill_holes"])
    record = load_record(stem)
    predictor = Predictor.from_record(model, record, threshold=None, tta=True)
    assert predictor.record is record and predictor.threshold == record.threshold and predictor.tta
    assert predictor.image_size == record.image_size and predictor.postprocess == ("fill_holes",)
    # A threshold of 0 is the caller's value, refused, never silently replaced by the record's.
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\), got 0.0"):
        Predictor.from_record(model, record, threshold=0.0)
