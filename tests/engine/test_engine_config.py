from __future__ import annotations

import re

import pytest

from lesionseg.engine.config import apply_overrides, config_from_dict, config_to_dict, load_config, save_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: unet\ntrain:\n  epochs: 5\noptim:\n  lr: 1e-4\n")
    cfg = load_config(path, ["train.epochs=7", "data.image_size=[128, 96]", "model.kwargs={bilinear: true}"])
    assert cfg.model.name == "unet"
    assert cfg.train.epochs == 7
    assert cfg.optim.lr == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string; we accept it
    assert cfg.data.image_size == (128, 96)
    assert cfg.model.kwargs == {"bilinear": True}
    assert cfg.train.name == "c"


def test_unknown_key_and_bad_type_are_named():
    with pytest.raises(ValueError, match=r"unknown key 'train.epoch' \(did you mean 'train.epochs'\?\)"):
        config_from_dict({"train": {"epoch": 3}})
    # a misspelt section, as `--set trian.epochs=3` writes it: the full key both ways
    with pytest.raises(ValueError, match=r"unknown key 'trian.epochs' \(did you mean 'train.epochs'\?\)"):
        load_config(None, ["trian.epochs=3"])
    with pytest.raises(ValueError, match=r"unknown key 'dat.batch_sise' \(did you mean 'data.batch_size'\?\)"):
        load_config(None, ["dat.batch_sise=4"])
    with pytest.raises(ValueError, match=r"unknown key 'zzz'; known"):  # nothing close: no guess
        config_from_dict({"zzz": 1})
    with pytest.raises(ValueError, match="train.epochs: expected an integer"):
        config_from_dict({"train": {"epochs": "many"}})
    with pytest.raises(ValueError, match="precision"):
        config_from_dict({"train": {"precision": "fp8"}})


def test_override_syntax_error():
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["train.epochs"])


def test_round_trip(tmp_path):
    cfg = load_config(None, ["train.time_budget_min=2.5", "loss.deep_supervision=[1, 0.5]"])
    save_config(cfg, tmp_path / "r.yaml")
    again = load_config(tmp_path / "r.yaml")
    assert config_to_dict(again) == config_to_dict(cfg)
    assert again.loss.deep_supervision == (1.0, 0.5)


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
    configs = [c for c in configs if "benchmark" not in c.parts]
    assert configs
    for path in configs:
        load_config(path)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.image_size=[0,0]", "data.image_size"),
        ("data.image_size=[100000,100000]", "data.image_size"),
        ("model.kwargs={bogus: 1}", "model.kwargs"),
        ("model.name=unet_smal", "model.name"),
        ("data.std=[0,0,0]", "data.std"),
        ("data.mean=[.nan,0.5,0.5]", "data.mean"),
        ("train.checkpoint_every=0", "train.checkpoint_every"),
        ("train.val_every=0", "train.val_every"),
        ("optim.lr=0", "optim.lr"),
        ("optim.min_lr=1", "optim.min_lr"),
        ("train.time_budget_min=-1", "train.time_budget_min"),
        ("optim.warmup_epochs=-3", "optim.warmup_epochs"),
        ("optim.grad_clip=-1", "optim.grad_clip"),
        ("optim.betas=[0.9,1.5]", "optim.betas"),
        ("train.threshold=1", "train.threshold"),
        ("data.augment.hflip=2", "data.augment.hflip"),
        ("data.augment.scale=[1.2,0.8]", "data.augment.scale"),
        ("loss.deep_supervision=[0,1]", "loss.deep_supervision"),
        ("data.in_channels=2", "data.in_channels"),
        ("data.mean=[0.5]", "data.mean"),
        ("train.seed=-1", "train.seed"),
    ],
)
def test_every_numeric_field_is_range_checked_at_load(override, key):
    """Refused while the config is read, before any data, with the key named (not a traceback an epoch later)."""
    with pytest.raises(ValueError, match=rf"^{re.escape(key)}"):
        load_config(None, [override])
