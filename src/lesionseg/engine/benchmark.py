"""Benchmark: train and evaluate a set of models under one protocol, then write the papers' tables from the runs.

Layout of ``out_dir``::

    splits/run<r>.json             the split of run r (drawn once, then read back)
    runs/<label>/run<r>/           a normal run folder (config.yaml, metrics.csv, best.*, last.*)
    runs/<label>/run<r>/eval/      metrics.json, per_image.csv on the run's test ids (its presence = run done)
    runs/<label>/run<r>/eval_<x>/  the same on cross-dataset root x
    complexity.json                parameters, MACs and CPU latency per model (measured once, then read back)
    report.md, results.csv, *.png  regenerated from the files above on every call

A finished run (its ``eval/metrics.json`` exists) is never retrained; an interrupted one resumes from its ``last``
checkpoint, so a long benchmark loses at most one checkpoint interval. The report is a pure function of the stored
files, so re-running the command regenerates the same report.

Spreading the runs: ``--shard I/N`` trains slice I of N (the (model, run) pairs in config order, dealt round-robin,
whatever ``--only`` says), so N cluster jobs sharing one ``out_dir`` each train their slice; ``--report-only`` then
merges whatever runs are finished. ``--jobs K`` trains K runs at once on one machine, each in its own process with
one torch thread.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.base import find_cases, load_case, resize_pair
from ..data.splits import Split, kfold, load_split, make_split, repeated_holdout, save_split
from ..inference.predictor import Predictor
from ..metrics import SCORE_FUNCTIONS
from ..metrics.stats import bootstrap_ci, global_dice, holm, paired_wilcoxon
from ..models.hub import load_model
from .config import _from_dict, apply_overrides, load_config, read_yaml_mapping
from .distributed import resolve_device
from .evaluator import evaluate_checkpoint
from .trainer import Trainer

__all__ = [
    "BenchmarkConfig",
    "BenchmarkError",
    "BenchmarkModel",
    "CrossDataset",
    "ProtocolConfig",
    "ReportConfig",
    "load_benchmark_config",
    "parse_shard",
    "run_benchmark",
    "shard_runs",
    "write_report",
]

logger = logging.getLogger(__name__)

_PROTOCOLS = ("fixed", "official", "repeated", "kfold")
_TABLE_METRICS = ("dice", "iou", "accuracy", "sensitivity", "specificity", "f1")


class BenchmarkError(ValueError):
    """Some runs of a benchmark failed (the message lists them); the finished ones are kept and reported."""


@dataclass
class ProtocolConfig:
    """How the runs' splits are made.

    Attributes:
        kind: ``fixed`` (one stored split, one run per seed), ``official`` (the layout's own train/val/test subsets,
            e.g. ISIC's; val drawn from train when the layout has none; one run per seed), ``repeated`` (``repeats``
            seeded train/test draws, e.g. 80:20 repeated 3x) or ``kfold`` (``k`` folds).
        split: for ``fixed``: a stored split name (``ph2``) or JSON path.
        repeats: number of draws for ``repeated``.
        k: number of folds for ``kfold``.
        test_fraction: test part of every ``repeated`` draw.
        val_fraction: validation part (always taken out of the training part; checkpoints are never chosen on test).
        seed: seed of the first draw (draw r uses ``seed + r``; folds share ``seed``).
        stratify: case meta field to stratify draws by (``diagnosis`` for PH2).
    """

    kind: str = "fixed"
    split: str | None = None
    repeats: int = 3
    k: int = 5
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0
    stratify: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _PROTOCOLS:
            raise ValueError(f"protocol.kind must be one of {_PROTOCOLS}, got {self.kind!r}")
        if self.kind == "fixed" and not self.split:
            raise ValueError("protocol.kind fixed needs protocol.split (a stored split name or JSON path)")


@dataclass
class BenchmarkModel:
    """One model of the benchmark: a run config plus overrides. ``label`` defaults to the config file's stem."""

    config: str
    label: str | None = None
    set: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.label or Path(self.config).stem


@dataclass
class CrossDataset:
    """Another data root every finished run is also evaluated on (all its labelled cases)."""

    name: str
    root: str
    layout: str | None = None


