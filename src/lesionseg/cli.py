"""Command line: ``lesionseg train | evaluate | predict | export | serve | benchmark | models | data``."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import logging
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _tune_allocator() -> None:
    """Raise glibc's mmap and trim thresholds: returning big activation buffers to the OS costs up to 1.9x on CPU."""
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD, glibc's maximum
        libc.mallopt(-1, 1024 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


class _TqdmLogHandler(logging.Handler):
    """Library log records on stderr, written between progress-bar redraws (never through a bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # a broken stderr must not stop a run
            self.handleError(record)


def _setup_logging(verbose: bool = False) -> None:
    """Show the package's INFO records (epoch lines, skipped cases) on stderr; DEBUG with ``verbose``."""
    log = logging.getLogger("lesionseg")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(isinstance(h, _TqdmLogHandler) for h in log.handlers):
        handler = _TqdmLogHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)


def _print_results(results: dict, title: str) -> None:
    from .metrics import format_table

    print(format_table(results, title))


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import Trainer, load_config

    if args.skip_bad:
        args.set = [*args.set, "data.skip_bad=true"]
    if args.resume:
        trainer = Trainer.from_run_dir(args.resume, args.set, progress=not args.no_progress)
    else:
        if not args.config and not args.set:
            print("lesionseg train: give --config FILE (and/or --set key=value)", file=sys.stderr)
            return 2
        cfg = load_config(args.config, args.set)
        if args.name:
            cfg.train.name = args.name
        run_dir = Path(cfg.train.out_dir) / cfg.train.name
        if (run_dir / "last.json").exists() and not args.overwrite:
            print(f"lesionseg train: {run_dir} holds a run; use --resume {run_dir} or --overwrite", file=sys.stderr)
            return 2
        trainer = Trainer(cfg, progress=not args.no_progress)
    try:
        summary = trainer.fit(resume=bool(args.resume))
    finally:
        trainer.close()
    if trainer.is_main:  # under torchrun the other ranks stay quiet
        print(json.dumps(summary, indent=1) if args.json else _train_summary(summary))
    return 0


def _train_summary(summary: dict) -> str:
    """What a person wants at the end of a run: the best epoch and its validation Dice, where, and what next."""
    from .models.hub import load_record

    run_dir = Path(summary["run_dir"])
    minutes = float(summary["elapsed_seconds"]) / 60
    lines = [f"trained {summary['epochs']} epoch(s) in {minutes:.1f} min; run folder {run_dir}/"]
    best = run_dir / "best"
    if summary["best_epoch"] >= 1 and best.with_suffix(".json").is_file():
        val = load_record(best).metrics.get("val", {})
        dice = ", ".join(
            f"{name} {100 * float(val[key]):.2f}"
            for name, key in (("per-image", "val_dice_per_image"), ("global", "val_dice_global"))
            if key in val
        )
        lines.append(f"best epoch {summary['best_epoch']} (chosen on the validation ids): val Dice {dice}")
        lines.append(
            f"evaluate it on the test ids:  lesionseg evaluate --checkpoint {run_dir} --native --out {run_dir / 'eval'}"
        )
    else:
        lines.append("no validation epoch yet: no best checkpoint")
    if not summary.get("finished", True):
        lines.append(f"continue it:  lesionseg train --resume {run_dir}")
    return "\n".join(lines)


