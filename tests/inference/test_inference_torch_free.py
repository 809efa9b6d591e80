"""Inference without torch: the onnxruntime path of `predict` and `serve` never imports torch (nor the engine), the
shipped ONNX graphs match their eager models, and ``auto`` chooses the backend as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lesionseg.inference import Predictor
from lesionseg.inference.export import cached_onnx_path, onnx_session, shipped_onnx_path
from lesionseg.inference.predictor import choose_backend
from lesionseg.models import create_model
from lesionseg.models.hub import ModelRecord, load_pretrained, pretrained_stem, save_checkpoint

SRC = Path(__file__).resolve().parents[2] / "src"

pytest.importorskip("onnxruntime")


def _run_python(code: str, *args: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter on this checkout's sources; it prints one JSON line last."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


LOADED = "[m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'lesionseg.engine'))]"


def _photo(path: Path) -> Path:
    rng = np.random.default_rng(0)
    image = np.full((120, 160, 3), (190, 150, 130), np.uint8)
    image[30:90, 50:110] = (90, 50, 40)
    image = np.clip(image + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path, quality=95)
    return path


def test_predict_with_default_settings_imports_neither_torch_nor_the_engine(tmp_path):
    image = _photo(tmp_path / "one.jpg")
    code = f"""
import json, sys
from lesionseg.cli import main
code = main(sys.argv[1:])
print(json.dumps({{"code": code, "loaded": {LOADED}}}))
"""
    out = _run_python(code, "predict", str(image), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert out == {"code": 0, "loaded": []}
    summary = json.loads((tmp_path / "out" / "measurements.json").read_text())
    assert summary["model"]["backend"] == "onnxruntime"
    assert (tmp_path / "out" / "one_mask.png").is_file() and (tmp_path / "out" / "one_overlay.png").is_file()


def test_records_and_readers_import_without_torch(tmp_path):
    code = f"""
import json, sys
import lesionseg, lesionseg.data, lesionseg.inference, lesionseg.models
from lesionseg.models.hub import ModelRecord, load_record, pretrained_stem
from lesionseg.data.io import read_image
from lesionseg.inference.files import segment_files
record = load_record(pretrained_stem("skin"))
print(json.dumps({{"model": record.model, "loaded": {LOADED}}}))
"""
    out = _run_python(code, cwd=tmp_path)
    assert out["loaded"] == [] and out["model"]


def test_serve_with_default_backend_answers_without_torch(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    image = _photo(tmp_path / "one.jpg")
    code = f"""
import json, sys
from fastapi.testclient import TestClient
from lesionseg.serve import create_app
client = TestClient(create_app(models=["skin"], threads=1))
with open(sys.argv[1], "rb") as f:
    answer = client.post("/api/segment", files={{"image": ("one.jpg", f, "image/jpeg")}})
