"""Nothing reaches the console twice: each log record through the one handler the CLI installs, no `tqdm.write`
beside a log call, no second handler on the root logger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lesionseg
from lesionseg.cli import main

SRC = Path(lesionseg.__file__).resolve().parents[1]  # the package under test, wherever it is imported from


def _train(config: dict, path: Path, *extra: str) -> None:
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--set", "train.epochs=1", "--no-progress", *extra]) == 0


def test_training_messages_are_written_once(tiny_config, blob_root, tmp_path, capsys):
    drawn = dict(tiny_config, data={**tiny_config["data"], "split": str(tmp_path / "drawn.json")})
    drawn["data"]["draw_split"] = {"test_fraction": 0.2, "val_fraction": 0.2}  # drawn on first use, announced
    _train(drawn, tmp_path / "drawn.yaml")
    captured = capsys.readouterr()
    console = captured.out + captured.err
    for line in (
        f"split {tmp_path / 'drawn.json'} did not exist: drew it",
        "epoch 1/1 | loss",
        "post-processing chosen",
    ):
        assert console.count(line) == 1, (line, console)
    assert "did not exist" in captured.err and "did not exist" not in captured.out  # log records go to stderr

    (blob_root / "images" / "case002.png").write_bytes(b"not an image")  # a train id: skipped with a warning
    _train(dict(tiny_config, train={**tiny_config["train"], "name": "skip"}), tmp_path / "skip.yaml", "--skip-bad")
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("skipping 1 case(s) with unusable files") == 1


def test_serve_start_up_lines_are_written_once(tmp_path):
    pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    # A real process: the console as a user sees it (pytest's own log handlers would hide a second root handler).
    script = (
        "import sys, uvicorn\n"
        "uvicorn.run = lambda *a, **k: None\n"
        "from lesionseg.cli import main\n"
        "sys.exit(main(['serve', '--model', 'skin', '--port', '8765']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    assert console.count("loaded model skin from skin") == 1, console
    assert console.count("page at http://127.0.0.1:8765/") == 1, console
