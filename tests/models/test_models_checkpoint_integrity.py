"""Damaged, mixed and nonsensical checkpoints are refused by name; saving is all or nothing; tags are not shadowed."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save_file

from lesionseg.models import check_model_options, create_model
from lesionseg.models.hub import (
    CheckpointError,
    ModelRecord,
    load_model,
    load_record,
    load_state,
    pretrained_stem,
    resolve_checkpoint,
    save_checkpoint,
)


def _checkpoint(folder: Path, name: str = "c", state: dict | None = None, scale: float = 1.0) -> Path:
    torch.manual_seed(0)
    model = create_model("unet_small", channels=(4, 8))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    record = ModelRecord(
        model="unet_small", model_kwargs={"channels": [4, 8]}, image_size=(32, 32), mean=(0.5,) * 3, std=(0.2,) * 3
    )
    return save_checkpoint(folder / name, model, record, state)


def _edit_record(stem: Path, **changes) -> None:
    path = stem.with_suffix(".json")
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: b"",  # empty
        lambda raw: struct.pack("<Q", 16) + b"{not json!!!!!!}" + raw[24:],  # bad header
        lambda raw: struct.pack("<Q", 2**62) + raw[8:],  # header length past the file
    ],
    ids=["truncated", "empty", "bad_header", "huge_header_length"],
)
def test_damaged_weights_are_refused_by_name(tmp_path, damage):
    stem = _checkpoint(tmp_path)
    path = tmp_path / "c.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    _edit_record(stem, sha256=None)  # the damage itself must be seen, not only the checksum
    with pytest.raises(CheckpointError, match=r"c\.safetensors: damaged or not a safetensors file"):
        load_model(stem)


def test_a_pickle_renamed_safetensors_is_refused_without_unpickling(tmp_path, monkeypatch):
    stem = _checkpoint(tmp_path)
    torch.save(load((tmp_path / "c.safetensors").read_bytes()), tmp_path / "c.safetensors")
    _edit_record(stem, sha256=None)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("loading must never unpickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(CheckpointError, match=r"c\.safetensors: damaged or not a safetensors file"):
        load_model(stem)


@pytest.mark.parametrize("kind", ["nan", "integer"])
def test_weights_that_would_predict_nonsense_are_refused(tmp_path, kind):
    stem = _checkpoint(tmp_path)
    tensors = load((tmp_path / "c.safetensors").read_bytes())
    if kind == "nan":
        key = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
        tensors[key][0] = float("nan")
        match = "NaN or infinite"
    else:
        tensors = {k: v.to(torch.int32) if v.is_floating_point() else v for k, v in tensors.items()}
        match = "torch.int32, the model's is torch.float32"
    save_file(tensors, str(tmp_path / "c.safetensors"))
    _edit_record(stem, sha256=None)
    with pytest.raises(CheckpointError, match=match):
        load_model(stem)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"model": "unet_smal"}, r"c\.json: model: unknown model 'unet_smal'"),
        ({"model_kwargs": {"bogus": 1}}, r"c\.json: model_kwargs: unknown option\(s\) 'bogus'"),
        ({"model_kwargs": {"channels": "abc"}}, r"c\.json: model_kwargs: model 'unet_small' refuses them"),
        ({"image_size": [100000, 100000]}, r"c\.json: image_size: expected two sizes \(H, W\) between 8 and 4096"),
        ({"mean": [float("nan")] * 3}, r"c\.json: mean: must be finite"),
        ({"in_channels": 2}, r"c\.json: in_channels: must be 1 \(grayscale\) or 3"),
        ({"epoch": -1}, r"c\.json: epoch: must be >= 0"),
        ({"sha256": {"weights": "xyz"}}, r"c\.json: sha256: weights: not a sha256"),
    ],
)
def test_record_fields_are_validated_on_load(tmp_path, changes, match):
    stem = _checkpoint(tmp_path)
    _edit_record(stem, **changes)
    with pytest.raises(CheckpointError, match=match):
        load_model(stem)


def test_model_options_follow_the_factory_to_its_constructor():
    assert check_model_options("unet_small", {"channels": [4, 8], "bilinear": True}) is None
    assert "did you mean 'channels'" in check_model_options("unet_small", {"chanels": [4, 8]})
    with pytest.raises(ValueError, match="unknown model"):
        check_model_options("no_such_model", {})


@pytest.mark.parametrize("name", ["last.safetensors", "last.state.safetensors"])
def test_files_of_two_saves_are_refused_with_the_file_named(tmp_path, name):
    """A kill between the renames of epoch 2 leaves epoch 1's record beside epoch 2's weights or state."""
    one = _checkpoint(tmp_path, "last", state={"epoch": 1, "t": torch.ones(3)})
    _checkpoint(tmp_path / "epoch2", "last", state={"epoch": 2, "t": torch.zeros(3)}, scale=0.5)
    (tmp_path / name).write_bytes((tmp_path / "epoch2" / name).read_bytes())
    record = load_record(one)
    with pytest.raises(CheckpointError, match=rf"{name}: does not belong to last\.json"):
        if name == "last.safetensors":
            load_model(one)
        else:
            load_state(one, record)


def test_a_bit_flipped_state_is_refused(tmp_path):
    stem = _checkpoint(tmp_path, "last", state={"epoch": 1, "t": torch.ones(64)})
    path = tmp_path / "last.state.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not belong"):
        load_state(stem, load_record(stem))


def test_records_without_checksums_still_load(tmp_path):
    stem = _checkpoint(tmp_path)
    _edit_record(stem, sha256=None)
    data = json.loads(stem.with_suffix(".json").read_text())
    del data["sha256"]
    stem.with_suffix(".json").write_text(json.dumps(data))
    model, record = load_model(stem)
    assert record.sha256 is None


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    stem = _checkpoint(tmp_path, "last", state={"epoch": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    import safetensors.torch

    def disk_full(tensors, path):
        Path(path).write_bytes(b"\0" * 10)  # what a full disk leaves: the start of a file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match=r"last\.(state\.)?safetensors: could not write .*nothing partial"):
        _checkpoint(tmp_path, "last", state={"epoch": 2})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    load_state(stem, load_record(stem))


def test_a_bare_tag_is_the_shipped_model_whatever_the_folder_holds(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    # What `lesionseg export --onnx skin.onnx --model skin` leaves: skin.json without skin.safetensors.
    Path("skin.json").write_text(pretrained_stem("skin").with_suffix(".json").read_text())
    assert resolve_checkpoint("skin") == pretrained_stem("skin")
    # A complete local checkpoint of that name: still the shipped model, and a warning naming both.
    _checkpoint(tmp_path, "skin")
    with caplog.at_level(logging.WARNING, logger="lesionseg.models.hub"):
        assert resolve_checkpoint("skin") == pretrained_stem("skin")
    assert "write ./skin to use it" in caplog.text and str(pretrained_stem("skin")) in caplog.text
    assert resolve_checkpoint("./skin") == Path("skin")
    assert load_model("./skin")[1].model == "unet_small"
