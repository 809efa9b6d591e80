"""ONNX export of every registered CPU-size model: parity with eager PyTorch and network time, side by side.

Usage: python perf/onnx_parity.py [--size 256] [--threads 2] [--repeats 10] [PATTERN]

For each model (random weights, seed 0): the exporter used, max |onnxruntime - eager| over a batch of 2 and that
difference relative to the largest |logit|, then the median time of one image through the network alone in eager
fp32 and in onnxruntime. Models that cannot be exported are listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from _timing import interleaved

from lesionseg.inference.export import OnnxExportError, export_onnx, onnx_session
from lesionseg.models import create_model, list_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", nargs="?", default="*")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.size}x{args.size}, {args.threads} threads, torch {torch.__version__}")
    header = f"{'model':20s} {'exporter':12s} {'max|diff|':>10s} {'relative':>9s}"
    print(header + f" {'eager ms':>9s} {'ort ms':>8s} {'x':>5s}")
    for name in list_models(args.pattern, cpu_size=True):
        torch.manual_seed(0)
        model = create_model(name).eval()
        x = torch.randn(2, 3, args.size, args.size)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = export_onnx(model, Path(tmp) / "m.onnx", (args.size, args.size), 3)
            except OnnxExportError as err:
                print(f"{name:20s} cannot export: {err}")
                continue
            exporter = json.loads(path.with_suffix(".json").read_text())["onnx"]["exporter"]
            session = onnx_session(path, threads=args.threads)
            (out,) = session.run(None, {"image": x.numpy()})
            one = x[:1]
            feed = {"image": one.numpy()}
            with torch.inference_mode():
                ref = model(x).numpy()
                t = interleaved(
                    {"eager": lambda m=model, o=one: m(o), "ort": lambda s=session, f=feed: s.run(None, f)},
                    args.repeats,
                )
            eager, ort = 1000 * t["eager"].median, 1000 * t["ort"].median
        diff = float(np.abs(out - ref).max())
        rel = diff / max(1.0, float(np.abs(ref).max()))
        print(f"{name:20s} {exporter:12s} {diff:10.2e} {rel:9.1e} {eager:9.1f} {ort:8.1f} {eager / ort:5.1f}")


if __name__ == "__main__":
    main()
