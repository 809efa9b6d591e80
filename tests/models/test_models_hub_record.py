"""The typed checkpoint record: every committed record reads and writes back unchanged; bad records are refused by
name (file and key)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lesionseg.models import create_model
from lesionseg.models.hub import (
    FORMAT_VERSION,
    WEIGHTS_DIR,
    CheckpointError,
    DataSource,
    ModelRecord,
    PostProcessing,
    ShippedInfo,
    TrainedOn,
    load_record,
    load_state,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
COMMITTED = sorted(WEIGHTS_DIR.glob("*.json")) + sorted((REPO / "docs" / "results").glob("**/checkpoint.json"))


def _full_record() -> ModelRecord:
    return ModelRecord(
        model="unet_small",
        model_kwargs={"channels": [4, 8]},
        in_channels=3,
        num_classes=1,
        image_size=(32, 48),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        threshold=0.4,
        dataset=DataSource(layout="ph2", root=None, split="ph2"),
        epoch=3,
        step=30,
        metrics={"val": {"epoch": 3, "val_dice_per_image": 0.9}},
        trained_on=TrainedOn(device="cpu", processes=1, precision="fp32", gpu=None, machine="2 cores"),
        config={"train": {"epochs": 3}},
        finished=True,
        elapsed_seconds=12.5,
        postprocess=PostProcessing(steps=("fill_holes",), reduction="per_image", val_dice={"none": 0.9}),
        pretrained=ShippedInfo(
            tag="t",
            title="a title",
            dataset="ph2",
            test_metrics={"native": {"dice_per_image": 0.9}},
            latency_ms={"torch": 20.0, "threads": 2},
            trained_with="lesionseg train --config x.yaml",
            date="2026-12-03",
        ),
    )


def test_there_are_committed_records():
    assert len(COMMITTED) > 80  # the shipped two and the benchmarks' checkpoint.json files


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPO)))
def test_committed_records_read_and_write_back_byte_identically(path: Path):
    record = load_record(path)
    assert record.model and len(record.image_size) == 2 and 0 < record.threshold < 1
    assert record.to_json() == path.read_text()


def test_round_trip_through_dict_and_json():
    record = _full_record()
    assert ModelRecord.from_dict(record.to_dict()) == record
    assert ModelRecord.from_json(record.to_json()) == record
    data = record.to_dict()
    assert data["format_version"] == FORMAT_VERSION and "latency_ms_768x576" in data["pretrained"]
    # The version sits where save_checkpoint always wrote it: before what is added to a saved record.
    keys = list(data)
    assert keys.index("format_version") == keys.index("postprocess") - 1
    json.dumps(data)  # plain JSON


def test_save_checkpoint_packs_state_and_takes_only_a_record(tmp_path):
    model = create_model("unet_small", channels=(4, 8))
    record = _full_record()
    stem = save_checkpoint(tmp_path / "last", model, record, state={"epoch": 3})
    loaded = load_record(stem)
    assert loaded.state is not None and replace(loaded, state=None, sha256=None) == record
    assert loaded.sha256 is not None and loaded.sha256.state is not None
    assert load_state(stem, loaded) == {"epoch": 3}
    with pytest.raises(TypeError, match="needs a ModelRecord"):
        save_checkpoint(tmp_path / "x", model, record.to_dict())  # type: ignore[arg-type]


def _written(tmp_path: Path) -> Path:
    path = tmp_path / "best.json"
    path.write_text(_full_record().to_json())
    return path


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_misspelt_key_is_refused_by_name(tmp_path):
    path = _written(tmp_path)
    _edit(path, lambda d: d.update(treshold=d.pop("threshold")))
    with pytest.raises(CheckpointError, match=r"best\.json: unknown key 'treshold' \(did you mean 'threshold'\?\)"):
        load_record(path)


def test_misspelt_nested_key_is_refused_by_name(tmp_path):
    path = _written(tmp_path)
    _edit(path, lambda d: d["postprocess"].update(step=d["postprocess"].pop("steps")))
    with pytest.raises(CheckpointError, match=r"best\.json: unknown key 'step'.*missing required key 'steps'.*"):
        load_record(path)


def test_missing_required_keys_are_refused_by_name(tmp_path):
    path = _written(tmp_path)
    _edit(path, lambda d: [d.pop("mean"), d.pop("std")])
    with pytest.raises(CheckpointError, match=r"best\.json: missing required keys 'mean', 'std' in the record"):
        load_record(path)
    path = _written(tmp_path)
    _edit(path, lambda d: d["dataset"].pop("layout"))
    with pytest.raises(CheckpointError, match=r"best\.json: missing required key 'layout' in 'dataset'"):
        load_record(path)
    path = _written(tmp_path)
    _edit(path, lambda d: d.pop("format_version"))
    with pytest.raises(CheckpointError, match="missing required key 'format_version'"):
        load_record(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(threshold="0.5"), r"threshold: expected float, got \"0.5\""),
        (lambda d: d.update(threshold=0.0), r"threshold: must be in \(0, 1\), got 0.0"),
        (lambda d: d.update(image_size=[32]), r"image_size: expected a list of 2, got \[32\]"),
        (lambda d: d.update(in_channels=True), "in_channels: expected int, got true"),
        (lambda d: d.update(mean=[0.5]), "mean: 1 values for 3 input channels"),
        (lambda d: d["trained_on"].update(processes="1"), r"trained_on.processes: expected int"),
        (lambda d: d.update(format_version=FORMAT_VERSION + 1), "a newer lesionseg wrote it"),
        (lambda d: d.update(dataset="ph2"), "dataset: expected a JSON object, got str"),
    ],
)
def test_bad_values_are_refused_by_name(tmp_path, change, message):
    path = _written(tmp_path)
    _edit(path, change)
    with pytest.raises(CheckpointError, match=r"best\.json: .*" + message):
        load_record(path)


def test_optional_parts_left_out_stay_out():
    record = ModelRecord(model="unet_small", image_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    data = record.to_dict()
    assert list(data) == [
        "model",
        "model_kwargs",
        "in_channels",
        "num_classes",
        "image_size",
        "mean",
        "std",
        "threshold",
        "format_version",
    ]
    # A grayscale model keeps the first value of RGB statistics, as the dataset does.
    assert ModelRecord(model="u", in_channels=1, image_size=(8, 8), mean=(0.5,) * 3, std=(0.2,) * 3).in_channels == 1
