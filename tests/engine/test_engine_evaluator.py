"""evaluate_checkpoint runs the checkpoint through its Predictor: the record's settings unless the caller gives one."""

from __future__ import annotations

import pytest
import yaml

from lesionseg.engine import Trainer, evaluate_checkpoint, load_config


@pytest.fixture
def run_dir(tiny_config, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config))
    trainer = Trainer(load_config(cfg_path, ["train.epochs=1"]), progress=False)
    trainer.fit()
    return trainer.run_dir


def test_a_threshold_of_zero_is_refused_not_replaced_by_the_records(run_dir):
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\), got 0.0"):
        evaluate_checkpoint(run_dir, threshold=0.0, include_hd95=False)


def test_working_and_native_evaluations_use_the_record(run_dir):
    for native in (False, True):
        ev = evaluate_checkpoint(run_dir, native=native, include_hd95=False)
        assert ev.model == "unet_small" and len(ev.metrics.per_image_table()) == 2  # the split's two test ids
        assert ev.resolution.startswith("native resolution" if native else "32x32")
