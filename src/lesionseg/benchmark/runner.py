"""Running a benchmark: train each (model, seed) for its fixed epochs, evaluate it, keep its results.

Two folders. ``out_dir`` (``runs/benchmark/<name>/``, never committed) holds the working run folders
``runs/<label>/<run key>/`` (``seed<s>``, the name of its results folder) with weights, resumable checkpoints and the
evaluation (``eval/``, ``eval_<cross>/``); a folder named ``run<r>`` by an earlier version is picked up when its seed
and split are this run's (:func:`run_dir_of`). ``results_dir``
(``docs/results/<name>/``, committed; see :mod:`lesionseg.benchmark.results`) holds what each finished run leaves
behind: scores, per-image rows, the training log, the checkpoint record, overlay masks, feature maps.

For each (model, run) the runner:

1. skips it when its ``metrics.json`` is in ``results_dir`` (a table fills up across sittings and machines);
2. else, when the run folder in ``out_dir`` finished training, only exports it (:func:`export_run`: evaluate if
   needed, write the results; no retraining);
3. else trains it (resuming an interrupted run from its ``last`` checkpoint) and exports it.

Fixed compute: a run is ``model.epochs`` epochs with no time budget, ``threads`` torch threads and the precision of
the benchmark (``auto``: :func:`lesionseg.benchmark.precision.resolve_precision`, decided once per machine). A run
folder trained under other settings (a wall-clock budget, another epoch count) is refused, naming the folder.

Spreading the runs: ``--shard I/N`` trains slice I of N (the (model, run) pairs in config order, dealt round-robin,
whatever ``--only`` says) and writes no report; ``--jobs K`` trains K runs at once, each in its own process.
Parameters, MACs and CPU latency are measured once per model into ``results_dir/complexity.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data.base import find_cases, load_case, resize_pair
from ..data.ph2 import diagnosis_name
from ..data.splits import load_split, protocol_splits
from ..engine.config import load_config
from ..engine.evaluator import evaluate_checkpoint
from ..engine.trainer import Trainer
from ..inference.files import parse_shard
from ..inference.predictor import Predictor
from ..models.hub import ModelRecord, load_model, load_record
from ..runtime import lesionseg_commit, machine_description, resolve_device
from .audit import TestCurveTrainer, export_test_curve
from .config import BenchmarkConfig, BenchmarkModel
from .figures import feature_summary, overlay_case_ids, predict_overlay_masks
from .results import (
    METRICS_FILE,
    read_complexity,
    run_results_dir,
    save_case_input,
    write_case_groups,
    write_complexity,
    write_run_results,
)

__all__ = [
    "BenchmarkError",
    "benchmark_splits",
    "export_finished_runs",
    "export_run",
    "machine_description",
    "measure_complexity",
    "parse_shard",
    "record_case_groups",
    "run_benchmark",
    "run_dir_of",
    "run_one",
    "run_overrides",
    "shard_runs",
    "worker_pool",
]

_logger = logging.getLogger(__name__)

_CAUGHT = (ValueError, FileNotFoundError, RuntimeError, KeyError)


class BenchmarkError(ValueError):
    """Some runs of a benchmark failed (the message lists them); the finished ones are kept and reported."""


# ---------------------------------------------------------------------------------------------------------- paths
def run_dir_of(cfg: BenchmarkConfig, label: str, run: int) -> Path:
    """The working run folder ``out_dir/runs/<label>/<run key>`` (``seed1``, or ``run2-seed0`` for repeated draws).

    Named like the run's results folder, never by its position in ``seeds``: with ``--set seeds=[1]`` the first run
    is seed 1, and a folder named by position (``run0``, how earlier versions named them) would be seed 0's. Such a
    folder is adopted (renamed) only when it trained this very run: the same seed and the same split file.
    """
    folder = Path(cfg.out_dir) / "runs" / label
    path = folder / cfg.run_key(run)
    legacy = folder / f"run{run}"
    if not path.exists() and legacy.is_dir() and _trained_run(legacy) == (cfg.seed_of(run), f"run{run}.json"):
        legacy.rename(path)
        _logger.info("run folder %s renamed %s (its seed and split)", legacy, path.name)
    return path


def _run_config(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's resolved ``config.yaml`` (written by the trainer when it starts); None without one."""
    path = run_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def _trained_run(run_dir: Path) -> tuple[Any, str | None]:
    """``(train.seed, split file name)`` of a run folder's resolved config; ``(None, None)`` without one."""
    run_cfg = _run_config(run_dir)
    if run_cfg is None:
        return None, None
    split = (run_cfg.get("data") or {}).get("split")
    return (run_cfg.get("train") or {}).get("seed"), Path(split).name if split else None


