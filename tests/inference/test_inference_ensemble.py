"""An ensemble exported to ONE ONNX graph: the same output as the eager ensemble, run without torch, and the same
masks on real PH2 images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lesionseg.cli import main
from lesionseg.inference import Predictor
from lesionseg.inference.export import onnx_session
from lesionseg.models import create_model
from lesionseg.models.hub import ModelRecord, load_model, load_pretrained, save_checkpoint, save_ensemble

pytest.importorskip("onnxruntime")

SRC = Path(__file__).resolve().parents[2] / "src"


def _tiny_ensemble(root: Path) -> Path:
    torch.manual_seed(0)
    stems = []
    for name, channels, size in (("a", (4, 8), (32, 32)), ("b", (4, 8, 16), (48, 40))):
        record = ModelRecord(
            model="unet_small",
            model_kwargs={"channels": list(channels)},
            image_size=size,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
        )
        stems.append(save_checkpoint(root / name, create_model("unet_small", channels=channels), record))
    return save_ensemble(root / "ens.json", stems)


def test_export_writes_one_graph_that_matches_the_eager_ensemble(tmp_path, capsys):
    stem = _tiny_ensemble(tmp_path)
    record_path = str(stem.with_suffix(".json"))
    assert main(["export", "--onnx", str(tmp_path / "ens.onnx"), "--model", record_path]) == 2  # its own record
    assert main(["export", "--onnx", str(tmp_path / "out" / "ens.onnx"), "--model", record_path]) == 0
    assert "input 'image' N x 3 x 48 x 40" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "ens.json").read_text())
    assert meta["kind"] == "ensemble" and len(meta["members"]) == 2
    model, _ = load_model(stem)
    x = torch.randn(3, 3, 48, 40)
    with torch.no_grad():
        want = model(x).numpy()
    session = onnx_session(tmp_path / "out" / "ens.onnx", reuse_optimized=False)
    (got,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_the_onnxruntime_ensemble_runs_without_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONSEG_CACHE", str(tmp_path / "cache"))
    stem = _tiny_ensemble(tmp_path)
    Predictor.from_checkpoint(stem, backend="onnxruntime")  # exports the ensemble's graph into the cache, once
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from lesionseg.inference import Predictor\n"
        "p = Predictor.from_checkpoint(sys.argv[1], backend='onnxruntime')\n"
        "mask = p.predict_mask([np.zeros((30, 40, 3), np.uint8)])[0]\n"
        "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "print(json.dumps({'torch': loaded, 'shape': list(mask.shape)}))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", code, str(stem)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"torch": [], "shape": [30, 40]}


@pytest.mark.data
def test_an_exported_ensemble_gives_the_eager_masks_on_ph2_test_ids(ph2_root, tmp_path):
    """The shipped skin model and a copy of it run at another size (192x256), averaged; masks at native size."""
    from lesionseg.data import find_cases, load_case, load_split

    model, record = load_pretrained("skin")
    other = save_checkpoint(tmp_path / "skin_192x256", model, replace(record, image_size=(192, 256), pretrained=None))
    stem = save_ensemble(tmp_path / "skin_ens.json", ["skin", other])
    assert main(["export", "--onnx", str(tmp_path / "onnx" / "skin_ens.onnx"), "--model", str(stem)]) == 0
    ensemble = load_model(stem)
    eager = Predictor.from_record(*ensemble, backend="torch")
    ort = Predictor.from_record(tmp_path / "onnx" / "skin_ens.onnx", ensemble[1], backend="onnxruntime")
    test_ids = set(load_split("ph2").test)
    cases = [c for c in find_cases(ph2_root, "ph2") if c.id in test_ids]
    assert len(cases) == 30
    differing = []
    for case in cases:
        image, _ = load_case(case)
        differing.append(int(np.count_nonzero(eager.predict_mask([image])[0] != ort.predict_mask([image])[0])))
    print(f"pixels differing between eager and ONNX ensemble masks on {len(cases)} PH2 test images: {differing}")
    assert sum(differing) <= 10 * len(cases) and max(differing) <= 50
