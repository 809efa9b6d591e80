"""Ship an ensemble (a fold ensemble from cross-validation) as a pretrained model inside the package.

Usage:
    python tools/ship_ensemble.py runs/cv/skin/ensemble.json --tag skin --title "Skin lesion (dermoscopy)" \
        --config configs/pretrained/skin.yaml --cv-dir runs/cv/skin --split-prefix ph2_cv5 --other-root ... \
        --intended "..." [--why "..."] [--limits "..."] [--machine "..."]

Steps, all with the project's own code: (1) each member's best weights stored as float16 in
``src/lesionseg/models/weights/<tag>/<fold>.{safetensors,json}`` (the record re-sealed with the float16 file's
checksum, its fold's split shipped as ``lesionseg/splits/<prefix>_fold_<i>.json``); (2) the ensemble record
``weights/<tag>.json`` with the source ensemble's settings (threshold, post-processing, temperature and quality
curves fitted out of fold by ``lesionseg ensemble create --oof``; the members' image description), its split the
package split whose test ids the folds left out; (3) evaluated on those test ids at the working size and at native
resolution, with and without flip TTA, both reductions (``lesionseg.engine.evaluate_checkpoint``), measurements
against the ground truth, the trust figures, and the share of another dataset flagged; (4) one 768x576 image timed
end to end; (5) the ensemble's ONNX graph (one graph running every member, float16-exact initializers stored as
float16: ``compact_float16``) as ``weights/<tag>.onnx``; (6) the card ``weights/<tag>.md`` with the cross-validation
table, the candidates of ``lesionseg cv find-best`` and every figure's command. Every figure is measured on the
shipped (float16) files.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from refit_trust import _MODE_FIGURES, trust_card_section  # the same directory
from safetensors.torch import load_file, save_file
from ship_pretrained import latency_ms, pct, use_and_limits

from lesionseg.data import load_split, scan_cases
from lesionseg.engine import evaluate_checkpoint
from lesionseg.inference import Predictor
from lesionseg.inference.export import compact_float16, export_onnx
from lesionseg.inference.trust_fit import case_features
from lesionseg.metrics import format_table
from lesionseg.models.complexity import count_macs, count_parameters
from lesionseg.models.hub import (
    WEIGHTS_DIR,
    EnsembleRecord,
    FileChecksums,
    ShippedInfo,
    checkpoint_stem,
    file_sha256,
    load_ensemble_members,
    load_model,
    load_record,
    save_ensemble,
    write_ensemble_record,
)
from lesionseg.runtime import cpu_name

REPO = Path(__file__).resolve().parents[1]
SPLITS_DIR = REPO / "src" / "lesionseg" / "splits"


def ship_members(source: Path, record: EnsembleRecord, tag: str, split_prefix: str) -> list[Path]:
    """The members as float16 checkpoints in ``weights/<tag>/``; returns their stems."""
    out_dir = WEIGHTS_DIR / tag
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    stems = []
    for i, (m_stem, m_record) in enumerate(load_ensemble_members(source, record)):
        name = m_stem.parent.name if m_stem.name == "best" else m_stem.name
        dataset = m_record.dataset
        if dataset is not None and dataset.split is not None:
            split_name = f"{split_prefix}_{name}" if name.startswith("fold_") else f"{split_prefix}_member_{i}"
            split_file = Path(dataset.split)
            if split_file.is_file():
                shutil.copyfile(split_file, SPLITS_DIR / f"{split_name}.json")
                dataset = replace(dataset, split=split_name, root=None)
            else:
                dataset = replace(dataset, root=None)
        weights = load_file(str(m_stem) + ".safetensors")
        stem = out_dir / name
        save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, str(stem) + ".safetensors")
        sealed = replace(
            m_record,
            state=None,
            dataset=dataset,
            sha256=FileChecksums(weights=file_sha256(str(stem) + ".safetensors")),
        )
        Path(str(stem) + ".json").write_text(sealed.to_json())
        stems.append(stem)
    return stems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ensemble", type=Path, help="the ensemble record (lesionseg ensemble create --oof ...)")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--title", required=True)
    parser.add_argument("--config", required=True, help="the config every member was trained from")
    parser.add_argument("--cv-dir", type=Path, required=True, help="the cross-validation folder (cv_summary.md)")
    parser.add_argument("--find-best", type=Path, help="find_best.md of `lesionseg cv find-best`, quoted in the card")
    parser.add_argument("--choice", default="", help="why this configuration was chosen, one paragraph")
    parser.add_argument("--split", default=None, help="package split whose test ids the folds left out")
    parser.add_argument("--split-prefix", required=True, help="name prefix of the members' shipped fold splits")
    parser.add_argument("--data-root", help="the dataset (default: the source record's)")
    parser.add_argument("--other-root", help="another dataset's images, to measure the out-of-distribution flag")
    parser.add_argument("--intended", required=True, help="intended use, one paragraph")
    parser.add_argument("--limits", default="", help="limits beyond the standard ones, one paragraph")
    parser.add_argument("--why", default="", help="why this architecture, one paragraph")
    parser.add_argument("--machine", default="", help="where it was trained (quoted in the card)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    source = checkpoint_stem(args.ensemble)
    src = load_record(source)
    if not isinstance(src, EnsembleRecord) or src.dataset is None or src.quality is None:
        raise SystemExit(f"{source}.json: not an ensemble fitted out of fold (lesionseg ensemble create --oof ...)")
    data_root = args.data_root or src.dataset.root
    split_name = args.split or src.dataset.layout
    fold_split = load_split(src.dataset.split)
    if sorted(load_split(split_name).test) != sorted(fold_split.test):
        raise SystemExit(f"split {split_name!r} does not have the test ids the folds left out")

    member_stems = ship_members(source, src, args.tag, args.split_prefix)
    stem = WEIGHTS_DIR / args.tag
    for suffix in (".safetensors", ".onnx"):  # a single model shipped under this tag before
        Path(str(stem) + suffix).unlink(missing_ok=True)
    settings = {
        name: getattr(src, name)
        for name in ("threshold", "postprocess", "temperature", "quality", "image_description", "trust_validation")
    }
    weights = [m.weight for m in src.members] if src.combine == "weights" else None
    save_ensemble(
        stem,
        member_stems,
        weights=weights,
        image_size=src.image_size,
        mean=src.mean,
        std=src.std,
        dataset=replace(src.dataset, split=split_name, root=data_root),
        oof={**(src.oof or {}), "cv_dir": str(args.cv_dir)},
        **settings,
    )

    evaluations = {}
    for key, native, tta in (
        ("working", False, False),
        ("working_tta", False, True),
        ("native", True, False),
        ("native_tta", True, True),
    ):
        ev = evaluate_checkpoint(
            stem, data_root=data_root, native=native, tta=tta, include_hd95=True, measurements=native
        )
        evaluations[key] = (ev, ev.results())
        print(f"{key}: {ev.results()['per_image']['dice']:.4f} per-image, {ev.results()['global']['dice']:.4f} global")
    model, record = load_model(stem)
    params = count_parameters(model)
    macs = sum(count_macs(m, size) for m, size in zip(model.members, model.member_sizes))
    lat = {b: latency_ms(stem, b, args.threads) for b in ("torch", "onnxruntime")}
    lat_tta = latency_ms_tta(stem, args.threads)

    trust = evaluations["working"][0].trust
    test = trust.summary()
    command = f"`lesionseg evaluate --model {args.tag} --data-root {data_root}`"
    test["command"] = command
    flip = evaluations["working_tta"][0].trust.summary()
    test["tta"] = {k: flip[k] for k in _MODE_FIGURES} | {"command": command[:-1] + " --tta`"}
    test["machine"] = cpu_name()
    if args.other_root:
        predictor = Predictor.from_checkpoint(stem)
        other = scan_cases(args.other_root).cases
        description = predictor.description
        scores = np.atleast_1d(description.score(case_features(predictor, other)))
        test["other_dataset"] = {
            "name": Path(args.other_root).name,
            "images": len(other),
            "rate": round(float(np.mean(scores > description.threshold)), 4),
            "median_score": round(float(np.median(scores)), 3),
        }
    split = load_split(split_name)
    test_metrics = {
        key: {
            "dice_per_image": res["per_image"]["dice"],
            "dice_global": res["global"]["dice"],
            "iou_per_image": res["per_image"]["iou"],
            "iou_global": res["global"]["iou"],
            "hd95_per_image": res["per_image"].get("hd95"),
            "cases": ev.cases,
            "resolution": ev.resolution,
            "tta": key.endswith("_tta"),
        }
        for key, (ev, res) in evaluations.items()
    }
    shipped = ShippedInfo(
        tag=args.tag,
        title=args.title,
        dataset=f"{record.dataset.layout}, split {split_name} ({len(split.train) + len(split.val)} training ids in "
        f"{len(member_stems)} folds / {len(split.test)} test ids)",
        test_metrics=test_metrics,
        latency_ms={
            **{k: round(v, 1) for k, v in lat.items()},
            "onnxruntime_tta": round(lat_tta, 1),
            "threads": args.threads,
        },
        trained_with=f"lesionseg train --config {args.config} --folds {len(member_stems)}",
        date=datetime.date.today().isoformat(),
        stored_as="float16",
        trust_test=test,
    )
    record = replace(record, dataset=replace(record.dataset, root=None), pretrained=shipped)
    write_ensemble_record(stem, record)

    with tempfile.TemporaryDirectory() as tmp:
        graph = export_onnx(model, Path(tmp) / "model.onnx", record.image_size, record.in_channels)
        before, after = compact_float16(graph)
        shutil.copyfile(graph, str(stem) + ".onnx")
    print(f"ONNX graph: {before / 1e6:.2f} MB, {after / 1e6:.2f} MB with float16-exact initializers as float16")

    card = write_card(args, stem, record, evaluations, params, macs, member_stems, lat, lat_tta, data_root)
    stem.with_suffix(".md").write_text(card)
    print(card)


def latency_ms_tta(stem: Path, threads: int, repeats: int = 15) -> float:
    import statistics
    import time

    import torch

    torch.set_num_threads(threads)
    predictor = Predictor.from_checkpoint(stem, backend="onnxruntime", tta=True)
    image = np.random.default_rng(0).integers(0, 255, (576, 768, predictor.in_channels), dtype=np.uint8)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        predictor.predict([image])
        if i >= 3:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def _section(path: Path | None) -> str:
    """A Markdown file's text without its title line, or "(not given)"."""
    if path is None or not path.is_file():
        return "(not given)"
    lines = path.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip()