def results_of(cfg: BenchmarkConfig, label: str, run: int) -> Path:
    """The committed results folder of a run."""
    return run_results_dir(cfg.results_dir, label, cfg.run_key(run))


def benchmark_splits(cfg: BenchmarkConfig) -> list[Path]:
    """Each run's split file in ``results_dir/splits`` (drawn once; a split drawn into ``out_dir/splits`` by an
    earlier version is adopted, so its runs keep their split)."""
    folder = Path(cfg.results_dir) / "splits"
    old = Path(cfg.out_dir) / "splits"
    for r in range(cfg.num_runs):
        src, dst = old / f"run{r}.json", folder / f"run{r}.json"
        if src.is_file() and not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    return protocol_splits(cfg.protocol, cfg.data["root"], cfg.data.get("layout"), cfg.num_runs, folder)


def record_case_groups(cfg: BenchmarkConfig, splits: Sequence[Path]) -> None:
    """Keep the diagnosis of every test id in ``results_dir/case_groups.json`` when the dataset's metadata gives one
    (PH2's ``PH2_dataset.txt``), so that the report can break the scores down by it without reading the data."""
    test_ids = {i for path in splits for i in load_split(path).test}
    cases = [c for c in find_cases(cfg.data["root"], cfg.data.get("layout")) if c.id in test_ids]
    diagnosis = {c.id: diagnosis_name(c.meta["diagnosis"]) for c in cases if "diagnosis" in c.meta}
    if diagnosis:
        source = f"case metadata of the data root `{Path(cfg.data['root']).name}` (PH2: PH2_dataset.txt)"
        write_case_groups(cfg.results_dir, {"diagnosis": diagnosis}, source)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_record(stem: Path) -> ModelRecord | None:
    """The record of a run folder's ``best`` or ``last`` checkpoint; None before the run has written it."""
    return load_record(stem) if stem.with_name(stem.name + ".json").is_file() else None


def _training_finished(run_dir: Path) -> bool:
    last = _read_record(run_dir / "last")
    return bool(last is not None and last.finished) and (run_dir / "best.json").is_file()


def _check_run_folder(cfg: BenchmarkConfig, model: BenchmarkModel, run_dir: Path, run: int) -> None:
    """Refuses a run folder trained (or started) for another run (another seed) or under another protocol (a time
    budget or another epoch count)."""
    run_cfg = _run_config(run_dir)
    if run_cfg is None:
        return
    train = run_cfg.get("train") or {}
    seed = train.get("seed")
    if seed != cfg.seed_of(run):
        raise ValueError(
            f"{run_dir} was trained with train.seed={seed}; run {cfg.run_key(run)} of this benchmark is seed "
            f"{cfg.seed_of(run)}. Move that folder away to retrain the run."
        )
    epochs, budget = train.get("epochs"), train.get("time_budget_min")
    last = _read_record(run_dir / "last")
    done = last.epoch if last is not None and last.finished else None
    if epochs != model.epochs or budget is not None or (done is not None and done != model.epochs):
        raise ValueError(
            f"{run_dir} was trained with train.epochs={epochs}, time_budget_min={budget}"
            + (f" (finished after {done} epochs)" if done is not None else "")
            + f"; this benchmark trains {model.name} for exactly {model.epochs} epochs without a time budget. "
            "Move that folder away to retrain the run."
        )


# --------------------------------------------------------------------------------------------------------- train
def run_overrides(cfg: BenchmarkConfig, model: BenchmarkModel, run: int, split_path: Path) -> list[str]:
    """The overrides a run applies to its model's config, precision and device aside (fixed compute last)."""
    base = [f"data.root={cfg.data['root']}", f"data.split={split_path}", f"train.seed={cfg.seed_of(run)}"]
    if cfg.data.get("layout"):
        base.append(f"data.layout={cfg.data['layout']}")
    fixed = [f"train.epochs={model.epochs}", "train.time_budget_min=null", f"train.threads={cfg.threads}"]
    return base + list(cfg.train) + list(model.set) + fixed