@dataclass
class ReportConfig:
    """What the report shows beyond the tables.

    Attributes:
        overlay_cases: how many test cases (of run 0, by sorted id, evenly spaced) the overlay figure shows.
        feature_model: label of the model whose feature maps are drawn; None = no feature-map figure.
        feature_layer: dotted module path inside that model (e.g. ``decoder.stages.0``).
        bootstrap: resamples of the bootstrap intervals.
        latency_repeats: timed forward passes per model (batch 1, fp32, eval size).
        latency_threads: torch threads for the latency figure (0 = torch's default).
    """

    overlay_cases: int = 4
    feature_model: str | None = None
    feature_layer: str | None = None
    bootstrap: int = 2000
    latency_repeats: int = 20
    latency_threads: int = 0


@dataclass
class BenchmarkConfig:
    """A benchmark: models x runs under one protocol.

    Attributes:
        name: benchmark name (report title).
        out_dir: folder for splits, runs, report.
        data: ``root`` (and optionally ``layout``) of the dataset, applied to every model's config.
        protocol: how the runs' splits are made.
        seeds: training seeds; ``fixed`` runs one run per seed, the other protocols use ``seeds[r % len]`` for run r.
        models: the models to compare.
        train: ``key=value`` overrides applied to every run (the budget: ``train.epochs``, ``train.time_budget_min``).
        native: evaluate at each image's own resolution instead of the training size.
        cross: other data roots to evaluate every run on.
        report: figures and statistics of the report.
    """

    name: str = "benchmark"
    out_dir: str = "runs/benchmark"
    data: dict[str, Any] = field(default_factory=dict)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    seeds: tuple[int, ...] = (0, 1, 2)
    models: tuple[BenchmarkModel, ...] = ()
    train: tuple[str, ...] = ()
    native: bool = False
    cross: tuple[CrossDataset, ...] = ()
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a benchmark needs at least one entry under models")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not self.data.get("root"):
            raise ValueError("data.root is required")
        unknown = set(self.data) - {"root", "layout"}
        if unknown:
            raise ValueError(f"data: unknown key(s) {sorted(unknown)}; known: ['layout', 'root']")
        labels = [m.name for m in self.models]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"models: duplicate label(s) {dupes}; give each a distinct label")
        if self.report.feature_model and self.report.feature_model not in labels:
            raise ValueError(f"report.feature_model {self.report.feature_model!r} is not one of {labels}")

    @property
    def num_runs(self) -> int:
        p = self.protocol
        return {"fixed": len(self.seeds), "official": len(self.seeds), "repeated": p.repeats, "kfold": p.k}[p.kind]

    def seed_of(self, run: int) -> int:
        return self.seeds[run % len(self.seeds)]


def load_benchmark_config(path: str | Path, overrides: Sequence[str] = ()) -> BenchmarkConfig:
    """Read a benchmark YAML (unknown keys and wrong types raise ``ValueError`` naming them), apply overrides."""
    path = Path(path)
    data = read_yaml_mapping(path, "benchmark config")
    apply_overrides(data, list(overrides))
    data.setdefault("name", path.stem)
    try:
        return _from_dict(BenchmarkConfig, data, "")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


# --------------------------------------------------------------------------------------------------------- protocol
def make_splits(cfg: BenchmarkConfig) -> list[Path]:
    """The split file of every run, drawn on first use and read back afterwards (so runs never change split)."""
    out = Path(cfg.out_dir) / "splits"
    paths = [out / f"run{r}.json" for r in range(cfg.num_runs)]
    if all(p.is_file() for p in paths):
        return paths
    p = cfg.protocol
    if p.kind == "fixed":
        splits = [load_split(p.split)] * cfg.num_runs
    elif p.kind == "official":
        splits = [official_split(cfg)] * cfg.num_runs
    else:
        cases = find_cases(cfg.data["root"], cfg.data.get("layout"))
        ids = [c.id for c in cases]
        strata = None
        if p.stratify:
            strata = {c.id: c.meta.get(p.stratify) for c in cases}
            missing = [i for i, v in strata.items() if v is None]
            if missing:
                raise ValueError(f"protocol.stratify {p.stratify!r}: {len(missing)} cases lack it, e.g. {missing[0]}")
        name = Path(cfg.data["root"]).name
        if p.kind == "repeated":
            splits = repeated_holdout(
                ids, p.repeats, p.test_fraction, p.val_fraction, p.seed, strata, name, p.stratify or None
            )
        else:
            splits = kfold(ids, p.k, p.val_fraction, p.seed, strata, name, p.stratify or None)
    for split, path in zip(splits, paths):
        if not path.is_file():
            # Shards may draw at the same moment; each draw is identical, and a rename never shows a half file.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_split(split, tmp)
            os.replace(tmp, path)
    return paths


