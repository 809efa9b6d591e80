"""Shipped pretrained models: listed with cards, loaded by tag without network or pickles, guarded against misuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesionseg.inference import Predictor
from lesionseg.models import create_model
from lesionseg.models.hub import WEIGHTS_DIR, list_pretrained, model_card, pretrained_stem, resolve_checkpoint


def test_shipped_models_are_listed_with_cards_and_metrics():
    shipped = list_pretrained()
    assert {"skin", "polyp"} <= set(shipped)
    for tag, info in shipped.items():
        assert info.stem.with_suffix(".safetensors").is_file() or info.members  # an ensemble tag: members in <tag>/
        card = model_card(tag)
        assert "Not a medical device" in card and "lesionseg train --config" in card
        native = info.metrics["native"]
        assert 0 < native["dice_per_image"] <= 1 and 0 < native["dice_global"] <= 1
    # Only safetensors, JSON, ONNX (protobuf) and Markdown ship: nothing that could be unpickled.
    assert {p.suffix for p in WEIGHTS_DIR.iterdir() if p.is_file()} <= {".safetensors", ".json", ".onnx", ".md"}


def test_create_model_pretrained_loads_the_shipped_weights():
    model = create_model("sc_unext", pretrained="skin")
    fresh = create_model("sc_unext")
    loaded = dict(model.state_dict())
    assert any(not torch.equal(loaded[k], v) for k, v in fresh.state_dict().items() if v.is_floating_point())
    predictor = Predictor.from_pretrained("skin")
    for k, v in predictor.model.state_dict().items():
        assert torch.equal(v, loaded[k])


def test_pretrained_misuse_is_refused():
    with pytest.raises(ValueError, match="no pretrained model 'derm'; shipped: .*skin"):
        create_model("sc_unext", pretrained="derm")
    with pytest.raises(ValueError, match="does not fit unet_small"):
        create_model("unet_small", pretrained="skin")
    with pytest.raises(ValueError, match="in_channels=1"):
        create_model("sc_unext", in_channels=1, pretrained="skin")


def test_resolve_checkpoint_prefers_paths_and_knows_tags(tmp_path):
    assert resolve_checkpoint("skin") == pretrained_stem("skin")
    with pytest.raises(ValueError, match="neither a checkpoint"):
        resolve_checkpoint(tmp_path / "missing")


def test_shipped_skin_model_segments_a_dark_blob():
    # A dark lesion-like disc on skin-coloured background: the dermoscopy model must find it and little else.
    yy, xx = np.mgrid[:288, :384]
    disc = (yy - 144) ** 2 + (xx - 192) ** 2 <= 70**2
    image = np.empty((288, 384, 3), np.uint8)
    image[:] = (205, 160, 140)
    image[disc] = (95, 60, 45)
    mask = Predictor.from_pretrained("skin").predict_mask([image])[0].astype(bool)
    dice = 2 * (mask & disc).sum() / (mask.sum() + disc.sum())
    assert dice > 0.8
