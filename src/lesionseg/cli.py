"""Command line: ``lesionseg train | evaluate | predict | benchmark | models | data``."""

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
        summary = trainer.fit(resume=True)
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
        summary = Trainer(cfg, progress=not args.no_progress).fit()
    print(json.dumps(summary, indent=1))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .engine import evaluate_checkpoint

    evaluation = evaluate_checkpoint(
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
        skip_bad=True if args.skip_bad else None,
    )
    _print_results(evaluation.results(), evaluation.title)
    for p in evaluation.skipped:
        print(f"skipped [{p.kind}] {p.message}", file=sys.stderr)
    if args.out:
        evaluation.save(args.out)
        extra = ", skipped.json" if evaluation.skipped else ""
        print(f"wrote {args.out}/metrics.json, report.md, per_image.csv{extra}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .engine.benchmark import load_benchmark_config, run_benchmark

    cfg = load_benchmark_config(args.config, args.set)
    only = [x for item in args.only for x in item.split(",") if x]
    report = run_benchmark(cfg, progress=not args.no_progress, only=only, report_only=args.report_only)
    print(f"wrote {report}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from .data.io import IMAGE_EXTENSIONS
    from .inference import Predictor
    from .viz import overlay_mask

    paths: list[Path] = []
    for item in args.inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(q for q in sorted(p.iterdir()) if q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            paths.append(p)
        else:
            print(f"lesionseg predict: {p}: no such file or folder", file=sys.stderr)
            return 2
    if not paths:
        print("lesionseg predict: no images found", file=sys.stderr)
        return 2
    predictor = Predictor.from_checkpoint(
        args.checkpoint, threshold=args.threshold, precision=args.precision, tta=args.tta
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path, image, prob in predictor.predict_files(paths):
        mask = (prob > predictor.threshold).astype(np.uint8)
        Image.fromarray(mask * 255).save(out / f"{path.stem}_mask.png")
        if not args.no_overlay:
            Image.fromarray(overlay_mask(image, mask)).save(out / f"{path.stem}_overlay.png")
        print(
            f"{path} -> {out / (path.stem + '_mask.png')} ({mask.shape[1]}x{mask.shape[0]}, "
            f"lesion {100 * mask.mean():.1f}% of pixels)"
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import create_model, list_models, model_entrypoint
    from .models._registry import _MODEL_DEFAULTS
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
        tags = _MODEL_DEFAULTS[name]
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


def cmd_data(args: argparse.Namespace) -> int:
    from .data import DEFAULT_MAX_PIXELS, check_root, find_cases, make_split, save_split

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
    split = make_split(
        [c.id for c in cases],
        args.test_fraction,
        args.val_fraction,
        args.seed,
        strata,
        name=args.name or Path(args.root).name,
        stratified_by=args.stratify,
    )
    save_split(split, args.out)
    print(f"wrote {args.out}: train {len(split.train)}, val {len(split.val)}, test {len(split.test)}")
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
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="train without cases whose files are unusable (listed in the run folder's skipped.json) instead of "
        "refusing to start (config key data.skip_bad)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a checkpoint on a split or a data root")
    p.add_argument("--checkpoint", required=True, help="checkpoint stem, .json, .safetensors, or run folder (best)")
    p.add_argument("--data-root", help="data root in a known layout (default: the checkpoint's)")
    p.add_argument("--layout", help="dataset layout (default: detected)")
    p.add_argument("--split", help="split name or JSON (default: the checkpoint's; 'none' for every case)")
    p.add_argument(
        "--subset",
        default="test",
        choices=("test", "val", "train", "all"),
        help="test = split test ids + ids the split does not list (default)",
    )
    p.add_argument("--native", action="store_true", help="score at each image's own resolution")
    p.add_argument("--threshold", type=float, help="probability threshold (default: the checkpoint's)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (at either resolution)")
    p.add_argument("--no-hd95", action="store_true", help="skip HD95")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="evaluate without cases whose files are unusable (named in the output, and in skipped.json with --out) "
        "instead of refusing (default: the checkpoint's data.skip_bad)",
    )
    p.add_argument("--out", help="folder for metrics.json, report.md, per_image.csv")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="segment images: mask PNGs at the original size + overlays")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default="predictions", help="output folder")
    p.add_argument("--threshold", type=float)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--tta", action="store_true")
    p.add_argument("--no-overlay", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("benchmark", help="train and evaluate several models under one protocol; write the report")
    p.add_argument("--config", "-c", required=True, help="benchmark YAML (configs/benchmark/*.yaml)")
    p.add_argument("--set", "-s", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--only", action="append", default=[], metavar="LABEL", help="train only these models (repeatable)")
    p.add_argument("--report-only", action="store_true", help="train nothing; rewrite the report from finished runs")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("models", help="list registered models with parameters (and MACs with --flops)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern")
    p.add_argument("--flops", action="store_true", help="also count multiply-accumulates (what papers call FLOPs)")
    p.add_argument("--size", type=int, default=256, help="square input size for --flops")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="check a data root, or draw and store a split")
    p.add_argument("action", choices=("check", "split"))
    p.add_argument("root")
    p.add_argument("--layout")
    p.add_argument("--out", default="split.json")
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