def _evaluate_predictions(args: argparse.Namespace):
    """``evaluate --predictions DIR``: score mask files; the options that only steer a model are refused."""
    from .data import builtin_splits, detect_layout
    from .engine import evaluate_predictions

    if args.checkpoint:
        raise ValueError("give --checkpoint (run a model) or --predictions (score its masks), not both")
    if not args.data_root:
        raise ValueError("--predictions needs --data-root ROOT, the data root with the ground truth")
    model_only = {
        "--threshold": args.threshold is not None,
        "--tta": args.tta,
        "--precision": args.precision != "fp32",
        "--no-postprocess": args.no_postprocess,
        "--cache-dir": args.cache_dir is not None,
    }
    given = [k for k, v in model_only.items() if v]
    if given:
        raise ValueError(f"{', '.join(given)} steer a model; --predictions scores masks as they are")
    split = args.split
    if split is None:  # as predict --dataset: the split shipped for the layout, else every case
        layout = args.layout or detect_layout(args.data_root)
        split = layout if layout in builtin_splits() else "none"
    return evaluate_predictions(
        args.predictions,
        args.data_root,
        layout=args.layout,
        split=None if split == "none" else split,
        subset=args.subset,
        include_hd95=not args.no_hd95,
        progress=not args.no_progress,
        skip_bad=args.skip_bad,
        measurements=args.measurements,
        pixel_size=args.pixel_size,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.predictions:
        evaluation = _evaluate_predictions(args)
    elif not args.checkpoint:
        print("lesionseg evaluate: give --checkpoint (a model to run) or --predictions DIR (masks)", file=sys.stderr)
        return 2
    else:
        evaluation = _evaluate_checkpoint(args)
    _print_results(evaluation.results(), evaluation.title)
    print()
    print(evaluation.subgroup_table())
    if evaluation.agreement is not None:
        print()
        print(evaluation.agreement.table(f"Measurements: {evaluation.title}"))
    if evaluation.trust is not None:
        print()
        for line in evaluation.trust.lines():
            print(line)
    for p in evaluation.skipped:
        print(f"skipped [{p.kind}] {p.message}", file=sys.stderr)
    if evaluation.predictions is not None:
        for line in evaluation.predictions.lines():
            print(f"predictions: {line}", file=sys.stderr)
    if args.out:
        evaluation.save(args.out)
        extra = ", skipped.json" if evaluation.skipped else ""
        if evaluation.agreement is not None:
            extra += ", measurements.csv, agreement.md, bland_altman.png"
        extra += ", trust.json, trust_per_image.csv, reliability.png" if evaluation.trust is not None else ""
        print(f"wrote {args.out}/metrics.json, report.md, per_image.csv, subgroups.csv{extra}")
    return 0


def _evaluate_checkpoint(args: argparse.Namespace):
    from .engine import evaluate_checkpoint

    return evaluate_checkpoint(
        args.checkpoint,
        data_root=args.data_root,
        layout=args.layout,
        split=None if args.split == "none" else (args.split or "checkpoint"),
        subset=args.subset,
        native=args.native,
        threshold=args.threshold,
        precision=args.precision,
        tta=args.tta,
        include_hd95=not args.no_hd95,
        progress=not args.no_progress,
        postprocess=not args.no_postprocess,
        device=args.device,
        skip_bad=True if args.skip_bad else None,
        cache_dir=args.cache_dir,
        measurements=args.measurements,
        pixel_size=args.pixel_size,
        trust=not args.no_trust,
    )


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .benchmark import load_benchmark_config, run_benchmark

    cfg = load_benchmark_config(args.config, args.set)
    only = [x for item in args.only for x in item.split(",") if x]
    report = run_benchmark(
        cfg,
        progress=not args.no_progress,
        only=only,
        report_only=args.report_only,
        shard=args.shard,
        jobs=args.jobs,
        device=args.device,
        export_only=args.export_only,
    )
    if report is None:
        print(f"slice {args.shard} done; when every slice is: lesionseg benchmark --config {args.config} --report-only")
    else:
        print(f"wrote {report}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    # Imports stay inside the verbs: with the onnxruntime backend, predict never imports torch.
    from .inference import Predictor
    from .inference.files import collect_inputs, parse_shard, segment_files

    if not args.inputs and not args.dataset:
        print("lesionseg predict: give images, folders or glob patterns (or --dataset ROOT)", file=sys.stderr)
        return 2
    shard = parse_shard(args.shard)  # a bad spec stops the command before the model is loaded
    paths, problems = collect_inputs(args.inputs)
    truths = {}
    if args.dataset:
        from .data import builtin_splits, detect_layout
        from .engine import select_cases

        split = args.split
        if split is None:
            layout = args.layout or detect_layout(args.dataset)
            split = layout if layout in builtin_splits() else None
        cases, desc = select_cases(args.dataset, args.layout, None if split == "none" else split, args.subset)
        print(f"{desc} (split {split})")
        for case in cases:
            paths.append(case.image)
            if case.mask is not None:
                truths[case.image] = (case.mask, case.mask_threshold)
    if not paths:
        for problem in problems:
            print(f"lesionseg predict: {problem.path}: {problem.reason}", file=sys.stderr)
        print("lesionseg predict: no images found", file=sys.stderr)
        return 2
    predictor = Predictor.from_checkpoint(
        args.model,
        backend=args.backend,
        threshold=args.threshold,
        precision=args.precision,
        tta=args.tta,
        postprocess=() if args.no_postprocess else None,
        device=_predict_device(args.device),
    )
    summary = segment_files(
        predictor,
        paths,
        args.out,
        pixel_size=args.pixel_size,
        overlay=not args.no_overlay,
        truths=truths,
        progress=len(paths) > 1 and not args.no_progress,
        failures=problems,
        save_probabilities=args.save_probabilities,
        shard=shard,
        resume=args.resume,
    )
    _print_predictions(summary, args.pixel_size, quiet=args.quiet)
    return 1 if summary.failures else 0


def _print_predictions(summary, pixel_size: float | None, quiet: bool = False) -> None:
    unit, scale = ("mm", pixel_size) if pixel_size else ("px", 1.0)
    model = summary.model
    print(
        f"model {model['pretrained'] or model['model']} ({model['model']}, {model['backend']}, threshold "
        f"{model['threshold']}, temperature {model['temperature']:.3g}, post-processing: "
        f"{' + '.join(model['postprocess']) or 'none'})"
    )
    if not quiet and summary.rows:
        has_dice = any("dice" in r for r in summary.rows)
        header = (
            f"{'image':28s} {'area ' + unit + '2':>11s} {'diam ' + unit:>8s} {'Feret ' + unit:>9s} "
            f"{'asym maj/min':>13s} {'compact':>8s} {'comp':>4s}"
            + (f" {'Dice':>6s}" if has_dice else "")
            + f" {'pred Dice':>9s}  notes"
        )
        print(header)
        for r in summary.rows:
            line = (
                f"{Path(r['image']).name[:28]:28s} {r['area'] * scale**2:11.1f} "
                f"{r['equivalent_diameter'] * scale:8.2f} "
                f"{r['max_feret_diameter'] * scale:9.2f} {r['asymmetry_major']:6.3f}/{r['asymmetry_minor']:.3f} "
                f"{r['compactness']:8.3f} {r['components']:4d}"
            )
            if has_dice:
                line += f" {100 * r['dice']:6.2f}" if "dice" in r else f" {'-':>6s}"
            predicted = r.get("predicted_dice")
            line += f" {100 * predicted:9.1f}" if predicted is not None else f" {'-':>9s}"
            line += f"  {r['notes']}" if r.get("notes") else ""
            print(line)
    for failure in summary.failures:
        print(f"FAILED {failure.path}: {failure.reason}", file=sys.stderr)
    sys.stderr.flush()
    print(
        f"masks and overlays in {summary.out_dir}/, measurements in {summary.out_dir / 'measurements.csv'} "
        f"and measurements.json ({summary.table_rows} images"
        + (", every call and slice into this folder)" if summary.table_rows != len(summary.rows) else ")")
    )
    print(summary.summary_line())


def _pixel_size(text: str) -> float:
    """``--pixel-size``: checked while the arguments are read, so a bad value stops the command before any image."""
    from .inference.measure import check_pixel_size

    try:
        return check_pixel_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _predict_device(name: str) -> str:
    """CPU without importing the engine (trainer, plotting), nor torch where no GPU can be present: a quick start."""
    from .inference.predictor import cuda_possible

    if name == "cpu" or (name == "auto" and not cuda_possible()):
        return "cpu"
    from .engine.distributed import resolve_device

    return str(resolve_device(name))


def cmd_export(args: argparse.Namespace) -> int:
    from .inference.export import export_onnx
    from .models.hub import load_model, resolve_checkpoint

    stem = resolve_checkpoint(args.checkpoint or args.model)
    model, record = load_model(stem)
    path = export_onnx(
        model,
        args.onnx,
        record.image_size,
        record.in_channels,
        record=record,
        opset=args.opset,
        exporter=args.exporter,
    )
    print(
        f"wrote {path} and {path.with_suffix('.json')} (input 'image' N x {record.in_channels} x "
        f"{record.image_size[0]} x {record.image_size[1]}, dynamic batch)"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .serve import create_app
    except ImportError as err:
        hint = "pip install 'lesionseg[serve]'"
        print(f"lesionseg serve: needs the serve extra ({err.name} missing): {hint}", file=sys.stderr)
        return 2
    import ipaddress
    import logging
    import os

    if args.workers_threads < 1:
        print(f"lesionseg serve: --workers-threads must be >= 1, got {args.workers_threads}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    app = create_app(
        models=args.model or None,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1e6),
        threads=args.workers_threads,
        queue_size=args.queue_size,
        cors_origins=args.cors_origin or None,
        device=args.device,
        work_pixels=int(args.work_megapixels * 1e6),
        body_timeout=args.body_timeout,
        backend=args.backend,
    )
    if "torch" in sys.modules:  # a model on the torch backend (onnxruntime sessions got their share in create_app)
        # Each pool thread runs its own model call: split the cores between them rather than oversubscribe.
        sys.modules["torch"].set_num_threads(max(1, (os.cpu_count() or 1) // args.workers_threads))
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(
            f"lesionseg serve: listening on {args.host}, reachable from other machines; the API has no authentication",
            file=sys.stderr,
        )
    print(f"lesionseg serve: page at http://{args.host}:{args.port}/ , API docs at http://{args.host}:{args.port}/docs")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=not args.no_access_log)
    return 0


def _print_pretrained(show_cards: bool) -> int:
    from .models.hub import list_pretrained, model_card

    shipped = list_pretrained()
    print(f"{'tag':8s} {'model':14s} {'test Dice per-image / global (native)':>40s}  title")
    for tag, info in shipped.items():
        native = info.metrics.get("native", {})
        dice = (
            f"{100 * native['dice_per_image']:.2f} / {100 * native['dice_global']:.2f}"
            if "dice_per_image" in native
            else "n/a"
        )
        print(f"{tag:8s} {info.model:14s} {dice:>40s}  {info.title}")
    if show_cards:
        for tag in shipped:
            print(f"\n{'=' * 100}\n{model_card(tag)}")
    else:
        print("model cards: lesionseg models --pretrained --cards")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.pretrained:
        return _print_pretrained(args.cards)
    from .models import create_model, list_models, model_entrypoint, model_tags
    from .models.complexity import count_macs, count_parameters

    names = list_models(args.pattern)
    if not names:
        print(f"lesionseg models: no model matches {args.pattern!r}", file=sys.stderr)
        return 2
    size = (args.size, args.size)
    header = f"{'model':24s} {'params (M)':>10s}"
    if args.flops:
        header += f" {'GMACs@' + str(args.size):>12s}"
    print(header + "  size   description")
    for name in names:
        model = create_model(name)
        line = f"{name:24s} {count_parameters(model) / 1e6:10.3f}"
        if args.flops:
            line += f" {count_macs(model, size) / 1e9:12.3f}"
        tags = model_tags(name)
        kind = "paper" if tags["paper_size"] and not tags["cpu_size"] else ("cpu" if not tags["paper_size"] else "both")
        doc = (model_entrypoint(name).__doc__ or "").strip().splitlines()
        print(f"{line}  {kind:5s}  {doc[0] if doc else ''}")
    return 0


def _print_check(report, limit_notes: int = 5) -> None:
    """Errors and warnings in full, notes up to ``limit_notes``, then the summary by kind."""
    shown_notes = 0
    for p in report.problems:
        if p.severity == "note":
            shown_notes += 1
            if shown_notes > limit_notes:
                continue
        print(f"{p.severity.upper():7s} {p.kind:18s} {p.message}")
    if shown_notes > limit_notes:
        print(f"NOTE    ... and {shown_notes - limit_notes} more note(s) (--json lists them all)")
    counts = ", ".join(f"{kind} {n}" for kind, n in report.counts().items()) or "no problems"
    print(
        f"{report.root} ({report.layout}): {report.n_cases} case(s) read, {len(report.bad_ids())} bad; "
        f"{len(report.errors)} error(s), {len(report.by_severity('warning'))} warning(s), "
        f"{len(report.by_severity('note'))} note(s): {counts}"
    )


def _data_prepare(args: argparse.Namespace) -> int:
    from .data import DEFAULT_MAX_PIXELS
    from .data.prepare import prepare_archives

    if not args.out:
        print("lesionseg data prepare: give --out ROOT, the data root to write", file=sys.stderr)
        return 2
    try:
        report = prepare_archives(
            args.root,
            args.archives,
            args.out,
            overwrite=args.overwrite,
            max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
            progress=not args.no_progress,
        )
    except ValueError as err:  # PrepareError, an unknown layout, a root that does not scan
        print(f"lesionseg data prepare: {err}", file=sys.stderr)
        return 2
    for result in report.archives:
        extra = f", {len(result.ignored)} other member(s) left in the archive" if result.ignored else ""
        copies = f", other copies left: {', '.join(result.copies_left)}" if result.copies_left else ""
        print(f"{result.archive.name}: {result.files} file(s) unpacked{extra}{copies}")
    counts = ", ".join(
        f"{subset or 'cases'} {n} (official {report.official[subset]})" for subset, n in report.counts.items()
    )
    print(f"{report.root} ({report.layout}): {counts}")
    for line in report.count_mismatches():
        print(f"WARNING {line}")
    _print_check(report.check)
    return 0 if report.ok else 1


def _split_groups(args: argparse.Namespace, cases: list) -> dict | None:
    """The groups of ``data split --group-by``, with a line saying how many cases have none."""
    from .data import case_groups

    if not args.group_by:
        return None
    groups = case_groups(cases, args.group_by)
    lacking = sum(1 for g in groups.values() if g is None)
    if lacking:
        print(f"lesionseg data split: {lacking} case(s) have no group under {args.group_by!r}; each is its own group")
    return groups


def cmd_data(args: argparse.Namespace) -> int:
    from .data import DEFAULT_MAX_PIXELS, check_root, find_cases, make_split, save_split

    if args.action == "prepare":
        return _data_prepare(args)
    if args.archives:
        print(f"lesionseg data {args.action}: unexpected arguments {' '.join(args.archives)}", file=sys.stderr)
        return 2
    if args.action == "check":
        max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
        report = check_root(args.root, args.layout, max_pixels=max_pixels, progress=not args.no_progress)
        if args.json:
            print(json.dumps(report.to_dict(), indent=1))
        else:
            _print_check(report)
        return 0 if report.ok else 1
    cases = find_cases(args.root, args.layout)
    strata = None
    if args.stratify:
        strata = {c.id: c.meta.get(args.stratify) for c in cases}
        if any(v is None for v in strata.values()):
            print(f"lesionseg data split: some cases have no {args.stratify!r}", file=sys.stderr)
            return 2
    groups = _split_groups(args, cases)
    split = make_split(
        [c.id for c in cases],
        args.test_fraction,
        args.val_fraction,
        args.seed,
        strata,
        name=args.name or Path(args.root).name,
        stratified_by=args.stratify,
        groups=groups,
        grouped_by=args.group_by,
    )
    out = args.out or "split.json"
    save_split(split, out)
    grouped = ""
    if groups is not None:
        n = {part: len({groups[i] or i for i in getattr(split, part)}) for part in ("train", "val", "test")}
        grouped = f" (groups: train {n['train']}, val {n['val']}, test {n['test']}; none in two parts)"
    print(f"wrote {out}: train {len(split.train)}, val {len(split.val)}, test {len(split.test)}{grouped}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lesionseg", description="Medical lesion segmentation toolkit.")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug log (e.g. decoder warnings per file)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("--config", "-c", help="YAML config (configs/*.yaml)")
    p.add_argument(
        "--set",
        "-s",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. --set train.epochs=10 data.batch_size=4 (repeatable)",
    )
    p.add_argument("--name", help="run name (default: config file stem)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an existing run folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the end-of-run summary as JSON (for scripts)")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="train without cases whose files are unusable (listed in the run folder's skipped.json) instead of "
        "refusing to start (config key data.skip_bad)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint, or a folder of predicted masks, on a split or a data root",
        description="Score a checkpoint (--checkpoint) or a folder of masks made by predict or any other code "
        "(--predictions DIR --data-root ROOT: PNG/BMP/TIFF of 0/1 or 0/255, or JPEG; named <id>, <id>_mask or "
        "<id>_segmentation; each of its image's size) with the same metrics table, both reductions and subgroups.",
    )
    p.add_argument("--checkpoint", help="checkpoint stem, .json, .safetensors, run folder (best), or shipped tag")
    p.add_argument(
        "--predictions",
        metavar="DIR",
        help="score the mask files of DIR instead of running a model (at native resolution; needs --data-root; "
        "cases without a mask, unusable masks and files of no evaluated case are listed)",
    )
    p.add_argument("--data-root", help="data root in a known layout (default: the checkpoint's)")
    p.add_argument("--layout", help="dataset layout (default: detected)")
    p.add_argument(
        "--split",
        help="split name or JSON (default: the checkpoint's; with --predictions the one shipped for the layout, else "
        "none); 'none' for every case",
    )
    p.add_argument(
        "--subset",
        default="test",
        choices=("test", "val", "train", "all"),
        help="test = split test ids + ids the split does not list (default)",
    )
    p.add_argument("--native", action="store_true", help="score at each image's own resolution")
    p.add_argument("--threshold", type=float, help="probability threshold (default: the checkpoint's)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="fp16: CUDA only")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (at either resolution)")
    p.add_argument("--no-hd95", action="store_true", help="skip HD95")
    p.add_argument("--no-postprocess", action="store_true", help="skip the checkpoint's chosen mask post-processing")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="evaluate without cases whose files are unusable (named in the output, and in skipped.json with --out) "
        "instead of refusing (default: the checkpoint's data.skip_bad)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="on-disk cache of decoded, resized images: auto, a folder, or '' for none "
        "(default: the checkpoint's data.cache_dir)",
    )
    p.add_argument(
        "--measurements",
        action="store_true",
        help="with --native: measure every predicted and ground-truth mask (area, perimeter, diameters, asymmetry, "
        "compactness) and report their agreement: bias, 95%% limits of agreement, ICC(2,1); with --out also "
        "measurements.csv, agreement.md and a Bland-Altman figure",
    )
    p.add_argument(
        "--pixel-size", type=_pixel_size, metavar="MM", help="with --measurements: millimetres per pixel (means in mm)"
    )
    p.add_argument(
        "--no-trust",
        action="store_true",
        help="skip the calibration (ECE before/after temperature), quality-estimate and out-of-distribution figures",
    )
    p.add_argument(
        "--out", help="folder for metrics.json, report.md, per_image.csv, subgroups.csv (+ trust.json, reliability.png)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="segment images with a shipped model or a checkpoint: masks, overlays, measurements",
        description="Segment images (files, folders, glob patterns) with the shipped skin model by default. Writes "
        "<name>_mask.png (native size), <name>_overlay.png and measurements.csv/.json into --out. A file that cannot "
        "be read is named with the reason and the rest go on; the exit code is 1 when any failed.",
    )
    p.add_argument("inputs", nargs="*", help="image files, folders or glob patterns")
    p.add_argument(
        "--model",
        "--checkpoint",
        dest="model",
        default="skin",
        help="shipped model tag (skin, polyp; see `lesionseg models --pretrained`) or a checkpoint (default: skin)",
    )
    p.add_argument("--dataset", metavar="ROOT", help="also segment a dataset root's cases and score them (Dice)")
    p.add_argument("--layout", help="layout of --dataset (default: detected)")
    p.add_argument("--split", help="split of --dataset (name or JSON; default: the one shipped for its layout; none)")
    p.add_argument("--subset", default="test", choices=("test", "val", "train", "all"), help="cases of --dataset")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument(
        "--pixel-size", type=_pixel_size, metavar="MM", help="millimetres per pixel: measurements also in mm"
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnxruntime"),
        help="auto (default): onnxruntime on the CPU when it is installed and the model has an ONNX graph (shipped "
        "models do; a checkpoint once exported with --backend onnxruntime), which runs without importing torch; "
        "torch otherwise (CUDA, bf16)",
    )
    p.add_argument("--threshold", type=float, help="probability threshold (default: the model's)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--no-postprocess", action="store_true", help="skip the model's chosen mask post-processing")
    p.add_argument("--no-overlay", action="store_true")
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="segment only slice I of N of the inputs (every N-th from the I-th), e.g. one per worker or cluster job, "
        "all into the same --out; the last slice to finish leaves the measurements table of all of them",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip images whose outputs in --out are whole (written completely by an earlier run of the same model "
        "and settings); the measurements table keeps their rows",
    )
    p.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write <name>_prob.png: the calibrated foreground probability at native size, 16-bit (value/65535)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-image table")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a shipped model or a checkpoint to ONNX (record alongside)")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="output file; OUT.json gets the record")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", help="shipped model tag (skin, polyp)")
    group.add_argument("--checkpoint", help="checkpoint stem, .json, .safetensors or run folder")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--exporter", default="auto", choices=("auto", "torchscript", "dynamo"))
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "serve",
        help="web page and JSON API over the shipped models (needs the serve extra)",
        description="Serve a page (drop an image, see the mask, measurements, downloads) and a JSON API "
        "(POST /api/segment, GET /api/models, GET /healthz, docs at /docs). Binds 127.0.0.1 unless --host says "
        "otherwise; no CORS unless --cors-origin is given.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="shipped tag (skin, polyp) or checkpoint to serve; repeatable; the default for a request without a "
        "model is skin when served, else the first (default: every shipped model)",
    )
    p.add_argument("--workers-threads", type=int, default=2, metavar="N", help="inference threads (default: 2)")
    p.add_argument(
        "--queue-size", type=int, default=16, help="requests that may wait for a thread; beyond them 503 (default: 16)"
    )
    p.add_argument("--device", default="cpu", help="torch device of the models (default: cpu)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnxruntime"),
        help="auto (default): onnxruntime on the CPU for models with an ONNX graph (no torch import), else torch",
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest image file accepted (default: 20)")
    p.add_argument("--max-megapixels", type=float, default=40.0, help="largest image accepted (default: 40)")
    p.add_argument(
        "--work-megapixels",
        type=float,
        default=4.0,
        help="larger images are reduced to this as they are decoded; model, post-processing and measurements work "
        "on that, the mask comes back at full size (default: 4)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="a request's whole body must arrive within this, else 408 (default: 20)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow pages from this origin to call the API (repeatable; default: none)",
    )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("benchmark", help="train and evaluate several models under one protocol; write the report")
    p.add_argument("--config", "-c", required=True, help="benchmark YAML (configs/benchmark/*.yaml)")
    p.add_argument("--set", "-s", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--only", action="append", default=[], metavar="LABEL", help="train only these models (repeatable)")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="touch no run or data; rebuild report.md, results.csv and the figures from results_dir alone",
    )
    p.add_argument(
        "--export-only",
        action="store_true",
        help="train nothing; export finished run folders of out_dir whose results are missing into results_dir",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="run only slice I of N (1-based; runs dealt round-robin in config order), e.g. one per cluster job; "
        "slices share --config's results_dir; merge with --report-only",
    )
    p.add_argument("--jobs", type=int, default=1, metavar="K", help="K single-thread runs at once on this machine")
    p.add_argument("--device", help="train.device for every run and the evaluation device (default: each config's)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("models", help="list registered models with parameters (and MACs with --flops)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern")
    p.add_argument("--flops", action="store_true", help="also count multiply-accumulates (what papers call FLOPs)")
    p.add_argument("--size", type=int, default=256, help="square input size for --flops")
    p.add_argument("--pretrained", action="store_true", help="list the shipped trained models instead")
    p.add_argument("--cards", action="store_true", help="with --pretrained: print each model card")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "data",
        help="check a data root, draw and store a split, or unpack the official archives",
        description="check ROOT | split ROOT | prepare LAYOUT ARCHIVE... --out ROOT (unpack a dataset's official zip "
        "files into the layout the loaders read, then check it)",
    )
    p.add_argument("action", choices=("check", "split", "prepare"))
    p.add_argument("root", help="the data root; for prepare: the layout (isic2016, isic2017, isic2018, ph2, ...)")
    p.add_argument(
        "archives", nargs="*", help="prepare: the official archives (e.g. ISIC2018_Task1-2_Training_Input.zip)"
    )
    p.add_argument("--layout")
    p.add_argument("--out", default=None, help="split: the split file (default: split.json); prepare: the data root")
    p.add_argument(
        "--group-by",
        metavar="KEY",
        help="split: draw whole groups so that none straddles train/val/test: 'group' (the layout's: CVC-ClinicDB "
        "sequences, ISIC lesion ids from a metadata CSV, the folder layout's groups.csv), a case field (lesion_id, "
        "patient_id) or an id,group CSV file",
    )
    p.add_argument("--overwrite", action="store_true", help="prepare: unpack into dataset folders that hold files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--stratify", help="case meta field to stratify by (e.g. diagnosis for PH2)")
    p.add_argument("--name", help="dataset name stored in the split")
    p.add_argument("--json", action="store_true", help="check: print the report as JSON")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="check: largest width x height accepted before decoding (default: the readers' limit)",
    )
    p.add_argument("--no-progress", action="store_true", help="check: no progress bar")
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    _tune_allocator()
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False))
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"lesionseg {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