def write_card(args, stem, record, evaluations, params, macs, member_stems, lat, lat_tta, data_root) -> str:
    first = load_record(member_stems[0])
    whole = load_split(record.dataset.split)
    n_train = len(whole.train) + len(whole.val)
    cfg = first.config or {}
    size = record.image_size
    pp = record.postprocess
    n = len(member_stems)
    rows = []
    for key, label in (
        ("native", "native, one pass (default)"),
        ("native_tta", "native, `--tta`"),
        ("working", f"{size[0]}x{size[1]}, one pass"),
        ("working_tta", f"{size[0]}x{size[1]}, `--tta`"),
    ):
        res = evaluations[key][1]
        rows.append(
            f"| {label} | {pct(res['per_image']['dice'])} | {pct(res['global']['dice'])} | "
            f"{pct(res['per_image']['iou'])} | {pct(res['global']['iou'])} | "
            f"{res['per_image'].get('hd95', float('nan')):.2f} |"
        )
    table = "\n".join(rows)
    members = "\n".join(
        f"- `{p.parent.name}/{p.name}`: `{r.model}` trained on fold split `{r.dataset.split}` (epoch {r.epoch} chosen "
        "on its fold)"
        for p, r in ((p, load_record(p)) for p in member_stems)
    )
    return f"""# `{args.tag}`: {args.title}

An ensemble of {n} `{first.model}` networks ({params / 1e6:.3f}M parameters in all, {macs / 1e9:.3f} GMACs at
{size[0]}x{size[1]} for the {n} passes), one per cross-validation fold, whose probabilities are averaged; trained by
`lesionseg train` on real data. Load it with `lesionseg predict IMAGE --model {args.tag}` (the default),
`Predictor.from_pretrained("{args.tag}")` or `load_pretrained("{args.tag}")` (an `EnsembleModel`); one member alone
with `load_model(pretrained_stem("{args.tag}").parent / "{args.tag}" / "fold_0")`.

{use_and_limits(args)}
## Data, folds and members
{record.pretrained.dataset}. The {n_train} training ids of the package split `{record.dataset.split}` were dealt
into {n} folds stratified by diagnosis (`lesionseg train --folds {n}`); each member trained on {n - 1} folds and
chose its checkpoint on the remaining one. The test ids were never used for training, selection or fitting. The
folds' splits ship as `lesionseg/splits/{args.split_prefix}_fold_<i>.json`.

{members}

## Recipe
Config [`{args.config}`](../../../../{args.config}), the same for every member:
{cfg.get("model", {}).get("name")} {cfg.get("model", {}).get("kwargs")}, loss {cfg.get("loss", {}).get("name")}
{cfg.get("loss", {}).get("kwargs")}, {cfg.get("optim", {}).get("name")} lr {cfg.get("optim", {}).get("lr")}, batch
{cfg.get("data", {}).get("batch_size")} at {size[0]}x{size[1]}, {cfg.get("train", {}).get("epochs")} epochs,
{cfg.get("train", {}).get("precision")}. Weights stored as float16 (every figure here is measured on them).

```bash
lesionseg train --config {args.config} --folds {n} --name {args.cv_dir.name} --set train.out_dir={args.cv_dir.parent}
lesionseg cv summarize {args.cv_dir}
lesionseg ensemble create {" ".join(f"--member {args.cv_dir}/fold_{i}/best" for i in range(n))} \\
    {" ".join(f"--oof {args.cv_dir}/fold_{i}/oof.npz" for i in range(n))} --out {args.cv_dir}/ensemble.json
python tools/ship_ensemble.py {args.cv_dir}/ensemble.json --tag {args.tag} --config {args.config} ...   # this card
```

{args.machine}

The ensemble's own settings were fitted on the {(record.oof or {}).get("n_cases", "?")} out-of-fold predictions (each
training id predicted by the member that did not train on it): threshold {record.threshold}, post-processing
**{" + ".join(pp.steps) if pp else "none"}**, temperature {record.temperature:.3f}, the quality curves.

## Cross-validation (out of fold)

{_section(args.cv_dir / "cv_summary.md")}

## The choice

{_section(args.find_best)}

{args.choice}

## Test metrics
The {evaluations["native"][0].cases} test ids of split `{record.dataset.split}`, post-processing applied; scores in
percent, **global** = one confusion matrix over all test pixels, **per-image** = the mean of each image's score; HD95
in pixels of the evaluated resolution.

```bash
lesionseg evaluate --model {args.tag} --data-root {data_root} --native   # and --tta; without --native: working size
```

| Setting | Dice per-image | Dice global | IoU per-image | IoU global | HD95 per-image |
|---|---:|---:|---:|---:|---:|
{table}

{format_table(evaluations["native"][1], evaluations["native"][0].title)}
{evaluations["native"][0].subgroup_table()}

## Measurements against the ground truth
Each test image measured on its predicted and on its hand-drawn mask, at its own resolution, with the estimator
`predict` and the API use (one pass; with `--tta` below it):

```bash
lesionseg evaluate --model {args.tag} --data-root {data_root} --native --measurements --out eval_{args.tag}
```

{evaluations["native"][0].agreement.table()}

With `--tta`:

{evaluations["native_tta"][0].agreement.table()}

{trust_card_section(record)}
## Speed
One 768x576 image end to end (resize, network for each member, resize back, post-process, measure; decoding
excluded), warm, {args.threads} threads, median of 30: eager PyTorch {lat["torch"]:.1f} ms, onnxruntime
{lat["onnxruntime"]:.1f} ms (the default backend); with `--tta` (three passes per member, trust estimates on)
{lat_tta:.1f} ms; on {cpu_name()}. `python perf/predict_latency.py --model {args.tag} --versus MODEL` times it beside
another model in one run.

Files: `{args.tag}.json` (the ensemble record: members with the SHA-256 of their records, settings, these
metrics), `{args.tag}/fold_<i>.safetensors` and `.json` (the members, float16, safetensors: loading never unpickles),
`{args.tag}.onnx` (one ONNX graph running every member and averaging their probabilities, which `lesionseg predict`
runs with onnxruntime, without torch; float16-exact weights stored as float16 and cast back, the same numbers).
"""


if __name__ == "__main__":
    sys.exit(main())
