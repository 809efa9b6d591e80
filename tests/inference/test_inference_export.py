"""ONNX export of every registered CPU-size model: exported, run in onnxruntime, compared with eager."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lesionseg.inference.export import export_onnx, onnx_session
from lesionseg.models import create_model, list_models
from lesionseg.models.hub import ModelRecord

pytest.importorskip("onnxruntime")

# Largest |onnxruntime - eager| allowed, relative to max(1, largest |logit|). The selective-scan models evaluate
# their scan as float32 exp/cumulative sums that onnxruntime orders differently; measured 2.5e-4 and 4.3e-4 at 64x64.
TOLERANCE = {"cmssm_unet_s": 2e-3, "vmunet_s": 2e-3}
DEFAULT_TOLERANCE = 1e-4
# Models whose input must be a multiple of more than 64 pixels.
SIZE = {"lv_unet": 128}
# Models that cannot be exported, with the reason (none today; keep the reason when adding one).
CANNOT_EXPORT: dict[str, str] = {}


@pytest.mark.parametrize("name", list_models(cpu_size=True))
def test_onnx_matches_eager(name, tmp_path):
    if name in CANNOT_EXPORT:
        pytest.skip(CANNOT_EXPORT[name])
    torch.manual_seed(0)
    model = create_model(name).eval()
    size = SIZE.get(name, 64)
    record = ModelRecord(model=name, image_size=(size, size), mean=(0.5,) * 3, std=(0.25,) * 3)
    path = export_onnx(model, tmp_path / f"{name}.onnx", (size, size), 3, record=record)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model"] == name and meta["onnx"]["dynamic_axes"] == ["batch"]
    session = onnx_session(path, threads=1)
    for batch in (1, 3):  # the example had batch 2: the batch axis must be dynamic
        x = torch.randn(batch, 3, size, size)
        (out,) = session.run(None, {"image": x.numpy()})
        with torch.inference_mode():
            ref = model(x).numpy()
        assert out.shape == ref.shape == (batch, 1, size, size)
        scale = max(1.0, float(np.abs(ref).max()))
        assert np.abs(out - ref).max() <= TOLERANCE.get(name, DEFAULT_TOLERANCE) * scale


def test_compact_float16_halves_exact_weights_and_changes_no_output(tmp_path):
    from lesionseg.inference.export import compact_float16

    torch.manual_seed(0)
    model = create_model("unet_small").eval()
    with torch.no_grad():  # weights as the package stores them: float16, cast back to float32
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())
    path = export_onnx(model, tmp_path / "m.onnx", (64, 64))
    x = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    (before_out,) = onnx_session(path, reuse_optimized=False).run(None, {"image": x})
    before, after = compact_float16(path)
    assert after < before and path.stat().st_size == after  # folded batch norms stay float32
    (after_out,) = onnx_session(path, reuse_optimized=False).run(None, {"image": x})
    np.testing.assert_array_equal(after_out, before_out)