def _precision(cfg: BenchmarkConfig, model: BenchmarkModel, overrides: Sequence[str], device: str | None) -> str:
    choice = cfg.precision_of(model)
    if choice != "auto":
        return choice
    from .precision import resolve_precision  # probes in subprocesses; imported only when asked for

    return resolve_precision(Path(cfg.precision_records), model.name, Path(model.config), overrides, device)


def _train(
    cfg: BenchmarkConfig, model: BenchmarkModel, run: int, split_path: Path, progress: bool, device: str | None
) -> None:
    run_dir = run_dir_of(cfg, model.name, run)
    late = [f"train.device={device}"] if device else []
    resume = (run_dir / "last.json").is_file()
    trainer_class = TestCurveTrainer if cfg.audit.test_curve else Trainer
    if resume:
        _check_run_folder(cfg, model, run_dir, run)
        trainer = trainer_class.from_run_dir(run_dir, [f"train.threads={cfg.threads}", *late], progress=progress)
    else:
        overrides = run_overrides(cfg, model, run, split_path)
        precision = _precision(cfg, model, overrides, device)
        run_cfg = load_config(model.config, [*overrides, f"train.precision={precision}", *late])
        run_cfg.train.name = f"{model.name}-run{run}"
        trainer = trainer_class(run_cfg, run_dir=run_dir, progress=progress)
    try:
        trainer.fit(resume=resume)
    finally:
        trainer.close()


