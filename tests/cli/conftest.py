"""CLI fixtures: a tiny run trained through the CLI itself."""

from __future__ import annotations

import pytest
import yaml

from lesionseg.cli import main


@pytest.fixture
def trained(tiny_config, tmp_path):
    """The run folder of the tiny config trained for one epoch with `lesionseg train`."""
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", "--config", str(cfg_path), "--set", "train.epochs=1", "--no-progress"]) == 0
    return tmp_path / "runs" / "tiny"