def official_split(cfg: BenchmarkConfig) -> Split:
    """The layout's own subsets (``meta["subset"]``); without a val subset, val is drawn (seeded) from train."""
    cases = find_cases(cfg.data["root"], cfg.data.get("layout"))
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c in cases:
        subset = c.meta.get("subset")
        if subset not in parts:
            raise ValueError(f"protocol official: case {c.id} ({c.image}) has no official subset in its layout")
        if c.mask is not None:
            parts[subset].append(c.id)
    if not parts["train"] or not parts["test"]:
        raise ValueError(f"protocol official: {cfg.data['root']} lacks a train or test subset")
    info = {"dataset": Path(cfg.data["root"]).name, "generator": "official subsets"}
    if not parts["val"]:
        drawn = make_split(parts["train"], 0.0, cfg.protocol.val_fraction, cfg.protocol.seed)
        parts["train"], parts["val"] = drawn.train, drawn.val
        info["val"] = f"{cfg.protocol.val_fraction:.0%} of train, seed {cfg.protocol.seed}"
    return Split(train=sorted(parts["train"]), val=sorted(parts["val"]), test=sorted(parts["test"]), info=info)


def run_dir_of(cfg: BenchmarkConfig, label: str, run: int) -> Path:
    return Path(cfg.out_dir) / "runs" / label / f"run{run}"


def _machine(device: torch.device | None = None) -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    where = "CPU"
    if device is not None and device.type == "cuda":
        where = f"GPU {torch.cuda.get_device_name(device)}"
    return f"{platform.node()} ({cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, {where})"


def _run_trainer(trainer: Trainer, resume: bool) -> None:
    try:
        trainer.fit(resume=resume)
    finally:
        trainer.close()