# -------------------------------------------------------------------------------------------------------- export
def _evaluation(out: Path, checkpoint: Path, save_extra: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """``out/metrics.json`` of an evaluation, computed (and saved into the run folder) when it is missing."""
    if not (out / "metrics.json").is_file():
        evaluate_checkpoint(checkpoint, **kwargs).save(out, save_extra)
    return json.loads((out / "metrics.json").read_text())


def _calibration(trust: dict[str, Any] | None, record: ModelRecord) -> dict[str, Any] | None:
    """The ``calibration`` block of a run's ``metrics.json``, from its test evaluation's trust figures.

    :func:`evaluate_checkpoint` already measured them on the same test ids (pixel-level ECE over every test pixel, at
    the working size, at T = 1 and at the temperature fitted on validation), so no network runs again here. None when
    the evaluation predates them; ``temperature`` and ``ece_fitted`` are None when the record has no fitted temperature
    (the evaluation then scaled by 1).
    """
    if not trust:
        return None
    fitted = record.temperature is not None
    return {
        # Every evaluation with trust figures binned with CalibrationStats' 15 bins; later ones say so themselves.
        "bins": trust.get("bins", 15),
        "ece_t1": trust["ece_before"],
        "ece_fitted": trust["ece_after"] if fitted else None,
        "temperature": trust["temperature"] if fitted else None,
        "images": trust["images"],
        "resolution": f"{record.image_size[0]}x{record.image_size[1]}",
    }


def export_run(
    cfg: BenchmarkConfig, model: BenchmarkModel | str, run: int, device: str | None = None, progress: bool = False
) -> Path:
    """Writes the committed results of a finished run folder (``out_dir/runs/<label>/<run key>``) into ``results_dir``.

    Evaluates the best checkpoint on the run's test ids (and each cross-dataset root) unless the run folder already
    holds that evaluation, keeps its calibration figures (:func:`_calibration`), predicts the overlay cases' masks,
    and for the report's feature model keeps the feature maps. Works on run folders trained by earlier versions of
    the benchmark, as long as they ran this benchmark's epoch count without a time budget.

    Args:
        cfg: the benchmark.
        model: the model entry or its label.
        run: run index (``seeds[run]`` for the ``fixed`` and ``official`` protocols).
        device: evaluation device (None = ``auto``).
        progress: progress bars.

    Returns:
        The run's results folder.

    Raises:
        FileNotFoundError: the run folder has not finished training.
        ValueError: it was trained under another protocol (see :func:`run_one`).
    """
    model = cfg.model(model) if isinstance(model, str) else model
    run_dir = run_dir_of(cfg, model.name, run)
    if not _training_finished(run_dir):
        raise FileNotFoundError(f"{run_dir}: no finished training run to export")
    _check_run_folder(cfg, model, run_dir, run)
    split_path = benchmark_splits(cfg)[run]
    where = resolve_device(device or "auto")
    seed = cfg.seed_of(run)
    extra = {"run": run, "split": str(split_path), "seed": seed, "machine": machine_description(where)}
    best = run_dir / "best"
    ev = _evaluation(
        run_dir / "eval",
        best,
        extra,
        split=str(split_path),
        subset="test",
        native=cfg.native,
        progress=progress,
        device=str(where),
    )
    cross = {}
    for c in cfg.cross:
        out = run_dir / f"eval_{c.name}"
        payload = _evaluation(
            out,
            best,
            {**extra, "dataset": c.name},
            data_root=c.root,
            layout=c.layout,
            split=None,
            native=cfg.native,
            progress=progress,
            device=str(where),
        )
        cross[c.name] = (
            {"dataset": c.name, "cases": payload.get("cases"), "results": payload["results"]},
            out / "per_image.csv",
        )

    split = load_split(split_path)
    run0 = load_split(benchmark_splits(cfg)[0])
    cases = overlay_case_ids(run0, cfg.report.overlay_cases)
    masks: dict[str, Any] = {}
    features = None
    wants_features = model.name == cfg.report.feature_model and bool(cfg.report.feature_layer)
    if cases or wants_features:
        predictor = Predictor.from_checkpoint(best, device=where)
        by_id = {c.id: c for c in find_cases(cfg.data["root"], cfg.data.get("layout"))}
        images = []
        for cid in cases:
            image, truth = resize_pair(*load_case(by_id[cid], predictor.in_channels), predictor.image_size)
            save_case_input(Path(cfg.out_dir) / "cases", cid, image, truth)
            images.append(image)
        masks = dict(zip(cases, predict_overlay_masks(predictor, images)))
        if wants_features and cases:
            features = feature_summary(predictor, str(cfg.report.feature_layer), images[0], cases[0])

    run_cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    last, best_record = load_record(run_dir / "last"), load_record(run_dir / "best")
    trained_on = best_record.trained_on
    finished = dt.datetime.fromtimestamp((run_dir / "last.json").stat().st_mtime, dt.timezone.utc)
    meta = {
        "benchmark": cfg.name,
        "label": model.name,
        "model": best_record.model,
        "config": model.config,
        "run": run,
        "seed": seed,
        "split": f"splits/{split_path.name}",
        "epochs": last.epoch,
        "best_epoch": best_record.epoch,
        "precision": run_cfg.get("train", {}).get("precision", "fp32"),
        "threads": run_cfg.get("train", {}).get("threads"),
        "device": trained_on.device if trained_on else None,
        "machine": ev.get("machine") or machine_description(where),
        "train_minutes": round(float(last.elapsed_seconds or 0.0) / 60.0, 2),
        "finished": finished.isoformat(timespec="seconds"),
        "lesionseg_commit": lesionseg_commit(),
        "trained_by_commit": trained_on.lesionseg_commit if trained_on else None,
        "evaluated": {"cases": ev.get("cases"), "resolution": ev.get("resolution")},
        "results": ev["results"],
        "calibration": _calibration(ev.get("trust"), best_record),
        "overlay_cases": cases,
        "overlay_in_test": set(cases) <= set(split.test),
    }
    dest = results_of(cfg, model.name, run)
    if cfg.audit.test_curve:
        # Before metrics.json (written last by write_run_results), so a run counted as done has its curve.
        export_test_curve(run_dir, dest, best_record.epoch)
    return write_run_results(
        dest,
        meta,
        run_dir / "eval" / "per_image.csv",
        run_dir / "metrics.csv",
        run_dir / "best.json",
        masks,
        features,
        cross,
    )


def _exported(cfg: BenchmarkConfig, label: str, run: int) -> bool:
    dest = results_of(cfg, label, run)
    return (dest / METRICS_FILE).is_file() and all(
        (dest / "cross" / c.name / METRICS_FILE).is_file() for c in cfg.cross
    )


def export_finished_runs(
    cfg: BenchmarkConfig, only: Sequence[str] = (), device: str | None = None, progress: bool = False
) -> list[Path]:
    """Exports every finished run folder of ``out_dir`` whose results are missing; returns their results folders.

    The way to bring run folders trained before results were kept (or on another machine) into ``results_dir``::

        from lesionseg.benchmark import export_finished_runs, load_benchmark_config
        export_finished_runs(load_benchmark_config("configs/benchmark/ph2.yaml"))

    (on the command line: ``lesionseg benchmark --config configs/benchmark/ph2.yaml --export-only``).
    """
    done = []
    for model in cfg.models:
        if only and model.name not in only:
            continue
        for run in range(cfg.num_runs):
            if not _exported(cfg, model.name, run) and _training_finished(run_dir_of(cfg, model.name, run)):
                done.append(export_run(cfg, model, run, device, progress))
    return done


# ---------------------------------------------------------------------------------------------------- complexity
def measure_complexity(cfg: BenchmarkConfig) -> dict[str, dict[str, Any]]:
    """Params, MACs and CPU latency of every model with a finished run folder and no entry yet in
    ``results_dir/complexity.json`` (measured once: latency varies between calls and machines)."""
    from ..models.complexity import count_macs, count_parameters, measure_latency

    known = read_complexity(cfg.results_dir)
    changed = False
    for model in cfg.models:
        if model.name in known:
            continue
        run_dir = next(
            (
                run_dir_of(cfg, model.name, r)
                for r in range(cfg.num_runs)
                if _training_finished(run_dir_of(cfg, model.name, r))
            ),
            None,
        )
        if run_dir is None:
            continue
        net, record = load_model(run_dir / "best")
        size, channels = record.image_size, record.in_channels
        threads = torch.get_num_threads()
        if cfg.report.latency_threads > 0:
            torch.set_num_threads(cfg.report.latency_threads)
        try:
            latency = measure_latency(net, size, channels, repeats=cfg.report.latency_repeats)
            used = torch.get_num_threads()
        finally:
            torch.set_num_threads(threads)
        known[model.name] = {
            "model": record.model,
            "params": count_parameters(net),
            "gmacs": round(count_macs(net, size, channels) / 1e9, 6),
            "latency_ms": round(latency, 3),
            "latency_setting": f"batch 1, {size[0]}x{size[1]}, fp32, {used} threads",
            "machine": machine_description(),
        }
        changed = True
    if changed:
        write_complexity(cfg.results_dir, known)
    return known


# ---------------------------------------------------------------------------------------------------- one run
def run_one(
    cfg: BenchmarkConfig,
    model: BenchmarkModel,
    run: int,
    split_path: Path,
    progress: bool = True,
    device: str | None = None,
    train: bool = True,
) -> str:
    """Brings one run's results into ``results_dir``.

    Returns:
        ``"done"`` (results already there), ``"exported"`` (the run folder had finished; evaluated and exported),
        ``"trained"`` (trained or resumed, then exported) or ``"not trained"`` (``train=False`` and nothing to export).
    """
    if _exported(cfg, model.name, run):
        return "done"
    run_dir = run_dir_of(cfg, model.name, run)
    state = "exported"
    if not _training_finished(run_dir):
        if not train:
            return "not trained"
        _train(cfg, model, run, split_path, progress, device)
        state = "trained"
    export_run(cfg, model, run, device, progress)
    return state


def shard_runs(
    cfg: BenchmarkConfig, shard: tuple[int, int] | None = None, only: Sequence[str] = ()
) -> list[tuple[BenchmarkModel, int]]:
    """The (model, run) pairs this call handles: all of them in config order, dealt round-robin to the N slices.

    The deal is over every pair of the config, before ``only`` filters, so a pair's slice never depends on what other
    slices were asked to skip.
    """
    pairs = [(m, r) for m in cfg.models for r in range(cfg.num_runs)]
    if shard is not None:
        i, n = shard
        pairs = [p for k, p in enumerate(pairs) if k % n == i - 1]
    return [(m, r) for m, r in pairs if not only or m.name in only]


def _run_job(
    cfg: BenchmarkConfig, label: str, run: int, split_path: Path, device: str | None, train: bool
) -> tuple[str, int, str, str | None]:
    """One run in a worker process of ``--jobs``: no progress bars; errors come back as text."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return label, run, run_one(cfg, cfg.model(label), run, split_path, False, device, train), None
    except _CAUGHT as err:
        return label, run, "FAILED", f"{type(err).__name__}: {err}"


def _exit_with_parent(parent: int, poll_s: float = 2.0) -> None:
    """Initializer of a ``--jobs`` worker: it ends itself once the benchmark process that spawned it is gone.

    Without it a killed benchmark leaves its workers training on, unseen, into the run folders; killed, a worker loses
    at most its last checkpoint interval and the next command resumes the run.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="lesionseg-parent-watch", daemon=True).start()


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """The ``--jobs`` pool: spawned worker processes that end with the process that made it."""
    # spawn, not fork: a forked child inherits torch's thread pools and locks in whatever state the parent held.
    spawn = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(jobs, spawn, initializer=_exit_with_parent, initargs=(os.getpid(),))


