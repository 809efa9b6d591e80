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
from lesionseg.models.hub import load_record, save_checkpoint


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
    record = {
        "model": "unet_small",
        "model_kwargs": {"channels": [4, 8]},
        "in_channels": 3,
        "num_classes": 1,
        "image_size": [32, 32],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "threshold": 0.5,
    }
    if postprocess is not None:
        record["postprocess"] = {"steps": postprocess}
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
    record = load_record(trainer.run_dir / "best")
    chosen = record["postprocess"]
    assert set(chosen) == {"steps", "reduction", "val_dice"}
    assert chosen["reduction"] == "per_image" and "none" in chosen["val_dice"]
    assert set(chosen["steps"]) <= {"largest_component", "fill_holes"}
    # A step is kept only if it raised the validation Dice.
    for step in chosen["steps"]:
        assert chosen["val_dice"]["+" + step] > chosen["val_dice"]["none"]
    json.dumps(record)  # still plain JSON