def run_one(
    cfg: BenchmarkConfig,
    model: BenchmarkModel,
    run: int,
    split_path: Path,
    progress: bool = True,
    overrides: Sequence[str] = (),
    device: str | None = None,
) -> str:
    """Train (or resume) one run and evaluate it; returns ``"done"`` (already finished), ``"trained"``.

    ``overrides`` (``key=value``) apply last, also to a resumed run (e.g. ``train.threads=1``); ``device`` sets
    ``train.device`` and the evaluation device (None = each config's device, evaluation on ``auto``).
    """
    run_dir = run_dir_of(cfg, model.name, run)
    eval_dir = run_dir / "eval"
    if (eval_dir / "metrics.json").is_file() and all(
        (run_dir / f"eval_{c.name}" / "metrics.json").is_file() for c in cfg.cross
    ):
        return "done"
    late = list(overrides) + ([f"train.device={device}"] if device else [])
    if not (run_dir / "best.json").is_file() or not _training_finished(run_dir):
        if (run_dir / "last.json").is_file():
            _run_trainer(Trainer.from_run_dir(run_dir, late, progress=progress), resume=True)
        else:
            base = [f"data.root={cfg.data['root']}", f"data.split={split_path}", f"train.seed={cfg.seed_of(run)}"]
            if cfg.data.get("layout"):
                base.append(f"data.layout={cfg.data['layout']}")
            run_cfg = load_config(model.config, base + list(cfg.train) + list(model.set) + late)
            run_cfg.train.name = f"{model.name}-run{run}"
            _run_trainer(Trainer(run_cfg, run_dir=run_dir, progress=progress), resume=False)
    where = resolve_device(device or "auto")
    extra = {"run": run, "split": str(split_path), "seed": cfg.seed_of(run), "machine": _machine(where)}
    if not (eval_dir / "metrics.json").is_file():
        evaluate_checkpoint(
            run_dir / "best", split=str(split_path), subset="test", native=cfg.native, progress=progress, device=where
        ).save(eval_dir, extra)
    for c in cfg.cross:
        out = run_dir / f"eval_{c.name}"
        if not (out / "metrics.json").is_file():
            evaluate_checkpoint(
                run_dir / "best",
                data_root=c.root,
                layout=c.layout,
                split=None,
                native=cfg.native,
                progress=progress,
                device=where,
            ).save(out, {**extra, "dataset": c.name})
    return "trained"


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (1 <= I <= N) as ``(I, N)``; None for no sharding.

    Raises:
        ValueError: a malformed spec or I outside 1..N.
    """
    if spec is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not match:
        raise ValueError(f"--shard {spec!r}: expected I/N, e.g. 2/4 (slice 2 of 4)")
    i, n = int(match.group(1)), int(match.group(2))
    if not 1 <= i <= n:
        raise ValueError(f"--shard {spec!r}: I must be in 1..N (slices are numbered from 1)")
    return i, n


def shard_runs(
    cfg: BenchmarkConfig, shard: tuple[int, int] | None = None, only: Sequence[str] = ()
) -> list[tuple[BenchmarkModel, int]]:
    """The (model, run) pairs this call trains: all of them in config order, dealt round-robin to the N slices.

    The deal is over every pair of the config, before ``only`` filters, so a pair's slice never depends on what other
    slices were asked to skip.
    """
    pairs = [(m, r) for m in cfg.models for r in range(cfg.num_runs)]
    if shard is not None:
        i, n = shard
        pairs = [p for k, p in enumerate(pairs) if k % n == i - 1]
    return [(m, r) for m, r in pairs if not only or m.name in only]


def _run_job(
    cfg: BenchmarkConfig, label: str, run: int, split_path: Path, device: str | None
) -> tuple[str, int, str, str | None]:
    """One run in a worker process of ``--jobs``: one torch thread, no progress bars; errors come back as text."""
    torch.set_num_threads(1)
    model = next(m for m in cfg.models if m.name == label)
    try:
        return label, run, run_one(cfg, model, run, split_path, False, ["train.threads=1"], device), None
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        return label, run, "FAILED", f"{type(err).__name__}: {err}"


def _training_finished(run_dir: Path) -> bool:
    last = run_dir / "last.json"
    if not last.is_file():
        return False
    record = json.loads(last.read_text())
    return bool(record.get("finished", False))


def run_benchmark(
    cfg: BenchmarkConfig,
    progress: bool = True,
    only: Sequence[str] = (),
    report_only: bool = False,
    shard: str | tuple[int, int] | None = None,
    jobs: int = 1,
    device: str | None = None,
) -> Path | None:
    """Trains every missing run (resuming interrupted ones), evaluates it, and writes the report; returns its path.

    Args:
        cfg: the benchmark.
        progress: progress bars and per-run lines.
        only: train just these model labels (the report still covers every finished run).
        report_only: train nothing; regenerate the report from the finished runs.
        shard: ``"I/N"`` or ``(I, N)``: train slice I of N only (see :func:`shard_runs`) and write no report (slices
            run concurrently on other machines; ``report_only`` merges them). Returns None then.
        jobs: train this many runs at once, each in its own process with one torch thread.
        device: ``train.device`` of every run and the evaluation device (None = each config's).

    Raises:
        BenchmarkError: some runs failed; the others were trained and the report written first.
    """
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    splits = make_splits(cfg)
    failures: list[str] = []
    if not report_only:
        labels = {m.name for m in cfg.models}
        unknown = set(only) - labels
        if unknown:
            raise ValueError(f"--only: unknown model label(s) {sorted(unknown)}; known: {sorted(labels)}")
        pairs = shard_runs(cfg, shard, only)
        if shard is not None:
            print(f"[benchmark] slice {shard[0]}/{shard[1]}: {len(pairs)} run(s)", flush=True)
        if jobs == 1:
            for model, run in pairs:
                try:
                    state = run_one(cfg, model, run, splits[run], progress, device=device)
                except (ValueError, FileNotFoundError, RuntimeError) as err:
                    # One broken run (bad config, unreadable file) must not cost the others; it is reported.
                    failures.append(f"{model.name} run {run}: {type(err).__name__}: {err}")
                    state = f"FAILED ({err})"
                if progress or state.startswith("FAILED"):
                    log = logger.warning if state.startswith("FAILED") else logger.info
                    log("[benchmark] %s run %d: %s", model.name, run, state)
        else:
            failures += _run_jobs(cfg, pairs, splits, jobs, device)
    if shard is not None:
        if failures:
            head = f"{len(failures)} run(s) of slice {shard[0]}/{shard[1]} failed: "
            raise BenchmarkError(head + "; ".join(failures))
        return None
    report = write_report(cfg, failures)
    if failures:
        raise BenchmarkError(f"{len(failures)} run(s) failed (listed in {report}): " + "; ".join(failures))
    return report


def _run_jobs(
    cfg: BenchmarkConfig,
    pairs: Sequence[tuple[BenchmarkModel, int]],
    splits: Sequence[Path],
    jobs: int,
    device: str | None,
) -> list[str]:
    """``pairs`` over ``jobs`` spawned worker processes; returns the failures."""
    import multiprocessing

    failures = []
    # spawn, not fork: a forked child inherits torch's thread pools and locks in whatever state the parent held.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_job, cfg, m.name, r, splits[r], device) for m, r in pairs]
        for future in as_completed(futures):
            label, run, state, error = future.result()
            if error:
                failures.append(f"{label} run {run}: {error}")
                state = f"FAILED ({error})"
            print(f"[benchmark] {label} run {run}: {state}", flush=True)
    return failures


# ----------------------------------------------------------------------------------------------------------- report
@dataclass
class _Run:
    run: int
    results: dict[str, dict[str, float]]
    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    train: dict[str, Any]


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k, v in row.items():
            if k != "id":
                row[k] = float(v) if v not in ("", "nan") else math.nan
    return rows


def _collect(cfg: BenchmarkConfig, eval_name: str = "eval") -> dict[str, list[_Run]]:
    runs: dict[str, list[_Run]] = {}
    for model in cfg.models:
        for r in range(cfg.num_runs):
            run_dir = run_dir_of(cfg, model.name, r)
            mfile = run_dir / eval_name / "metrics.json"
            if not mfile.is_file():
                continue
            meta = json.loads(mfile.read_text())
            best = json.loads((run_dir / "best.json").read_text()) if (run_dir / "best.json").is_file() else {}
            last = json.loads((run_dir / "last.json").read_text()) if (run_dir / "last.json").is_file() else {}
            train = {
                "best_epoch": best.get("epoch"),
                "epochs": last.get("epoch"),
                "train_minutes": (last.get("elapsed_seconds") or 0.0) / 60.0,
            }
            rows = _read_rows(run_dir / eval_name / "per_image.csv")
            runs.setdefault(model.name, []).append(_Run(r, meta["results"], rows, meta, train))
    return runs


def _mean_std(values: Sequence[float], scale: float = 100.0) -> str:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float) * scale
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.2f}"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def _results_table(runs: dict[str, list[_Run]], reduction: str) -> list[str]:
    head = ["Model", "Runs", "Dice", "IoU", "Accuracy", "Sensitivity", "Specificity", "F1", "HD95 (px, per-image)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for label, rs in runs.items():
        cells = [label, str(len(rs))]
        cells += [_mean_std([r.results[reduction][m] for r in rs]) for m in _TABLE_METRICS]
        cells.append(_mean_std([r.results["per_image"].get("hd95", math.nan) for r in rs], scale=1.0))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pooled(rs: Sequence[_Run], key: str) -> dict[tuple[int, str], float]:
    return {(r.run, row["id"]): row[key] for r in rs for row in r.rows}


def _counts(rs: Sequence[_Run]) -> np.ndarray:
    return np.asarray([[row[k] for k in ("tp", "fp", "fn", "tn")] for r in rs for row in r.rows], dtype=float)


def _stats_tables(
    runs: dict[str, list[_Run]], dice: dict[str, dict[tuple[int, str], float]], resamples: int
) -> tuple[list[str], list[str]]:
    ci = [
        "| Model | Test images (all runs) | per-image Dice [95% CI] | global Dice [95% CI] |",
        "|---|---:|---|---|",
    ]
    for label, rs in runs.items():
        values = list(dice[label].values())
        counts = _counts(rs)
        lo, hi = bootstrap_ci(per_image=values, resamples=resamples)
        glo, ghi = bootstrap_ci(counts=counts, resamples=resamples)
        ci.append(
            f"| {label} | {len(values)} | {100 * np.mean(values):.2f} [{100 * lo:.2f}, {100 * hi:.2f}] | "
            f"{100 * global_dice(counts):.2f} [{100 * glo:.2f}, {100 * ghi:.2f}] |"
        )
    best = max(runs, key=lambda k: np.mean(list(dice[k].values())))
    ref = dice[best]
    tests = []
    for label in runs:
        if label == best:
            continue
        other = dice[label]
        keys = sorted(set(ref) & set(other))
        tests.append((label, paired_wilcoxon([ref[k] for k in keys], [other[k] for k in keys])))
    adjusted = holm([t.p_value if not math.isnan(t.p_value) else 1.0 for _, t in tests]) if tests else []
    paired = [
        f"Best by mean per-image Dice: **{best}**. Two-sided Wilcoxon signed-rank test of its per-image Dice against "
        "each other model on the same test images (matched by run and case id), Holm-adjusted over the comparisons.",
        "",
        "| Compared with | Pairs | Mean Δ Dice | Median Δ Dice | p | p (Holm) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (label, t), p_adj in zip(tests, adjusted):
        paired.append(
            f"| {label} | {t.n} | {100 * t.mean_difference:+.2f} | {100 * t.median_difference:+.2f} | "
            f"{t.p_value:.3g} | {p_adj:.3g} |"
        )
    return ci, paired


def _complexity(cfg: BenchmarkConfig, runs: dict[str, list[_Run]]) -> dict[str, dict[str, Any]]:
    """Params, MACs and latency per model; measured once into complexity.json (latency varies between calls)."""
    from ..models.complexity import count_macs, count_parameters, measure_latency

    path = Path(cfg.out_dir) / "complexity.json"
    known: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}
    changed = False
    for label, rs in runs.items():
        if label in known:
            continue
        model, record = load_model(run_dir_of(cfg, label, rs[0].run) / "best")
        size = tuple(record["image_size"])
        threads = torch.get_num_threads()
        if cfg.report.latency_threads > 0:
            torch.set_num_threads(cfg.report.latency_threads)
        try:
            latency = measure_latency(model, size, record.get("in_channels", 3), repeats=cfg.report.latency_repeats)
            used = torch.get_num_threads()
        finally:
            torch.set_num_threads(threads)
        known[label] = {
            "model": record["model"],
            "params": count_parameters(model),
            "gmacs": count_macs(model, size, record.get("in_channels", 3)) / 1e9,
            "latency_ms": latency,
            "latency_setting": f"batch 1, {size[0]}x{size[1]}, fp32, {used} threads",
            "machine": _machine(),
        }
        changed = True
    if changed:
        path.write_text(json.dumps(known, indent=1) + "\n")
    return known


def _test_cases(cfg: BenchmarkConfig, n: int) -> list[Any]:
    split = load_split(Path(cfg.out_dir) / "splits" / "run0.json")
    cases = {c.id: c for c in find_cases(cfg.data["root"], cfg.data.get("layout"))}
    test = [cases[i] for i in sorted(split.test) if i in cases]
    if n >= len(test):
        return test
    picks = np.linspace(0, len(test) - 1, n).round().astype(int)
    return [test[i] for i in picks]


def _figures(
    cfg: BenchmarkConfig, runs: dict[str, list[_Run]], dice: dict[str, dict[tuple[int, str], float]], out: Path
) -> list[str]:
    from ..viz import plot_feature_maps, plot_overlay_grid, plot_score_distributions

    lines = []
    scores = {label: list(values.values()) for label, values in dice.items()}
    plot_score_distributions(scores, out / "dice_per_image.png", "per-image Dice (all runs)")
    lines += ["![per-image Dice](dice_per_image.png)", ""]
    have_run0 = [label for label, rs in runs.items() if any(r.run == 0 for r in rs)]
    # The feature-map case is the first overlay case (the first test id of run 0).
    cases = _test_cases(cfg, max(cfg.report.overlay_cases, 1)) if have_run0 else []
    predictors: dict[str, Predictor] = {}

    def predictor_of(label: str) -> Predictor:
        if label not in predictors:
            predictors[label] = Predictor.from_checkpoint(run_dir_of(cfg, label, 0) / "best")
        return predictors[label]

    if cfg.report.overlay_cases > 0 and have_run0:
        shown = []
        predictions: dict[str, list[np.ndarray]] = {}
        for label in have_run0:
            predictor = predictor_of(label)
            size = predictor.image_size
            if not shown:
                for c in cases:
                    image, mask = resize_pair(*load_case(c, predictor.in_channels), size)
                    shown.append((c.id, image, mask))
            predictions[label] = predictor.predict_mask([img for _, img, _ in shown])
        plot_overlay_grid(shown, predictions, out / "overlays.png")
        lines += [
            f"Run-0 test cases {', '.join(i for i, _, _ in shown)}: ground truth (green), each model's prediction "
            "(orange, truth outlined in green), at the evaluation size.",
            "",
            "![overlays](overlays.png)",
            "",
        ]
    fm, layer = cfg.report.feature_model, cfg.report.feature_layer
    if fm and layer and fm in have_run0:
        predictor = predictor_of(fm)
        try:
            module = predictor.model.get_submodule(layer)
        except AttributeError as err:
            raise ValueError(f"report.feature_layer {layer!r} is not a module of {fm}: {err}") from err
        captured: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, o: captured.append(o if torch.is_tensor(o) else o[0]))
        case = cases[0]
        image, _ = resize_pair(*load_case(case, predictor.in_channels), predictor.image_size)
        try:
            predictor.predict_mask([image])
        finally:
            handle.remove()
        plot_feature_maps(image, captured[0][0], out / "feature_maps.png", f"{fm}: {layer} on {case.id}")
        lines += [
            f"Feature maps of `{layer}` in {fm} (run 0) on test case {case.id}:",
            "",
            "![features](feature_maps.png)",
        ]
    return lines


def _results_csv(runs: dict[str, list[_Run]], complexity: dict[str, dict[str, Any]], path: Path) -> None:
    fields = ["model", "arch", "run", "seed", "split", "epochs", "best_epoch", "train_minutes", "machine", "params"]
    fields += [f"{red}_{m}" for red in ("global", "per_image") for m in SCORE_FUNCTIONS]
    fields += ["per_image_hd95"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for label, rs in runs.items():
            for r in rs:
                row = {
                    "model": label,
                    "arch": r.meta.get("model"),
                    "run": r.run,
                    "seed": r.meta.get("seed"),
                    "split": r.meta.get("split"),
                    "epochs": r.train["epochs"],
                    "best_epoch": r.train["best_epoch"],
                    "train_minutes": round(r.train["train_minutes"], 2),
                    "machine": r.meta.get("machine"),
                    "params": complexity.get(label, {}).get("params"),
                }
                for red in ("global", "per_image"):
                    for m in SCORE_FUNCTIONS:
                        row[f"{red}_{m}"] = round(r.results[red][m], 6)
                row["per_image_hd95"] = round(r.results["per_image"].get("hd95", math.nan), 4)
                writer.writerow(row)


def write_report(cfg: BenchmarkConfig, failures: Sequence[str] = ()) -> Path:
    """Writes report.md, results.csv and the figures from the finished runs; returns the report's path."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = _collect(cfg)
    p = cfg.protocol
    protocol = {
        "fixed": f"stored split `{p.split}`, {cfg.num_runs} runs (seeds {', '.join(map(str, cfg.seeds))})",
        "official": f"the dataset's official subsets, {cfg.num_runs} runs (seeds {', '.join(map(str, cfg.seeds))})",
        "repeated": f"{p.repeats} seeded draws of {1 - p.test_fraction:.0%}:{p.test_fraction:.0%} train:test",
        "kfold": f"{p.k}-fold cross-validation",
    }[p.kind]
    lines = [
        f"# Benchmark: {cfg.name}",
        "",
        f"Data root `{cfg.data['root']}`; protocol: {protocol}; validation ids (for checkpoint selection) drawn "
        f"from the training part ({p.val_fraction:.0%} of all ids), never from test. Budget per run: "
        f"{', '.join(cfg.train) or 'each config as written'}. Scores in percent, mean ± std over runs; evaluated at "
        f"{'each image’s native resolution' if cfg.native else 'the training size'}.",
        "",
        "Regenerate (finished runs are read back, never retrained): "
        f"`lesionseg benchmark --config <this benchmark's config>`; splits in `{out}/splits/`.",
        "",
    ]
    missing = [
        (m.name, r)
        for m in cfg.models
        for r in range(cfg.num_runs)
        if not any(x.run == r for x in runs.get(m.name, []))
    ]
    if missing:
        lines += [
            f"**Incomplete**: {len(missing)} of {len(cfg.models) * cfg.num_runs} runs not finished: "
            + ", ".join(f"{m} run {r}" for m, r in missing),
            "",
        ]
    if failures:
        lines += ["**Failed in the last call**:", ""] + [f"- {f}" for f in failures] + [""]
    if not runs:
        lines.append("No finished runs yet.")
        path = out / "report.md"
        path.write_text("\n".join(lines) + "\n")
        return path
    complexity = _complexity(cfg, runs)
    lines += ["## Global (one confusion matrix over all test pixels of a run; how the papers report)", ""]
    lines += _results_table(runs, "global") + [""]
    lines += ["## Per-image mean (each test image scored, then averaged; HD95 over images where defined)", ""]
    lines += _results_table(runs, "per_image") + [""]
    lines += ["## Size and speed", "", "| Model | Architecture | Params (M) | GMACs | CPU latency (ms) | Setting |"]
    lines += ["|---|---|---:|---:|---:|---|"]
    for label in runs:
        c = complexity[label]
        lines.append(
            f"| {label} | {c['model']} | {c['params'] / 1e6:.3f} | {c['gmacs']:.3f} | {c['latency_ms']:.1f} | "
            f"{c['latency_setting']} |"
        )
    machines = sorted({c["machine"] for c in complexity.values()})
    lines += ["", f"Latency measured on: {'; '.join(machines)}.", ""]
    dice = {label: _pooled(rs, "dice") for label, rs in runs.items()}
    ci, paired = _stats_tables(runs, dice, cfg.report.bootstrap)
    lines += (
        [
            "## Confidence intervals (percentile bootstrap over test images of all runs, "
            f"{cfg.report.bootstrap} resamples, seed 0)",
            "",
        ]
        + ci
        + [""]
    )
    lines += ["## Paired comparison", ""] + paired + [""]
    lines += [
        "## Training",
        "",
        "| Model | Run | Seed | Epochs | Best epoch | Minutes | Ran on |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, rs in runs.items():
        for r in rs:
            lines.append(
                f"| {label} | {r.run} | {r.meta.get('seed')} | {r.train['epochs']} | {r.train['best_epoch']} | "
                f"{r.train['train_minutes']:.1f} | {r.meta.get('machine')} |"
            )
    lines.append("")
    for c in cfg.cross:
        cross = _collect(cfg, f"eval_{c.name}")
        if cross:
            lines += [
                f"## Cross-dataset: trained on {cfg.name}, evaluated on {c.name} (`{c.root}`, all labelled cases)"
            ]
            lines += ["", "Global:", ""] + _results_table(cross, "global") + ["", "Per-image mean:", ""]
            lines += _results_table(cross, "per_image") + [""]
    lines += ["## Figures", ""] + _figures(cfg, runs, dice, out)
    _results_csv(runs, complexity, out / "results.csv")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
