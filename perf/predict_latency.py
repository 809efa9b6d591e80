"""End-to-end latency of one image through a shipped model: read, resize, network, resize back, post-process, measure.

Usage: python perf/predict_latency.py [--model skin] [--image PATH] [--threads 2] [--repeats 50]

Prints, side by side in one run, the warm per-image time (median and p90 over ``--repeats``) of each backend: eager
fp32, eager channels-last, eager bf16 (only where the CPU has AVX512-BF16 or AMX), onnxruntime; the network alone for
each; and the wall time of a whole `lesionseg predict IMAGE` process. Without ``--image`` a 768x576 PNG is made from
the first PH2 test image in ../shared/data (or a synthetic one when the data is absent).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _timing import interleaved, time_calls
from PIL import Image

from lesionseg.data.io import read_image
from lesionseg.engine.provenance import cpu_flags
from lesionseg.inference import Predictor, measure_lesion

REPO = Path(__file__).resolve().parents[1]


def make_image(path: Path) -> Path:
    ph2 = REPO.parent / "shared" / "data" / "ph2" / "PH2Dataset" / "PH2 Dataset images"
    sources = sorted(ph2.glob("IMD*/IMD*_Dermoscopic_Image/IMD*.*")) if ph2.is_dir() else []
    if sources:
        image = Image.open(sources[0]).convert("RGB").resize((768, 576), Image.BILINEAR)
    else:
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 255, (576, 768, 3), dtype=np.uint8))
    image.save(path)
    return path


def end_to_end(predictor: Predictor, path: Path) -> dict:
    image = read_image(path, predictor.in_channels)
    mask = predictor.mask_from_proba(predictor.predict_proba([image])[0])
    return measure_lesion(mask).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="skin", help="shipped tag or checkpoint")
    parser.add_argument("--image", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--no-process", action="store_true", help="skip timing the `lesionseg predict` process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    path = args.image or make_image(tmp / "lesion_768x576.png")
    flags = cpu_flags()
    has_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    settings = [("eager fp32", {}), ("eager channels-last", {"channels_last": True})]
    if has_bf16:
        settings.append(("eager bf16 + channels-last", {"channels_last": True, "precision": "bf16"}))
    settings.append(("onnxruntime", {"backend": "onnxruntime"}))
    w, h = Image.open(path).size
    print(f"{args.model} on {path.name} ({w}x{h}), {args.threads} threads, torch {torch.__version__}")
    bf16_flags = ", ".join(sorted(flags & {"avx512_bf16", "amx_bf16"})) or "-"
    print(f"CPU bf16 support: {'yes' if has_bf16 else 'no'} ({bf16_flags})")
    print(f"{'backend':28s} {'end-to-end ms (median / p90)':>30s} {'network ms (median)':>20s}")
    calls = {}
    for label, kwargs in settings:
        predictor = Predictor.from_checkpoint(args.model, **kwargs)
        image = read_image(path, predictor.in_channels)
        x = torch.from_numpy(predictor._to_batch([image]))
        calls[(label, "e2e")] = lambda p=predictor: end_to_end(p, path)
        calls[(label, "net")] = lambda p=predictor, x=x: p.logits_at_working_size(x)
    timings = interleaved(calls, args.repeats, warmup=3)
    for label, _ in settings:
        e2e, net = timings[(label, "e2e")], timings[(label, "net")]
        print(f"{label:28s} {1000 * e2e.median:14.1f} / {1000 * e2e.p90:6.1f}      {1000 * net.median:20.1f}")
    if not args.no_process:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        cmd = [sys.executable, "-m", "lesionseg", "predict", str(path), "--model", args.model, "--out", str(tmp / "o")]
        process = time_calls(lambda: subprocess.run(cmd, check=True, capture_output=True, env=env), 5, warmup=0)
        print(f"`lesionseg predict one image` process: {process.median:.2f} s (median of 5)")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True, env=env)
        print(f"  of which `python -c 'import torch'` alone: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
