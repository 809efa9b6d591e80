"""Ship a trained run as a pretrained model inside the package: weights, record with test metrics, model card.

Usage:
    python tools/ship_pretrained.py runs/skin --tag skin --title "Skin lesion (dermoscopy)" \
        --config configs/pretrained/skin.yaml --intended "..." [--machine "..."]

Steps, all with the project's own code: (1) if the run's best record has no post-processing choice yet, make it with
the trainer's own ``on_train_end`` (the run folder's saved config, validation ids only); (2) evaluate the best
checkpoint on the split's test ids at the training size and at native resolution, both reductions
(``lesionseg.engine.evaluate_checkpoint``, post-processing applied), with the trust figures the trainer's hook made
possible (ECE before/after temperature, quality estimate, out-of-distribution flags; ``tools/refit_trust.py`` fits
them for a run that has none); (3) time one 768x576 image end to end; (4) write
``src/lesionseg/models/weights/<tag>.{safetensors,json,onnx,md}`` (the ONNX graph exported from the shipped weights,
which the onnxruntime backend runs without torch). The card quotes every figure with its command.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from refit_trust import trust_card_section  # the same directory: the section refit_trust.py writes
from safetensors.torch import load_file, save_file

from lesionseg.data import load_split
from lesionseg.engine import Trainer, evaluate_checkpoint
from lesionseg.inference import Predictor, measure_lesion
from lesionseg.inference.export import export_onnx
from lesionseg.metrics import format_table
from lesionseg.models.complexity import count_macs, count_parameters
from lesionseg.models.hub import WEIGHTS_DIR, FileChecksums, ShippedInfo, file_sha256, load_model, load_record
from lesionseg.runtime import cpu_name

REPO = Path(__file__).resolve().parents[1]


def latency_ms(stem: Path, backend: str, threads: int, repeats: int = 30) -> float:
    torch.set_num_threads(threads)
    predictor = Predictor.from_checkpoint(stem, backend=backend)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (576, 768, predictor.in_channels), dtype=np.uint8)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        mask = predictor.mask_from_proba(predictor.predict_proba([image])[0])
        measure_lesion(mask)
        if i >= 3:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def use_and_limits(args: argparse.Namespace) -> str:
    """The card's intended use, limits and choice of architecture (every shipped card has them, worded alike)."""
    return f"""## Intended use
{args.intended}

**Research and education only. Not a medical device**: it has not been validated clinically and must not be used to
diagnose, to triage or to decide any treatment.

## Limits
{args.limits}
Its test set is small (the numbers below carry a few points of uncertainty), and a model trained on one
acquisition device will do worse on images from other devices, populations, resolutions or framings.

## Why this architecture
{args.why}
"""


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--title", required=True)
    parser.add_argument("--config", required=True, help="the config the run was trained from (quoted in the card)")
    parser.add_argument("--intended", required=True, help="intended use, one paragraph")
    parser.add_argument("--limits", default="", help="limits beyond the standard ones, one paragraph")
    parser.add_argument("--why", default="", help="why this architecture, one paragraph")
    parser.add_argument("--machine", default="", help="where it was trained (quoted in the card)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (metrics measured after)")
    args = parser.parse_args()

    best = args.run_dir / "best"
    record = load_record(best)
    if record.postprocess is None:
        trainer = Trainer.from_run_dir(args.run_dir, progress=False)
        trainer.on_train_end()
        record = load_record(best)
    if args.half:
        # Half-precision storage halves the package; loading casts back into the model's float32 parameters, and
        # every figure below is measured on the stored (rounded) weights.
        weights = load_file(str(best) + ".safetensors")
        half = args.run_dir / "best_float16"
        save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, str(half) + ".safetensors")
        # The record names the checksum of the weights it belongs to: the float16 file's now.
        sealed = replace(record, sha256=FileChecksums(weights=file_sha256(str(half) + ".safetensors")))
        Path(str(half) + ".json").write_text(sealed.to_json())
        best = half
    evaluations = {}
    for key, native in (("working", False), ("native", True)):
        ev = evaluate_checkpoint(best, native=native, include_hd95=True, measurements=native)
        evaluations[key] = (ev, ev.results())
    model, _ = load_model(best)
    size = record.image_size
    params = count_parameters(model)
    macs = count_macs(model, size)
    lat = {b: latency_ms(best, b, args.threads) for b in ("torch", "onnxruntime")}
    trained = record.dataset
    if trained is None or record.config is None or record.postprocess is None:
        raise SystemExit(f"{best}.json: not a trainer's record (no dataset, config or post-processing)")
    split = load_split(trained.split)
    cfg = record.config

    test_metrics = {
        key: {
            "dice_per_image": res["per_image"]["dice"],
            "dice_global": res["global"]["dice"],
            "iou_per_image": res["per_image"]["iou"],
            "iou_global": res["global"]["iou"],
            "hd95_per_image": res["per_image"].get("hd95"),
            "cases": ev.cases,
            "resolution": ev.resolution,
        }
        for key, (ev, res) in evaluations.items()
    }
    trust = evaluations["working"][0].trust
    shipped = ShippedInfo(
        tag=args.tag,
        title=args.title,
        dataset=f"{trained.layout}, split {trained.split} "
        f"({len(split.train)} train / {len(split.val)} val / {len(split.test)} test ids)",
        test_metrics=test_metrics,
        latency_ms={**{k: round(v, 1) for k, v in lat.items()}, "threads": args.threads},
        trained_with=f"lesionseg train --config {args.config}",
        date=datetime.date.today().isoformat(),
        stored_as="float16" if args.half else "float32",
        trust_test=None
        if trust is None or record.quality is None
        else {
            **trust.summary(),
            "command": f"`lesionseg evaluate --model {args.tag} --data-root {trained.root}`",
            "machine": cpu_name(),
        },
    )
    data_root = trained.root
    # A path of the machine that trained it means nothing to a user.
    record = replace(record, state=None, dataset=replace(trained, root=None), pretrained=shipped)

    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = WEIGHTS_DIR / args.tag
    shutil.copyfile(str(best) + ".safetensors", str(stem) + ".safetensors")
    (stem.with_suffix(".json")).write_text(record.to_json())
    # The graph of the weights as shipped (float16 storage included); exported aside, as export_onnx also writes a
    # record beside its file.
    shipped_model, _ = load_model(stem)
    with tempfile.TemporaryDirectory() as tmp:
        graph = export_onnx(shipped_model, Path(tmp) / "model.onnx", record.image_size, record.in_channels)
        shutil.copyfile(graph, str(stem) + ".onnx")

    sha = hashlib.sha256(Path(str(stem) + ".safetensors").read_bytes()).hexdigest()
    pp = record.postprocess
    pp_scores = ", ".join(f"{k}: {pct(v)}" for k, v in (pp.val_dice or {}).items())
    pp_reduction = (pp.reduction or "per_image").replace("_", "-")
    metrics_csv = args.run_dir / "metrics.csv"
    epochs = sum(1 for _ in metrics_csv.open()) - 1 if metrics_csv.is_file() else record.epoch
    card = f"""# `{args.tag}`: {args.title}

Model `{record.model}` ({params / 1e6:.3f}M parameters, {macs / 1e9:.3f} GMACs at {size[0]}x{size[1]}), trained
by `lesionseg train` on real data. Load it with `lesionseg predict IMAGE --model {args.tag}`,
`Predictor.from_pretrained("{args.tag}")` or `create_model("{record.model}", pretrained="{args.tag}")`.

{use_and_limits(args)}
## Data and split
{shipped.dataset}; the split is shipped in the package
(`lesionseg/splits/{trained.split}.json`, seed 0). Trained on the training ids only; the checkpoint
(epoch {record.epoch} of {epochs}) and the post-processing were selected on the validation ids; the test ids were
never used for training or selection.

## Recipe
Config [`{args.config}`](../../../../{args.config}) (its header says what was changed from the paper's recipe and why):
{cfg["model"]["name"]} {cfg["model"]["kwargs"]}, loss {cfg["loss"]["name"]} {cfg["loss"]["kwargs"]},
{cfg["optim"]["name"]} lr {cfg["optim"]["lr"]} ({cfg["optim"]["scheduler"]} to {cfg["optim"]["min_lr"]}), batch
{cfg["data"]["batch_size"]} at {size[0]}x{size[1]}, {cfg["train"]["epochs"]} epochs, {cfg["train"]["precision"]},
augmentation {cfg["data"]["augment"]}. Normalisation mean {list(record.mean)}, std {list(record.std)}; threshold
{record.threshold}.

```bash
lesionseg train --config {args.config}
python tools/ship_pretrained.py runs/{args.run_dir.name} --tag {args.tag} --config {args.config} ...   # this card
```

{args.machine}

Post-processing chosen on the validation ids at the end of training (kept only if it raised the validation
{pp_reduction} Dice): **{" + ".join(pp.steps) or "none"}** (validation Dice {pp_scores}).
`predict`, `evaluate` and the benchmark apply it; `--no-postprocess` switches it off.

## Test metrics
Scores in percent; **global** = one confusion matrix over all test pixels (how papers report), **per-image** = the
mean of each image's score; HD95 in pixels of the evaluated resolution. Post-processing applied.

```bash
lesionseg evaluate --model {args.tag} --data-root {data_root}            # at {size[0]}x{size[1]}
lesionseg evaluate --model {args.tag} --data-root {data_root} --native   # at each image's own resolution
```

{format_table(evaluations["working"][1], evaluations["working"][0].title)}
{format_table(evaluations["native"][1], evaluations["native"][0].title)}
{evaluations["native"][0].subgroup_table()}

## Measurements against the ground truth
Each test image measured on its predicted and on its hand-drawn mask, at its own resolution, with the estimator
`predict` and the API use:

```bash
lesionseg evaluate --model {args.tag} --data-root {data_root} --native --measurements --out eval_{args.tag}
```

{evaluations["native"][0].agreement.table()}

{trust_card_section(record) + chr(10) if shipped.trust_test else ""}## Speed
One 768x576 image end to end (resize, network, resize back, post-process, measure; decoding excluded), warm,
{args.threads} threads, median of 30: eager PyTorch {lat["torch"]:.1f} ms, onnxruntime {lat["onnxruntime"]:.1f} ms, on
{cpu_name()} (`python perf/predict_latency.py --model {args.tag}` gives the full comparison).

Files: `{args.tag}.safetensors` (weights, SHA-256 `{sha}`; safetensors, so loading never unpickles),
`{args.tag}.json` (the record: architecture, normalisation, threshold, post-processing, training config, these metrics),
`{args.tag}.onnx` (the same network as an ONNX graph, which `lesionseg predict` runs with onnxruntime, without torch).
"""
    stem.with_suffix(".md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
