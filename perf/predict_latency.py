"""Where `lesionseg predict` spends its time, each figure beside its baseline, in one run.

Usage: python perf/predict_latency.py [--model skin] [--versus MODEL ...] [--only-side-by-side] [--image PATH]
       [--cores 1] [--repeats 40] [--process-runs 7]

Every section times its settings in interleaved rounds (``perf/_timing.py``) and prints medians (p90 where a tail
matters, and the best round, which on a shared machine is the closest to the machine's own speed); the load average
is printed at the start and the end, because the figures are only as quiet as the machine:

0. with ``--versus``: ``--model`` and each other model as `lesionseg predict` runs them by default (backend auto, trust
   estimates on), one pass and ``--tta``, side by side (e.g. the shipped single model against a fold ensemble).
1. warm end to end for one image (decode, resize, network, resize back, post-process, measure), per backend: eager
   PyTorch contiguous NCHW, eager channels-last (the default on CPU), eager bf16 where the CPU has AVX512-BF16 or AMX,
   onnxruntime (the default where installed); beside "before": Pillow decoding, eager PyTorch and post-processing
   over the whole image, as `lesionseg predict` ran until issue 28. The network alone is timed for each backend.
   Two last rows add what `lesionseg predict` computes besides, for a model with trust estimates (issue 26): the
   quality estimate and the out-of-distribution statistics, with the default settings (one pass: the estimate reads
   the pass the mask comes from) and with ``--tta`` (three passes). Then the default trusted prediction stage by
   stage (median and best of the same interleaved rounds).
2. decoding the image: Pillow as before (copying for EXIF and mode) against the reader now (OpenCV for JPEG).
3. post-processing (largest component + fill holes) of the image's predicted mask: over the whole image (before)
   against inside the lesion's bounding box (now); the masks must be equal and the count of differing pixels is
   printed.
4. writing the overlay PNG: Pillow's default (zlib level 6) against OpenCV at level 1; times and file sizes.
5. the whole `lesionseg predict IMAGE` process: ``--backend torch`` against the default (onnxruntime, no torch
   import), and ``python -c "import torch"`` alone. The processes run with bytecode caching on (as an installed
   package has), in a private cache folder.

``--cores N`` pins this process, and the processes it starts, to N CPUs and runs every library with N threads.
Without ``--image`` a 768x576 JPEG (quality 95) is made from the first PH2 image in ../shared/data (random pixels
when the data is absent).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from _timing import interleaved
from PIL import Image, ImageOps

from lesionseg.data.io import read_image
from lesionseg.inference import Predictor, measure_lesion
from lesionseg.inference.files import write_png
from lesionseg.inference.postprocess import POSTPROCESS_STEPS, apply_postprocessing
from lesionseg.inference.trust import apply_temperature
from lesionseg.runtime import cpu_flags, cpu_name
from lesionseg.viz.overlay import overlay_mask

REPO = Path(__file__).resolve().parents[1]


def make_image(path: Path) -> Path:
    ph2 = REPO.parent / "shared" / "data" / "ph2" / "PH2Dataset" / "PH2 Dataset images"
    sources = sorted(ph2.glob("IMD*/IMD*_Dermoscopic_Image/IMD*.*")) if ph2.is_dir() else []
    if sources:
        image = Image.open(sources[0]).convert("RGB").resize((768, 576), Image.BILINEAR)
    else:
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 255, (576, 768, 3), dtype=np.uint8))
    image.save(path, quality=95)
    return path


# ------------------------------------------------------------------------------------------------ the baselines
def pil_read(path: Path) -> np.ndarray:
    """The reader before issue 28: Pillow decodes every format; EXIF transposition and mode conversion copy."""
    with Image.open(path) as img:
        img.load()
        oriented = ImageOps.exif_transpose(img) or img
        return np.ascontiguousarray(np.asarray(oriented.convert("RGB"), dtype=np.uint8))


def whole_image_largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 2:
        return mask
    return (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)


def whole_image_fill_holes(mask: np.ndarray) -> np.ndarray:
    background = (mask == 0).astype(np.uint8)
    n, labels = cv2.connectedComponents(background, connectivity=4)
    if n <= 1:
        return mask
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return (mask | (~np.isin(labels, border) & (background == 1))).astype(np.uint8)


WHOLE_IMAGE = {"largest_component": whole_image_largest_component, "fill_holes": whole_image_fill_holes}


def whole_image_postprocess(mask: np.ndarray, steps: tuple[str, ...]) -> np.ndarray:
    for step in steps:
        mask = WHOLE_IMAGE[step](mask)
    return mask


def before(predictor: Predictor, path: Path) -> dict:
    image = pil_read(path)
    mask = predictor.mask_from_proba(predictor.predict_proba([image])[0], postprocess=False)
    return measure_lesion(whole_image_postprocess(mask, predictor.postprocess)).to_dict()


def end_to_end(predictor: Predictor, path: Path) -> dict:
    image = read_image(path, predictor.in_channels)
    return measure_lesion(predictor.mask_from_proba(predictor.predict_proba([image])[0])).to_dict()


def with_trust(predictor: Predictor, path: Path) -> dict:
    """What `lesionseg predict` does per image since the trust estimates (issue 26): the plain and two flipped
    passes for the quality estimate, and the image statistics for the out-of-distribution score."""
    prediction = predictor.predict([read_image(path, predictor.in_channels)])[0]
    return measure_lesion(prediction.mask).to_dict() | prediction.trust.to_dict()


def trust_stages(predictor: Predictor, path: Path) -> dict:
    """The default trusted prediction of one file split into its stages, each a callable over the previous stage's
    output (computed once here), in the order `lesionseg predict` runs them."""
    from lesionseg.inference.predictor import _sigmoid

    image = read_image(path, predictor.in_channels)
    work = predictor.working_image(image)
    x = predictor._to_batch([work], working=True)
    passes = predictor._passes(x, flips=predictor.tta)
    small = _sigmoid(passes[0, :, 0])
    raw = predictor._native(small, [image])[0]
    mask = predictor._cut(raw)
    stages = {
        "decode": lambda: read_image(path, predictor.in_channels),
        "resize to working size + normalise": lambda: predictor._to_batch([predictor.working_image(image)], True),
        "network (one pass)": lambda: predictor._run(x),
        "sigmoid + resize back (T = 1)": lambda: predictor._native(_sigmoid(passes[0, :, 0]), [image]),
        "threshold + post-process": lambda: predictor._cut(raw),
        "measure": lambda: measure_lesion(mask),
    }
    if predictor.quality is not None:
        quality = predictor.quality
        stages["quality estimate (working size)"] = lambda: quality.predict(
            quality.signal(predictor.quality_inputs(passes[:, 0, 0]), predictor._cut(small[0]))
        )
    if predictor.description is not None:
        stages["out-of-distribution statistics"] = lambda: predictor.description.score_image(work)
    stages["(calibrated full-size probability, when asked)"] = lambda: apply_temperature(raw, predictor.temperature)
    return stages


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


def ms(seconds: float) -> str:
    return f"{1000 * seconds:8.1f}"


# ------------------------------------------------------------------------------------------------ sections
def side_by_side(args: argparse.Namespace, path: Path) -> None:
    """0. The models of ``--model`` and ``--versus`` as `lesionseg predict` runs them by default (onnxruntime where
    installed, trust estimates on), one pass and with ``--tta``, in the same interleaved rounds."""
    models = [args.model, *args.versus]
    calls, backends = {}, {}
    for model in models:
        for tta in (False, True):
            p = Predictor.from_checkpoint(model, backend="auto", tta=tta)
            calls[(model, tta)] = lambda p=p: with_trust(p, path)
            backends[model] = p.backend
    t = interleaved(calls, args.repeats, warmup=3)
    print(f"\n0. models side by side: warm end to end as `lesionseg predict` runs them, {args.cores} core(s)")
    print(f"{'model':44s} {'backend':>12s} {'1 pass ms (median / p90 / best)':>34s} {'--tta ms (median / best)':>26s}")
    for model in models:
        one, tta = t[(model, False)], t[(model, True)]
        cells = f"{ms(one.median)} / {ms(one.p90)} / {ms(one.best)}"
        print(f"{model:44s} {backends[model]:>12s} {cells}   {ms(tta.median)} / {ms(tta.best)}")


def warm(args: argparse.Namespace, path: Path) -> Predictor:
    flags = cpu_flags()
    settings = [
        ("eager, contiguous NCHW", {"backend": "torch", "channels_last": False}),
        ("eager, channels-last", {"backend": "torch", "channels_last": True}),
    ]
    if flags & {"avx512_bf16", "amx_bf16"}:
        bf16 = {"backend": "torch", "channels_last": True, "precision": "bf16"}
        settings.append(("eager, bf16 + channels-last", bf16))
    settings.append(("onnxruntime", {"backend": "onnxruntime"}))
    predictors = {label: Predictor.from_checkpoint(args.model, **kw) for label, kw in settings}
    image = read_image(path, predictors["onnxruntime"].in_channels)
    x = predictors["onnxruntime"]._to_batch([image])
    calls = {("before", "e2e"): lambda p=predictors["eager, channels-last"]: before(p, path)}
    for label, p in predictors.items():
        calls[(label, "e2e")] = lambda p=p: end_to_end(p, path)
        calls[(label, "net")] = lambda p=p: p._logits(x)
    trusted = predictors["onnxruntime"].quality is not None or predictors["onnxruntime"].description is not None
    stages = {}
    if trusted:
        tta = Predictor.from_checkpoint(args.model, backend="onnxruntime", tta=True)
        calls[("trust", "e2e")] = lambda p=predictors["onnxruntime"]: with_trust(p, path)
        calls[("trust tta", "e2e")] = lambda p=tta: with_trust(p, path)
        stages = trust_stages(predictors["onnxruntime"], path)
        for label, fn in stages.items():
            calls[(label, "stage")] = fn
    t = interleaved(calls, args.repeats, warmup=3)
    print(f"\n1. warm end to end, one {image.shape[1]}x{image.shape[0]} image, {args.cores} core(s)")
    print(f"{'setting':44s} {'end-to-end ms (median / p90 / best)':>36s} {'network ms (median / best)':>27s}")

    def line(label: str, e2e, net=None) -> None:
        cells = f"{ms(e2e.median)} / {ms(e2e.p90)} / {ms(e2e.best)}"
        print(f"{label:44s} {cells}   " + (f"{ms(net.median)} / {ms(net.best)}" if net else f"{'-':>19s}"))

    line("before: Pillow, eager, whole-image post-proc", t[("before", "e2e")])
    for label in predictors:
        line("now: " + label, t[(label, "e2e")], t[(label, "net")])
    if trusted:
        line("now: onnxruntime, trust on, default (1 pass)", t[("trust", "e2e")])
        line("now: onnxruntime, trust on, --tta (3 passes)", t[("trust tta", "e2e")])
        print("\n   the default trusted prediction, stage by stage (ms, median / best)")
        for label in stages:
            timing = t[(label, "stage")]
            print(f"   {label:41s} {ms(timing.median)} / {ms(timing.best)}")
    return predictors["onnxruntime"]


def decode(args: argparse.Namespace, path: Path) -> None:
    png = path.with_suffix(".png")
    Image.open(path).save(png)
    calls = {
        "jpeg: Pillow (before)": lambda: pil_read(path),
        "jpeg: read_image (OpenCV)": lambda: read_image(path),
        "png: Pillow (before)": lambda: pil_read(png),
        "png: read_image (Pillow)": lambda: read_image(png),
    }
    same = np.array_equal(pil_read(path), read_image(path))
    t = interleaved(calls, args.repeats, warmup=2)
    print(f"\n2. decoding ({'same' if same else 'DIFFERENT'} pixels from Pillow and OpenCV for the JPEG)")
    for label, timing in t.items():
        print(f"{label:44s} {ms(timing.median)} ms (best {ms(timing.best).strip()})")


def postprocess(args: argparse.Namespace, predictor: Predictor, path: Path) -> np.ndarray:
    steps = predictor.postprocess or tuple(POSTPROCESS_STEPS)
    mask = predictor.mask_from_proba(predictor.predict_proba([read_image(path)])[0], postprocess=False)
    differ = int(np.count_nonzero(whole_image_postprocess(mask, steps) != apply_postprocessing(mask, steps)))
    t = interleaved(
        {
            "whole image (before)": lambda: whole_image_postprocess(mask, steps),
            "lesion's bounding box (now)": lambda: apply_postprocessing(mask, steps),
        },
        args.repeats,
        warmup=2,
    )
    print(f"\n3. post-processing {' + '.join(steps)} at {mask.shape[1]}x{mask.shape[0]}: {differ} pixels differ")
    for label, timing in t.items():
        print(f"{label:44s} {ms(timing.median)} ms (best {ms(timing.best).strip()})")
    return apply_postprocessing(mask, steps)


def png(args: argparse.Namespace, path: Path, mask: np.ndarray, tmp: Path) -> None:
    overlay = overlay_mask(read_image(path), mask)

    def pil() -> None:
        Image.fromarray(overlay).save(tmp / "pil.png")

    def fast() -> None:
        write_png(tmp / "fast.png", overlay)

    t = interleaved({"Pillow, zlib level 6 (before)": pil, "OpenCV, zlib level 1 (now)": fast}, args.repeats, warmup=1)
    sizes = [(tmp / "pil.png").stat().st_size, (tmp / "fast.png").stat().st_size]
    print("\n4. writing the overlay PNG")
    for (label, timing), size in zip(t.items(), sizes):
        print(f"{label:44s} {ms(timing.median)} ms (best {ms(timing.best).strip()}) {size / 1e3:6.0f} kB")
    same = np.array_equal(np.asarray(Image.open(tmp / "pil.png")), np.asarray(Image.open(tmp / "fast.png")))
    print(f"{'':44s} (same pixels read back: {same})")


def process(args: argparse.Namespace, path: Path, tmp: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(OMP_NUM_THREADS=str(args.cores), PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    predict = [sys.executable, "-m", "lesionseg", "predict", str(path), "--model", args.model, "--out", str(tmp / "o")]

    def run(cmd: list[str]):
        return lambda: subprocess.run(cmd, check=True, capture_output=True, env=env)

    calls = {
        "`lesionseg predict` --backend torch (before)": run([*predict, "--backend", "torch"]),
        "`lesionseg predict` (default: onnxruntime)": run(predict),
        '`python -c "import torch"`': run([sys.executable, "-c", "import torch"]),
        '`python -c "pass"`': run([sys.executable, "-c", "pass"]),
    }
    check = "import sys, lesionseg.cli as c; c.main(sys.argv[1:]); print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", check, *predict[3:]], capture_output=True, env=env, text=True)
    t = interleaved(calls, args.process_runs, warmup=1)
    print(f"\n5. the whole process, {args.cores} core(s), median of {args.process_runs} interleaved runs")
    for label, timing in t.items():
        print(f"{label:44s} {timing.median:8.2f} s (best {timing.best:.2f} s)")
    print(f"{'':44s} (torch imported by the default run: {loaded.stdout.strip().splitlines()[-1]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="skin", help="shipped tag or checkpoint")
    parser.add_argument("--image", type=Path)
    parser.add_argument(
        "--versus", action="append", default=[], help="another model timed beside --model in section 0 (repeat)"
    )
    parser.add_argument("--only-side-by-side", action="store_true", help="section 0 alone")
    parser.add_argument("--cores", type=int, default=1, help="CPUs to pin to, and threads of every library")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--process-runs", type=int, default=7)
    parser.add_argument("--no-process", action="store_true", help="skip timing whole `lesionseg predict` processes")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    torch.set_num_threads(args.cores)
    cv2.setNumThreads(args.cores)
    tmp = Path(tempfile.mkdtemp())
    path = args.image or make_image(tmp / "lesion_768x576.jpg")
    print(f"{args.model} on {path.name}: {cpu_name()}, torch {torch.__version__}, {args.cores} core(s); {load()}")
    if args.versus or args.only_side_by_side:
        side_by_side(args, path)
    if args.only_side_by_side:
        print(f"\nend: {load()}")
        return
    predictor = warm(args, path)
    decode(args, path)
    mask = postprocess(args, predictor, path)
    png(args, path, mask, tmp)
    if not args.no_process:
        process(args, path, tmp)
    print(f"\nend: {load()}")


if __name__ == "__main__":
    main()
