from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from lesionseg.data import BadDataError
from lesionseg.engine import Trainer, load_model
from lesionseg.engine.config import config_from_dict
from lesionseg.runtime import lesionseg_commit, machine_description


def _cfg(d: dict, **train):
    d = {**d, "train": {**d["train"], **train}}
    cfg = config_from_dict(d)
    return cfg


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fit_writes_the_run_folder(tiny_config):
    cfg = _cfg(tiny_config)
    summary = Trainer(cfg, progress=False).fit()
    run = cfg.train.out_dir + "/tiny"
    assert summary["epochs"] == 2
    for name in (
        "config.yaml",
        "metrics.csv",
        "curves.png",
        "best.safetensors",
        "best.json",
        "last.json",
        "last.state.safetensors",
    ):
        assert (Path(run) / name).is_file(), name
    rows = _rows(Path(run) / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_dice_per_image"]) <= 1 for r in rows)
    model, record = load_model(f"{run}/best")
    assert record.model == "unet_small" and record.image_size == (32, 32)
    assert record.metrics["val"]["epoch"] == summary["best_epoch"]
    # where it ran and from which source tree, written at training time (an export later may run other code)
    trained_on = record.trained_on
    assert trained_on.device == "cpu" and trained_on.machine == machine_description(torch.device("cpu"))
    assert trained_on.lesionseg_commit == lesionseg_commit()


def test_resume_continues_exactly(tiny_config, tmp_path):
    """Two epochs in one go == one epoch, kill, resume for the second (same weights to float precision)."""
    full = Trainer(_cfg(tiny_config, name="full"), progress=False)
    full.fit()
    part = Trainer(_cfg(tiny_config, name="part"), progress=False)
    assert part.fit(stop_after=1)["epochs"] == 1
    resumed = Trainer(_cfg(tiny_config, name="part"), progress=False)
    resumed.fit(resume=True)
    assert resumed.epoch == 2
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    rows = _rows(resumed.run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]


def test_time_budget_stops_early(tiny_config):
    trainer = Trainer(_cfg(tiny_config, epochs=1000, time_budget_min=0.0001), progress=False)
    summary = trainer.fit()
    assert summary["epochs"] == 1
    assert trainer.progress_fraction() == 1.0


def test_bf16_and_channels_last_train(tiny_config):
    trainer = Trainer(_cfg(tiny_config, epochs=1, precision="bf16", channels_last=True), progress=False)
    convs = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    seen: list[tuple[torch.dtype, bool, bool]] = []

    def record(module, inputs, output):
        x = inputs[0]
        seen.append((output.dtype, x.is_contiguous(memory_format=torch.channels_last), module.training))

    hook = convs[0].register_forward_hook(record)
    assert trainer.fit()["epochs"] == 1
    hook.remove()
    training = [s for s in seen if s[2]]
    assert len(training) == len(trainer.train_loader)  # one forward per step
    # the convolutions of the training steps ran in bf16 on channels-last inputs
    assert all(dtype == torch.bfloat16 and channels_last for dtype, channels_last, _ in training)
    after = trainer.model.state_dict()
    assert all(torch.isfinite(v.float()).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    # weights stay float32 (autocast, not a cast of the model)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_split_ids_missing_from_root_are_an_error(tiny_config, tmp_path):
    split = tmp_path / "bad.json"
    split.write_text(json.dumps({"train": ["nope"], "val": [], "test": []}))
    bad = {**tiny_config, "data": {**tiny_config["data"], "split": str(split)}}
    with pytest.raises(ValueError, match="missing from the data root"):
        Trainer(config_from_dict(bad), progress=False)


def _break(root: Path) -> None:
    """case001 (train) truncated, case009 (val) without its mask, case003 (train) mask of the wrong size."""
    img = root / "images" / "case001.png"
    img.write_bytes(img.read_bytes()[:50])
    (root / "masks" / "case009.png").unlink()
    from PIL import Image

    Image.new("L", (41, 40)).save(root / "masks" / "case003.png")


def test_bad_files_stop_the_run_before_the_first_epoch_naming_all(tiny_config, blob_root):
    _break(blob_root)
    cfg = _cfg(tiny_config)
    with pytest.raises(BadDataError) as err:
        Trainer(cfg, progress=False)
    msg = str(err.value)
    for name in ("case001.png", "case009.png", "case003.png"):
        assert name in msg, name
    assert f"lesionseg data check {blob_root}" in msg
    assert not (Path(cfg.train.out_dir) / "tiny" / "metrics.csv").exists()


def test_skip_bad_trains_without_them_and_records_them(tiny_config, blob_root):
    _break(blob_root)
    cfg = config_from_dict({**tiny_config, "data": {**tiny_config["data"], "skip_bad": True}})
    trainer = Trainer(cfg, progress=False)
    skipped_ids = {"case001", "case003", "case009"}
    assert set(trainer.train_set.ids) == {f"case{i:03d}" for i in range(8)} - skipped_ids
    assert set(trainer.val_set.ids) == {"case008"}
    record = json.loads((trainer.run_dir / "skipped.json").read_text())
    assert sorted(record["cases"]) == sorted(skipped_ids)
    assert {p["kind"] for p in record["problems"]} == {"unreadable", "image_without_mask", "size_mismatch"}
    assert trainer.fit()["epochs"] == 2


def test_data_root_is_required(tiny_config):
    cfg = config_from_dict({**tiny_config, "data": {**tiny_config["data"], "root": ""}})
    with pytest.raises(ValueError, match=r"data.root is not set"):
        Trainer(cfg, progress=False)
    assert config_from_dict({}).data.root == ""


def _counting(monkeypatch, module, name: str) -> list[str]:
    calls: list[str] = []
    real = getattr(module, name)

    def counting(case, *args, **kwargs):
        calls.append(case.id)
        return real(case, *args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def test_disk_cache_serves_later_runs_and_their_screening(tiny_config, blob_root, tmp_path, monkeypatch):
    import lesionseg.data.base as base
    import lesionseg.data.check as check

    cached = {**tiny_config, "data": {**tiny_config["data"], "cache_dir": str(tmp_path / "cache")}}
    plain = Trainer(_cfg(tiny_config, name="plain", epochs=1), progress=False)
    plain.fit()
    first = Trainer(_cfg(cached, name="first"), progress=False)
    for dataset in (first.train_set, first.val_set):  # what the first epoch does: every case decoded and stored
        for i in range(len(dataset)):
            dataset.load_resized(i)
    screened = _counting(monkeypatch, check, "check_case")
    decoded = _counting(monkeypatch, base, "load_case")
    second = Trainer(_cfg(cached, name="second", epochs=1), progress=False)
    second.fit()
    assert screened == [] and decoded == []  # every train/val case came from the cache, screening included
    for (k, a), (_, b) in zip(plain.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), k  # the same bytes in, the same training out
    # Files broken after caching: refused (or skipped) exactly as without a cache.
    _break(blob_root)
    messages = []
    for config in (tiny_config, cached):
        with pytest.raises(BadDataError) as err:
            Trainer(_cfg(config), progress=False)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    skipping = Trainer(config_from_dict({**cached, "data": {**cached["data"], "skip_bad": True}}), progress=False)
    assert set(skipping.train_set.ids) == {f"case{i:03d}" for i in range(8)} - {"case001", "case003", "case009"}
    assert set(skipping.val_set.ids) == {"case008"}


def test_evaluation_uses_the_checkpoints_disk_cache(tiny_config, tmp_path, monkeypatch):
    import lesionseg.data.base as base
    from lesionseg.engine import evaluate_checkpoint

    cache = tmp_path / "cache"
    cfg = _cfg({**tiny_config, "data": {**tiny_config["data"], "cache_dir": str(cache)}}, epochs=1)
    Trainer(cfg, progress=False).fit()
    best = Path(cfg.train.out_dir) / "tiny" / "best"
    uncached = evaluate_checkpoint(best, cache_dir="", include_hd95=False).results()
    first = evaluate_checkpoint(best, include_hd95=False).results()  # the checkpoint's data.cache_dir
    decoded = _counting(monkeypatch, base, "load_case")
    again = evaluate_checkpoint(best, include_hd95=False).results()
    assert decoded == []
    assert uncached == first == again
    assert len(list(cache.glob("*/32x32-c3-v*/*.npz"))) == 12  # 8 train + 2 val + 2 test
