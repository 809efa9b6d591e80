from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lesionseg.models import create_model
from lesionseg.models.hub import (
    CheckpointError,
    ModelRecord,
    file_sha256,
    load_model,
    load_record,
    pack_state,
    save_checkpoint,
    unpack_state,
)


def test_save_load_round_trip(tmp_path):
    model = create_model("unet_small", in_channels=1, channels=(4, 8))
    rec = ModelRecord(
        model="unet_small",
        model_kwargs={"channels": [4, 8]},
        in_channels=1,
        image_size=(32, 32),
        mean=(0.5,),
        std=(0.2,),
        threshold=0.4,
    )
    stem = save_checkpoint(tmp_path / "best", model, rec)
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "best.json").is_file()
    loaded, record = load_model(tmp_path / "best.json")
    # The saved record names the checksum of the weights it was written with, the rest is the record given.
    assert record.sha256 is not None and record.sha256.weights == file_sha256(tmp_path / "best.safetensors")
    assert replace(record, sha256=None) == rec and record.threshold == 0.4
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert load_record(stem) == record


def test_optimizer_state_packs_without_pickle():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors: dict = {}
    packed = pack_state({"optimizer": opt.state_dict(), "rng": torch.get_rng_state()}, "state", tensors)
    restored = unpack_state(packed, tensors)
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.5)
    opt2.load_state_dict(restored["optimizer"])
    assert opt2.param_groups[0]["lr"] == 0.1
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_missing_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.json"):
        load_record(tmp_path / "nothing")
    model = create_model("unet_small", channels=(4, 8))
    record = ModelRecord(
        model="unet_small", model_kwargs={"channels": [4, 8, 16]}, image_size=(32, 32), mean=(0.5,) * 3, std=(0.2,) * 3
    )
    save_checkpoint(tmp_path / "c", model, record)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path / "c")
    (tmp_path / "c.safetensors").unlink()
    with pytest.raises(CheckpointError, match="c.safetensors"):
        load_model(tmp_path / "c")
