"""Command line: ``lesionseg train | evaluate | predict | export | serve | benchmark | models | data``.

Conventions every verb follows: one name per concept (``--model`` is a shipped tag or a checkpoint, ``--data-root`` a
data root), options shared by several verbs declared once (the ``_add_*`` helpers), ``-v``/``-q`` before or after the
verb, and one error style: a ``lesionseg: error: ...`` line on stderr without a traceback (``-v`` adds it), exit code 2
for a command line that cannot be carried out as written and 1 for work that failed.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import logging
import sys
from pathlib import Path

from . import __version__

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "UsageError", "build_parser", "main"]

EXIT_FAILED = 1
"""Exit code of work that failed (a bad checkpoint, unreadable data, any image that could not be segmented)."""
EXIT_USAGE = 2
"""Exit code of a command line that cannot be carried out as written (argparse's code for its own errors too)."""


class UsageError(Exception):
    """A command line that cannot be carried out as written (missing or contradicting options): exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors read like every other CLI error: usage, then ``lesionseg: error: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"lesionseg: error: {message}\n")


class _DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores into the new option's destination, says so on stderr, hidden from help."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str, **kwargs) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"lesionseg: warning: {option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


class _Verbs(argparse._SubParsersAction):
    """The verbs: each takes ``-v``/``-q`` after it as well as before (registered as the ``parsers`` action)."""

    def add_parser(self, name: str, **kwargs):
        p = super().add_parser(name, **kwargs)
        _add_log_options(p, top=False)
        return p


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


def _setup_logging(verbose: bool = False, quiet: bool = False, fmt: str = "%(message)s") -> None:
    """The package's records on stderr through one handler: INFO (epoch lines, skipped cases), DEBUG with
    ``verbose``, warnings and errors only with ``quiet``.

    The handler sits on the ``lesionseg`` logger and is added once per process; nothing else here adds a handler (a
    second one, e.g. on the root logger, would print every record twice).
    """
    log = logging.getLogger("lesionseg")
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    handler = next((h for h in log.handlers if isinstance(h, _TqdmLogHandler)), None)
    if handler is None:
        handler = _TqdmLogHandler()
        log.addHandler(handler)
    handler.setFormatter(logging.Formatter(fmt))


def _print_results(results: dict, title: str) -> None:
    from .metrics import format_table

    print(format_table(results, title))


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import Trainer, load_config

    if args.skip_bad:
        args.set = [*args.set, "data.skip_bad=true"]
    if args.device:
        args.set = [*args.set, f"train.device={args.device}"]
    if args.folds is not None:
        return _train_folds(args)
    if args.fold or args.stratify or args.group_by or args.oof_only:
        raise UsageError("train: --fold, --stratify, --group-by and --oof-only go with --folds K")
    if args.resume:
        trainer = Trainer.from_run_dir(args.resume, args.set, progress=not args.no_progress)
    else:
        if not args.config and not args.set:
            raise UsageError("train: give --config FILE (and/or --set key=value), or --resume RUN_DIR")
        cfg = load_config(args.config, args.set)
        if args.name:
            cfg.train.name = args.name
        run_dir = Path(cfg.train.out_dir) / cfg.train.name
        if (run_dir / "last.json").exists() and not args.overwrite:
            raise UsageError(f"train: {run_dir} holds a run; use --resume {run_dir} or --overwrite")
        trainer = Trainer(cfg, progress=not args.no_progress)
    try:
        summary = trainer.fit(resume=bool(args.resume))
    except OSError:
        if trainer.is_main:  # what the run did before a file could not be written (a full disk)
            print(json.dumps(trainer.summary(), indent=1) if args.json else _train_summary(trainer.summary()))
        raise
    finally:
        trainer.close()
    if trainer.is_main:  # under torchrun the other ranks stay quiet
        print(json.dumps(summary, indent=1) if args.json else _train_summary(summary))
    return 0


def _train_folds(args: argparse.Namespace) -> int:
    """``train --folds K``: the cross-validation folds of the config's split, each an ordinary run folder."""
    from .engine.crossval import train_folds

    if args.resume or args.overwrite:
        raise UsageError(
            "train --folds: finished folds are skipped and interrupted ones resumed; no --resume/--overwrite"
        )
    if not args.config and not args.set:
        raise UsageError("train --folds: give --config FILE")
    cv = train_folds(
        args.config,
        args.set,
        args.folds,
        only=args.fold,
        name=args.name,
        stratify=args.stratify,
        group_by=args.group_by,
        progress=not args.no_progress,
        oof_only=args.oof_only,
    )
    print(f"cross-validation folder {cv.root}/: {cv.root / 'cv_summary.md'}")
    print((cv.root / "cv_summary.md").read_text())
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from .engine.crossval import summarize_cv

    if args.action == "summarize":
        for root in args.dirs:
            summarize_cv(root, device=args.device or "auto", recompute=args.recompute)
            print((Path(root) / "cv_summary.md").read_text())
        return 0
    from .engine.find_best import find_best

    out = Path(args.out) if args.out else Path(args.dirs[0]).parent
    result = find_best(args.dirs, budget_ms=args.budget_ms, out=out, measure=not args.no_latency)
    print((out / "find_best.md").read_text())
    return 0 if result["choice"] is not None else EXIT_FAILED


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
            f"evaluate it on the test ids:  lesionseg evaluate --model {run_dir} --native --out {run_dir / 'eval'}"
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

    if args.model is not None:
        raise UsageError("evaluate: give --model (run a model) or --predictions (score its masks), not both")
    if not args.data_root:
        raise UsageError("evaluate: --predictions needs --data-root ROOT, the data root with the ground truth")
    model_only = {
        "--threshold": args.threshold is not None,
        "--tta": args.tta,
        "--precision": args.precision != "fp32",
        "--no-postprocess": args.no_postprocess,
        "--cache-dir": args.cache_dir is not None,
        "--native": args.native,
    }
    given = [k for k, v in model_only.items() if v]
    if given:
        raise UsageError(
            f"evaluate: {', '.join(given)} steer a model; --predictions scores masks as they are (at native size)"
        )
    if args.pixel_size is not None and not args.measurements:
        raise UsageError("evaluate: a pixel size is only used by the measurements: add --measurements")
    split = args.split
    if split is None:  # as predict --data-root: the split shipped for the layout, else every case
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
    else:
        evaluation = _evaluate_model(args)
    _print_evaluation(evaluation, args.out)
    return 0


def _evaluate_model(args: argparse.Namespace):
    from .engine import evaluate_checkpoint

    if args.model is None:
        raise UsageError("evaluate: give --model, a shipped tag (skin, polyp) or a checkpoint (or --predictions DIR)")
    if args.measurements and not args.native:
        raise UsageError("evaluate: measurements are made at each image's own resolution: add --native")
    if args.pixel_size is not None and not args.measurements:
        raise UsageError("evaluate: a pixel size is only used by the measurements: add --measurements")
    return evaluate_checkpoint(
        args.model,
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


def _print_evaluation(evaluation, out: str | None) -> None:
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
    if out:
        evaluation.save(out)
        extra = ", skipped.json" if evaluation.skipped else ""
        if evaluation.agreement is not None:
            extra += ", measurements.csv, agreement.md, bland_altman.png"
        extra += ", trust.json, trust_per_image.csv, reliability.png" if evaluation.trust is not None else ""
        print(f"wrote {out}/metrics.json, report.md, per_image.csv, subgroups.csv{extra}")


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

    if not args.inputs and not args.data_root:
        raise UsageError("predict: give images, folders or glob patterns (or --data-root ROOT)")
    try:
        shard = parse_shard(args.shard)  # a bad spec stops the command before the model is loaded
    except ValueError as err:
        raise UsageError(f"predict: {err}") from None
    if args.resume and args.overwrite:
        raise UsageError("predict: --resume keeps the outputs in --out that --overwrite would remove; give one")
    paths, problems = collect_inputs(args.inputs)
    truths = {}
    if args.data_root:
        from .data import builtin_splits, detect_layout, select_cases

        split = args.split
        if split is None:
            layout = args.layout or detect_layout(args.data_root)
            split = layout if layout in builtin_splits() else None
        cases, desc = select_cases(args.data_root, args.layout, None if split == "none" else split, args.subset)
        print(f"{desc} (split {split})")
        for case in cases:
            paths.append(case.image)
            if case.mask is not None:
                truths[case.image] = (case.mask, case.mask_threshold)
    if not paths:
        for problem in problems:
            print(f"lesionseg: {problem.path}: {problem.reason}", file=sys.stderr)
        raise UsageError("predict: no images found")
    predictor = Predictor.from_checkpoint(
        args.model,
        backend=args.backend,
        threshold=args.threshold,
        precision=args.precision,
        tta=args.tta,
        postprocess=() if args.no_postprocess else None,
        device=args.device,
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
        overwrite=args.overwrite,
        save_probabilities=args.save_probabilities,
        shard=shard,
        resume=args.resume,
    )
    _print_predictions(summary, args.pixel_size, quiet=args.quiet)
    return EXIT_FAILED if summary.failures or summary.write_error else 0


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
    if summary.write_error:
        print(f"FAILED {summary.write_error}", file=sys.stderr)
    sys.stderr.flush()
    if not summary.write_error:
        kept = f" (with {len(summary.kept)} image(s) of earlier runs into this folder)" if summary.kept else ""
        print(
            f"masks and overlays in {summary.out_dir}/, measurements in {summary.out_dir / 'measurements.csv'} "
            f"and measurements.json{kept}"
        )
    print(summary.summary_line())


def _positive_int(text: str) -> int:
    """An option that counts something (threads, jobs): a whole number >= 1, checked while the arguments are read."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _pixel_size(text: str) -> float:
    """``--pixel-size``: checked while the arguments are read, so a bad value stops the command before any image."""
    from .inference.measure import check_pixel_size

    try:
        return check_pixel_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_export(args: argparse.Namespace) -> int:
    from .inference.export import export_onnx
    from .models.hub import load_model, resolve_checkpoint

    if args.model is None:
        raise UsageError("export: give --model, a shipped tag (skin, polyp) or a checkpoint")
    stem = resolve_checkpoint(args.model)
    if Path(args.onnx).with_suffix(".json").resolve() == stem.with_name(stem.name + ".json").resolve():
        raise UsageError(f"export: {args.onnx} would write its record over the model's own {stem.name}.json")
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
        raise UsageError(f"serve needs the serve extra ({err.name} missing): pip install 'lesionseg[serve]'") from err
    import ipaddress
    import os

    # uvicorn's own style for the package's records (model loading); through the one handler, never a second one.
    _setup_logging(args.verbose, args.quiet, fmt="%(levelname)s:     %(message)s")
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
            f"lesionseg: warning: listening on {args.host}, reachable from other machines; the API has no "
            "authentication",
            file=sys.stderr,
        )
    print(f"lesionseg serve: page at http://{args.host}:{args.port}/ , API docs at http://{args.host}:{args.port}/docs")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=not args.no_access_log)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from .models.hub import checkpoint_stem, save_ensemble

    if args.action == "create":
        if len(args.member) < 2:
            raise UsageError("ensemble create: give at least two --member checkpoints")
        if args.weight and len(args.weight) != len(args.member):
            raise UsageError(f"ensemble create: {len(args.weight)} --weight for {len(args.member)} --member")
        stem = save_ensemble(args.out, args.member, weights=args.weight or None, image_size=args.image_size)
    else:
        if args.member or args.weight or args.image_size:
            raise UsageError("ensemble fit: --member, --weight and --image-size are for create")
        stem = args.out
    if args.oof:
        from .inference.ensemble_fit import fit_ensemble_from_oof

        record = fit_ensemble_from_oof(stem, args.oof)
        quality = record.trust_validation or {}
        print(
            f"fitted on {quality.get('n_cases')} out-of-fold cases: threshold {record.threshold:g}, post-processing "
            f"{' + '.join(record.postprocess.steps) if record.postprocess and record.postprocess.steps else 'none'}, "
            f"temperature {record.temperature:.3f}, per-image Dice {quality.get('dice_per_image')}"
        )
    elif args.action == "fit":
        raise UsageError("ensemble fit: give the out-of-fold files (--oof X/oof.npz, one or more)")
    stem = checkpoint_stem(stem)
    print(f"wrote {stem.with_name(stem.name + '.json')}")
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
        for member in info.members:
            print(f"{'':8s}   member {member}")
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
        from .registry import suggest

        close = suggest(args.pattern, list_models())
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise UsageError(f"models: no model matches {args.pattern!r}{hint}; `lesionseg models` lists them all")
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
        raise UsageError("data prepare: give --out ROOT, the data root to write")
    try:
        report = prepare_archives(
            args.root,
            args.archives,
            args.out,
            overwrite=args.overwrite,
            max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
            progress=not args.no_progress,
        )
    except ValueError as err:  # PrepareError, an unknown layout: archives or a layout that cannot be unpacked as named
        raise UsageError(f"data prepare: {err}") from err
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
    return 0 if report.ok else EXIT_FAILED


def _split_groups(args: argparse.Namespace, cases: list) -> dict | None:
    """The groups of ``data split --group-by``, with a line saying how many cases have none."""
    from .data import case_groups

    if not args.group_by:
        return None
    groups = case_groups(cases, args.group_by)
    lacking = sum(1 for g in groups.values() if g is None)
    if lacking:
        print(f"lesionseg: {lacking} case(s) have no group under {args.group_by!r}; each is its own group")
    return groups


def cmd_data(args: argparse.Namespace) -> int:
    from .data import DEFAULT_MAX_PIXELS, case_strata, check_root, find_cases, make_split, save_split

    if args.action == "prepare":
        return _data_prepare(args)
    if args.archives:
        raise UsageError(f"data {args.action}: unexpected arguments {' '.join(args.archives)}")
    if args.action == "check":
        max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
        report = check_root(args.root, args.layout, max_pixels=max_pixels, progress=not args.no_progress)
        if args.json:
            print(json.dumps(report.to_dict(), indent=1))
        else:
            _print_check(report)
        return 0 if report.ok else EXIT_FAILED
    cases = find_cases(args.root, args.layout)
    strata = case_strata(cases, args.stratify, "--stratify") if args.stratify else None
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


# Options shared by several verbs, declared once: same spelling, same meaning, same help wherever they appear.


def _add_log_options(p: argparse.ArgumentParser, top: bool) -> None:
    """``-v``/``-q``, accepted before the verb and after it (after it they do not reset what came before)."""
    default = False if top else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="debug log, tracebacks of errors")
    p.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="warnings and errors only (predict: no table)"
    )


def _add_progress(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--no-progress", action="store_true", help=f"{what}no progress bars")


def _add_device(p: argparse.ArgumentParser, default: str | None = "auto", help: str | None = None) -> None:
    p.add_argument("--device", default=default, help=help or "auto (CUDA when present), cpu, cuda or cuda:N")


def _add_set(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument(
        "--set",
        "-s",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"override config values, e.g. --set {example} (repeatable; unknown keys are refused with the closest "
        "known one)",
    )


def _add_model(p: argparse.ArgumentParser, default: str | None = None, old: str | None = "--checkpoint") -> None:
    """``--model``: a shipped tag or a checkpoint, the one name of the concept (``old``: a deprecated spelling)."""
    p.add_argument(
        "--model",
        default=default,
        help="shipped model tag (skin, polyp; see `lesionseg models --pretrained`) or a checkpoint (stem, .json, "
        ".safetensors or run folder: its best)" + (f" (default: {default})" if default else " (required)"),
    )
    if old:
        p.add_argument(old, dest="model", action=_DeprecatedAlias, replacement="--model")


def _add_inference(p: argparse.ArgumentParser, precisions: tuple[str, ...]) -> None:
    """How a trained model is run: threshold, precision, device, flip TTA, post-processing."""
    p.add_argument("--threshold", type=float, help="probability threshold (default: the model's)")
    fp16 = "; fp16: CUDA only" if "fp16" in precisions else ""
    p.add_argument("--precision", default="fp32", choices=precisions, help=f"inference precision (default: fp32{fp16})")
    _add_device(p)
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (at either resolution)")
    p.add_argument("--no-postprocess", action="store_true", help="skip the model's chosen mask post-processing")


def _add_data(p: argparse.ArgumentParser, root_help: str, split_default: str, old: str | None = None) -> None:
    """Which cases of a data root: ``--data-root``, ``--layout``, ``--split``, ``--subset``."""
    p.add_argument("--data-root", metavar="ROOT", help=root_help)
    if old:
        p.add_argument(old, dest="data_root", action=_DeprecatedAlias, replacement="--data-root")
    p.add_argument("--layout", help="dataset layout of --data-root (default: detected)")
    p.add_argument("--split", help=f"split name or JSON (default: {split_default}; 'none' for every case)")
    p.add_argument(
        "--subset",
        default="test",
        choices=("test", "val", "train", "all"),
        help="which cases: test = the split's test ids + ids the split does not list (default), val, train, all",
    )


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("--config", "-c", help="YAML config (configs/*.yaml)")
    _add_set(p, "train.epochs=10 data.batch_size=4")
    p.add_argument("--name", help="run name (default: config file stem)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an existing run folder")
    _add_progress(p)
    p.add_argument("--json", action="store_true", help="print the end-of-run summary as JSON (for scripts)")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="train without cases whose files are unusable (listed in the run folder's skipped.json) instead of "
        "refusing to start (config key data.skip_bad)",
    )
    _add_device(p, default=None, help="auto, cpu, cuda or cuda:N (config key train.device)")
    p.add_argument(
        "--folds",
        type=_positive_int,
        metavar="K",
        help="cross-validation: K runs over the split's train+val ids (test untouched) in OUT_DIR/NAME/fold_<i>/",
    )
    p.add_argument(
        "--fold", type=int, action="append", metavar="I", help="with --folds: train only fold I (repeatable)"
    )
    p.add_argument(
        "--stratify", help="with --folds: case field to stratify by (default: diagnosis where cases have it; 'none')"
    )
    p.add_argument("--group-by", metavar="KEY", help="with --folds: keep each group in one fold (see data split)")
    p.add_argument(
        "--oof-only", action="store_true", help="with --folds: train nothing; (re)write the out-of-fold files"
    )
    p.set_defaults(func=cmd_train)


def _add_cv(sub) -> None:
    p = sub.add_parser("cv", help="cross-validation folders: out-of-fold summary, best configuration")
    p.add_argument("action", choices=("summarize", "find-best"), help="summarize: cv_summary; find-best: choose")
    p.add_argument("dirs", nargs="+", metavar="CV_DIR", help="cross-validation folders (OUT_DIR/NAME of train --folds)")
    p.add_argument("--recompute", action="store_true", help="summarize: rewrite every fold's out-of-fold files")
    p.add_argument(
        "--budget-ms", type=float, help="find-best: latency budget of a 768x576 CPU prediction (default: none)"
    )
    p.add_argument("--out", help="find-best: folder of find_best.{json,md} (default: the first CV_DIR's parent)")
    p.add_argument("--no-latency", action="store_true", help="find-best: measure no latency (no budget then)")
    _add_device(p, default=None)
    p.set_defaults(func=cmd_cv)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a trained model, or a folder of predicted masks, on a split or a data root",
        description="Score a trained model (--model) or a folder of masks made by predict or any other code "
        "(--predictions DIR --data-root ROOT: PNG/BMP/TIFF of 0/1 or 0/255, or JPEG; named <id>, <id>_mask or "
        "<id>_segmentation; each of its image's size) with the same metrics table, both reductions and subgroups.",
    )
    _add_model(p)
    p.add_argument(
        "--predictions",
        metavar="DIR",
        help="score the mask files of DIR instead of running a model (at native resolution; needs --data-root; "
        "split default: the one shipped for the layout; cases without a mask, unusable masks and files of no "
        "evaluated case are listed)",
    )
    _add_data(p, "data root in a known layout (default: the model's)", "the model's")
    p.add_argument("--native", action="store_true", help="score at each image's own resolution")
    _add_inference(p, ("fp32", "bf16", "fp16"))
    p.add_argument("--no-hd95", action="store_true", help="skip HD95")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="evaluate without cases whose files are unusable (named in the output, and in skipped.json with --out) "
        "instead of refusing (default: the model's data.skip_bad)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="on-disk cache of decoded, resized images: auto, a folder, or '' for none "
        "(default: the model's data.cache_dir)",
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
    _add_progress(p)
    p.set_defaults(func=cmd_evaluate)


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images with a shipped model or a checkpoint: masks, overlays, measurements",
        description="Segment images (files, folders, glob patterns) with the shipped skin model by default. Writes "
        "<name>_mask.png (native size), <name>_overlay.png and measurements.csv/.json into --out. A file that cannot "
        "be read is named with the reason and the rest go on; the exit code is 1 when any failed.",
    )
    p.add_argument("inputs", nargs="*", help="image files, folders or glob patterns")
    _add_model(p, default="skin")
    _add_data(
        p, "also segment a data root's cases and score them (Dice)", "the one shipped for its layout", old="--dataset"
    )
    p.add_argument(
        "--out",
        default="predictions",
        help="output folder (default: predictions); a later run adds its images to the folder's tables",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="remove the earlier predictions in --out first (needed when they come from another model or pixel size)",
    )
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
    _add_inference(p, ("fp32", "bf16"))
    p.add_argument("--no-overlay", action="store_true", help="write no overlay images")
    p.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write <name>_prob.png: the calibrated foreground probability at native size, 16-bit (value/65535)",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="segment only slice I of N of the inputs (every N-th from the I-th), e.g. one per worker or cluster job, "
        "all into the same --out; the folder's tables list every slice's images in the inputs' order",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip images whose outputs in --out are whole (in the folder's table, files decodable); the table is "
        "saved every 30 s, so a killed run redoes at most that",
    )
    _add_progress(p)
    p.set_defaults(func=cmd_predict)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a shipped model or a checkpoint to ONNX (record alongside)")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="output file; OUT.json gets the record")
    _add_model(p)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset of the TorchScript exporter (default: 17)")
    p.add_argument(
        "--exporter",
        default="auto",
        choices=("auto", "torchscript", "dynamo"),
        help="torchscript, dynamo (opset >= 18), or auto: TorchScript, then dynamo if it fails (default: auto)",
    )
    p.set_defaults(func=cmd_export)


def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="web page and JSON API over the shipped models (needs the serve extra)",
        description="Serve a page (drop an image, see the mask, measurements, downloads) and a JSON API "
        "(POST /api/segment, GET /api/models, GET /healthz, docs at /docs). Binds 127.0.0.1 unless --host says "
        "otherwise; no CORS unless --cors-origin is given.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="shipped tag (skin, polyp) or checkpoint to serve; repeatable; the default for a request without a "
        "model is skin when served, else the first (default: every shipped model)",
    )
    p.add_argument(
        "--workers-threads", type=_positive_int, default=2, metavar="N", help="inference threads (default: 2)"
    )
    p.add_argument(
        "--queue-size", type=int, default=16, help="requests that may wait for a thread; beyond them 503 (default: 16)"
    )
    _add_device(p, "cpu", "auto (CUDA when present), cpu, cuda or cuda:N: where the models run (default: cpu)")
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
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level (default: info)",
    )
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(func=cmd_serve)


def _add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="train and evaluate several models under one protocol; write the report")
    p.add_argument("--config", "-c", required=True, help="benchmark YAML (configs/benchmark/*.yaml)")
    _add_set(p, "seeds=[0] results_dir=docs/results/mine")
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
    p.add_argument(
        "--jobs", type=_positive_int, default=1, metavar="K", help="K single-thread runs at once on this machine"
    )
    _add_device(p, None, "train.device for every run and the evaluation device (default: each config's)")
    _add_progress(p)
    p.set_defaults(func=cmd_benchmark)


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list registered models with parameters (and MACs with --flops)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern")
    p.add_argument("--flops", action="store_true", help="also count multiply-accumulates (what papers call FLOPs)")
    p.add_argument("--size", type=int, default=256, help="square input size for --flops")
    p.add_argument("--pretrained", action="store_true", help="list the shipped trained models instead")
    p.add_argument("--cards", action="store_true", help="with --pretrained: print each model card")
    p.set_defaults(func=cmd_models)


def _add_ensemble(sub) -> None:
    p = sub.add_parser(
        "ensemble",
        help="make an ensemble record over checkpoints, and fit its settings on out-of-fold probabilities",
        description="create --member A --member B ... --out E.json [--oof X/oof.npz ...] | fit --out E.json --oof "
        "X/oof.npz ... (the ensemble is then a --model for predict, evaluate, serve and export)",
    )
    p.add_argument("action", choices=("create", "fit"), help="create: write the record; fit: refit its settings")
    p.add_argument("--member", action="append", default=[], metavar="CHECKPOINT", help="a member (repeat)")
    p.add_argument("--weight", action="append", type=float, default=[], help="a member's weight (repeat, in order)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="working size (default: largest)")
    p.add_argument(
        "--oof",
        action="append",
        default=[],
        type=Path,
        metavar="OOF.npz",
        help="out-of-fold probabilities to fit threshold, post-processing, temperature and quality on (repeat: "
        "averaged per case)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="E.json", help="the ensemble record")
    p.set_defaults(func=cmd_ensemble)


def _add_data_verb(sub) -> None:
    p = sub.add_parser(
        "data",
        help="check a data root, draw and store a split, or unpack the official archives",
        description="check ROOT | split ROOT | prepare LAYOUT ARCHIVE... --out ROOT (unpack a dataset's official zip "
        "files into the layout the loaders read, then check it)",
    )
    p.add_argument(
        "action",
        choices=("check", "split", "prepare"),
        help="check: read every case and report bad files; split: draw and store a split; prepare: unpack archives",
    )
    p.add_argument("root", help="the data root; for prepare: the layout (isic2016, isic2017, isic2018, ph2, ...)")
    p.add_argument(
        "archives", nargs="*", help="prepare: the official archives (e.g. ISIC2018_Task1-2_Training_Input.zip)"
    )
    p.add_argument("--layout", help="check, split: layout of ROOT (default: detected)")
    p.add_argument("--out", default=None, help="split: the split file (default: split.json); prepare: the data root")
    p.add_argument(
        "--group-by",
        metavar="KEY",
        help="split: draw whole groups so that none straddles train/val/test: 'group' (the layout's: CVC-ClinicDB "
        "sequences, ISIC lesion ids from a metadata CSV, the folder layout's groups.csv), a case field (lesion_id, "
        "patient_id) or an id,group CSV file",
    )
    p.add_argument("--overwrite", action="store_true", help="prepare: unpack into dataset folders that hold files")
    p.add_argument("--seed", type=int, default=0, help="split: seed of the draw (default: 0)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="split: fraction held out for test (default: 0.2)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="split: fraction for validation, taken out of the training part (default: 0.1)",
    )
    p.add_argument("--stratify", help="split: case meta field to stratify by (e.g. diagnosis for PH2)")
    p.add_argument("--name", help="split: dataset name stored in the split (default: ROOT's folder name)")
    p.add_argument("--json", action="store_true", help="check: print the report as JSON")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="check, prepare: largest width x height accepted before decoding (default: the readers' limit)",
    )
    _add_progress(p, "check, prepare: ")
    p.set_defaults(func=cmd_data)


def build_parser() -> argparse.ArgumentParser:
    """The ``lesionseg`` parser: one subparser per verb, each built by its ``_add_<verb>`` function."""
    parser = _Parser(prog="lesionseg", description="Medical lesion segmentation toolkit.")
    parser.register("action", "parsers", _Verbs)
    parser.add_argument("--version", action="version", version=f"lesionseg {__version__}")
    _add_log_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_train,
        _add_evaluate,
        _add_predict,
        _add_export,
        _add_serve,
        _add_benchmark,
        _add_models,
        _add_ensemble,
        _add_data_verb,
        _add_cv,
    ):
        add(sub)
    return parser


def _fail(message: str, code: int, err: BaseException | None = None, verbose: bool = False) -> int:
    """The one error line (``lesionseg: error: ...``) on stderr, with the traceback under ``-v``; returns ``code``."""
    if verbose and err is not None:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    print(f"lesionseg: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one ``lesionseg`` command; returns its exit code (argparse exits with 2 itself on a malformed line)."""
    from .inference.export import OnnxExportError

    _tune_allocator()
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        return args.func(args)
    except UsageError as err:
        return _fail(str(err), EXIT_USAGE, err, args.verbose)
    # What a command fails with for reasons the user can fix; ValueError covers every error class of the package
    # (CheckpointError, BadDataError, UnknownNameError, ...). Anything else is a bug and keeps its traceback.
    except (ValueError, OSError, ImportError, OnnxExportError) as err:
        return _fail(str(err) or type(err).__name__, EXIT_FAILED, err, args.verbose)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