def _run_jobs(
    cfg: BenchmarkConfig,
    pairs: Sequence[tuple[BenchmarkModel, int]],
    splits: Sequence[Path],
    jobs: int,
    device: str | None,
    train: bool,
) -> list[str]:
    """``pairs`` over ``jobs`` spawned worker processes; returns the failures."""
    failures = []
    with worker_pool(jobs) as pool:
        futures = [pool.submit(_run_job, cfg, m.name, r, splits[r], device, train) for m, r in pairs]
        for future in as_completed(futures):
            label, run, state, error = future.result()
            if error:
                failures.append(f"{label} run {run}: {error}")
                state = f"FAILED ({error})"
            _logger.info("[benchmark] %s run %d: %s", label, run, state)
    return failures


def run_benchmark(
    cfg: BenchmarkConfig,
    progress: bool = True,
    only: Sequence[str] = (),
    report_only: bool = False,
    shard: str | tuple[int, int] | None = None,
    jobs: int = 1,
    device: str | None = None,
    export_only: bool = False,
) -> Path | None:
    """Trains every missing run, exports it into ``results_dir``, and writes the report; returns its path.

    Args:
        cfg: the benchmark.
        progress: progress bars and per-run lines.
        only: handle just these model labels (the report still covers every finished run).
        report_only: touch no run or data; rebuild the report from ``results_dir`` alone.
        shard: ``"I/N"`` or ``(I, N)``: handle slice I of N only (see :func:`shard_runs`) and write no report.
            Returns None then.
        jobs: handle this many runs at once, each in its own process.
        device: ``train.device`` of every run and the evaluation device (None = each config's).
        export_only: train nothing; export the finished run folders whose results are missing.

    Raises:
        BenchmarkError: some runs failed; the others were kept and the report written first.
    """
    from .report import write_report

    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if report_only:
        return write_report(cfg)
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    labels = {m.name for m in cfg.models}
    unknown = set(only) - labels
    if unknown:
        raise ValueError(f"--only: unknown model label(s) {sorted(unknown)}; known: {sorted(labels)}")
    splits = benchmark_splits(cfg)
    record_case_groups(cfg, splits)
    pairs = shard_runs(cfg, shard, only)
    if shard is not None:
        _logger.info("[benchmark] slice %d/%d: %d run(s)", shard[0], shard[1], len(pairs))
    failures: list[str] = []
    if jobs == 1:
        for model, run in pairs:
            try:
                state = run_one(cfg, model, run, splits[run], progress, device, train=not export_only)
            except _CAUGHT as err:
                # One broken run (bad config, unreadable file, a folder of another protocol) must not cost the others.
                failures.append(f"{model.name} run {run}: {type(err).__name__}: {err}")
                state = f"FAILED ({err})"
            log = _logger.warning if state.startswith("FAILED") else _logger.info
            log("[benchmark] %s run %d: %s", model.name, run, state)
    else:
        failures += _run_jobs(cfg, pairs, splits, jobs, device, not export_only)
    try:
        measure_complexity(cfg)
    except _CAUGHT as err:
        failures.append(f"complexity: {type(err).__name__}: {err}")
    if shard is not None:
        if failures:
            head = f"{len(failures)} run(s) of slice {shard[0]}/{shard[1]} failed: "
            raise BenchmarkError(head + "; ".join(failures))
        return None
    report = write_report(cfg, failures)
    if failures:
        raise BenchmarkError(f"{len(failures)} run(s) failed (listed in {report}): " + "; ".join(failures))
    return report