body = answer.json()
print(json.dumps({{"status": answer.status_code, "area": body["measurements"]["area"], "loaded": {LOADED}}}))
"""
    out = _run_python(code, str(image), cwd=tmp_path)
    assert out["status"] == 200 and out["loaded"] == [] and out["area"] > 0


@pytest.mark.parametrize("tag", ["skin", "polyp"])
def test_shipped_onnx_graph_matches_the_shipped_weights(tag):
    """The graph beside the weights is the network they load into (a re-shipped model without its graph fails)."""
    graph = shipped_onnx_path(pretrained_stem(tag))
    assert graph is not None
    model, record = load_pretrained(tag)
    x = torch.randn(2, record.in_channels, *record.image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        eager = model(x).numpy()
    (ort,) = onnx_session(graph).run(None, {"image": x.numpy()})
    assert ort.shape == eager.shape
    np.testing.assert_allclose(ort, eager, rtol=0, atol=1e-4 * float(np.abs(eager).max()))


def test_auto_prefers_onnxruntime_on_the_cpu_only_where_it_can_run_the_request():
    assert choose_backend("auto", "cpu", "fp32", has_graph=True) == "onnxruntime"
    assert choose_backend("auto", "cpu", "bf16", has_graph=True) == "torch"
    assert choose_backend("auto", "cpu", "fp32", has_graph=False) == "torch"
    assert choose_backend("auto", "cpu", "fp32", has_graph=True, channels_last=True) == "torch"
    assert choose_backend("auto", "cuda", "fp32", has_graph=True) == "torch"
    assert choose_backend("torch", "cpu", "fp32", has_graph=True) == "torch"
    with pytest.raises(ValueError, match="backend"):
        choose_backend("tensorrt")


def test_auto_runs_a_checkpoint_on_onnxruntime_once_its_graph_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONSEG_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    record = ModelRecord(
        model="unet_small", model_kwargs={"channels": [4, 8]}, image_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3
    )
    stem = save_checkpoint(tmp_path / "ckpt", create_model("unet_small", channels=(4, 8)), record)
    assert Predictor.from_checkpoint(stem, backend="auto").backend == "torch"  # no graph yet: auto never exports
    assert not cached_onnx_path(stem, record).exists()
    Predictor.from_checkpoint(stem, backend="onnxruntime")  # exports into the cache, once
    assert Predictor.from_checkpoint(stem, backend="auto").backend == "onnxruntime"
    # A graph beside a training run's checkpoint is never taken for the checkpoint's own (it may be stale).
    assert shipped_onnx_path(stem) is None


def test_onnxruntime_refuses_torch_only_settings():
    with pytest.raises(ValueError, match="torch backend"):
        Predictor.from_pretrained("skin", backend="onnxruntime", precision="bf16")


def test_the_eager_model_runs_in_an_explicit_memory_format():
    model = create_model("unet_small", channels=(4, 8))
    cpu = Predictor(model, (32, 32))
    assert cpu.channels_last  # the CPU default
    conv = next(p for p in cpu.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    plain = Predictor(create_model("unet_small", channels=(4, 8)), (32, 32), channels_last=False)
    assert not plain.channels_last
    x = plain._to_batch([np.zeros((40, 50, 3), np.uint8)])
    assert x.flags["C_CONTIGUOUS"] and x.shape == (1, 3, 32, 32)  # what both backends are handed


@pytest.mark.data
def test_shipped_skin_model_masks_are_the_same_with_onnxruntime_and_eager_on_ph2_test_ids(ph2_root):
    from lesionseg.data import find_cases, load_case, load_split

    test_ids = set(load_split("ph2").test)
    cases = [c for c in find_cases(ph2_root, "ph2") if c.id in test_ids]
    assert len(cases) == len(test_ids) == 30
    eager = Predictor.from_pretrained("skin", backend="torch")
    ort = Predictor.from_pretrained("skin", backend="onnxruntime")
    differing = 0
    for case in cases:
        image, _ = load_case(case)
        differing += int(np.count_nonzero(eager.predict_mask([image])[0] != ort.predict_mask([image])[0]))
    assert differing == 0


def test_the_optimised_graph_is_cached_once_and_gives_the_same_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("LESIONSEG_CACHE", str(tmp_path / "cache"))
    graph = shipped_onnx_path(pretrained_stem("skin"))
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    (fresh,) = onnx_session(graph, 1, reuse_optimized=False).run(None, {"image": x})
    (first,) = onnx_session(graph, 1).run(None, {"image": x})
    saved = list((tmp_path / "cache" / "onnx" / "optimized").glob("skin-*.onnx"))
    assert len(saved) == 1
    (second,) = onnx_session(graph, 1).run(None, {"image": x})  # opened without optimising again
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(second, fresh)
    saved[0].write_bytes(b"damaged")  # a damaged entry is optimised again and replaced
    (third,) = onnx_session(graph, 1).run(None, {"image": x})
    np.testing.assert_array_equal(third, fresh)
    assert saved[0].stat().st_size > 1000
