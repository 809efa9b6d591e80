"""The benchmark's report: ``report.md``, ``results.csv`` and the figures, from ``results_dir`` alone.

A pure function of the stored files and the benchmark config: no run folder, weights or data is read, no clock or
absolute path is written, every number is formatted with a fixed precision and every list is in config order (models,
seeds) or sorted (case ids), so rebuilding gives the same bytes on any machine.

Statistics (said in the report too):

* tables: mean ± sample std (n - 1) over the finished seeds of each model, n shown; one seed gives the value alone.
* confidence intervals: percentile bootstrap over test images (seeded); per-image Dice from each image's Dice
  averaged over the model's finished seeds, global Dice from each image's confusion counts summed over them.
* subgroups: per-image Dice (averaged over runs as above) by diagnosis where ``case_groups.json`` has one (PH2) and by
  tertile of the ground truth's area at the evaluated resolution (from each image's ``tp + fn``), each with its
  percentile bootstrap interval over the group's images.
* paired comparison: the best model by mean per-image Dice against every other, two-sided Wilcoxon signed-rank over
  test images, each image's Dice averaged over the seeds *both* models finished, Holm-adjusted over the comparisons.
  Averaging over seeds first keeps one pair per image (pooling seeds as separate pairs would count each image three
  times and overstate significance).
* "What the table says" is generated from those tests, so it stays true as runs are added.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.ph2 import diagnosis_order
from ..metrics.registry import METRICS, REPORT_METRICS, MetricSpec, get_metric
from ..metrics.stats import (
    SIZE_TERTILES,
    PairedTest,
    bootstrap_ci,
    global_dice,
    holm,
    paired_wilcoxon,
    size_tertiles,
    subgroup_means,
)
from .audit import audit_section
from .config import BenchmarkConfig
from .figures import draw_figures, overlay_case_ids
from .results import RunResults, read_case_groups, read_complexity, read_run, run_results_dir

__all__ = ["ALPHA", "collect_runs", "write_report", "write_results_csv"]

#: Significance level of the paired tests, after Holm's adjustment.
ALPHA = 0.05

_REDUCTION_TITLES = {
    "per_image": "Per-image mean (each test image scored, then averaged; HD95 over images where it is defined)",
    "global": "Global (one confusion matrix over all test pixels of a run; how the papers report)",
}


def collect_runs(cfg: BenchmarkConfig) -> dict[str, list[RunResults]]:
    """Every model's finished runs (possibly none), models and runs in config order."""
    runs: dict[str, list[RunResults]] = {}
    for model in cfg.models:
        found = [
            read_run(run_results_dir(cfg.results_dir, model.name, cfg.run_key(r)), model.name, r)
            for r in range(cfg.num_runs)
        ]
        runs[model.name] = [r for r in found if r is not None]
    return runs


# ---------------------------------------------------------------------------------------------------- formatting
def _values(results: Sequence[Mapping[str, Mapping[str, float]]], reduction: str, metric: MetricSpec) -> list[float]:
    """The shown values of ``metric`` under ``reduction`` of each result mapping, undefined ones (NaN) left out."""
    out = []
    for res in results:
        v = res.get(reduction, {}).get(metric.name, math.nan)
        if v is not None and not math.isnan(v):
            out.append(metric.show(float(v)))
    return out


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def _shown_path(path: str) -> str:
    """A path as the config gives it when relative (``configs/x.yaml``), else its name: no machine's folders."""
    return Path(path).name if Path(path).is_absolute() else path


def _p_is(p: float) -> str:
    """``p = 0.012`` or ``p < 0.001``, for running text."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _p(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _table(rows: Sequence[Sequence[str]], head: Sequence[str], align: str | None = None) -> list[str]:
    """A markdown table; ``align`` has one ``l``/``r`` per column (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "".join("---|" if a == "l" else "---:|" for a in align)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _metric_table(results: Mapping[str, Sequence[Mapping[str, Mapping[str, float]]]], reduction: str) -> list[str]:
    """Mean ± std per model of every report metric under ``reduction``; ``results``: label -> one mapping per run."""
    metrics = [m for m in REPORT_METRICS if reduction in m.reductions]
    head = ["Model", "n"] + [f"{m.label} ({m.unit})" for m in metrics]
    rows = [
        [label, str(len(rs))] + [_mean_std(_values(rs, reduction, m)) for m in metrics] for label, rs in results.items()
    ]
    return _table(rows, head)


# ---------------------------------------------------------------------------------------------------- statistics
def _per_case(rs: Sequence[RunResults], key: str, runs: set[int] | None = None) -> dict[str, float]:
    """Each test image's ``key`` averaged over the given runs (all of ``rs`` when None), by case id."""
    sums: dict[str, list[float]] = {}
    for r in rs:
        if runs is not None and r.run not in runs:
            continue
        for row in r.rows:
            sums.setdefault(str(row["id"]), []).append(float(row[key]))
    return {k: float(np.mean(sums[k])) for k in sorted(sums)}


def _case_counts(rs: Sequence[RunResults]) -> np.ndarray:
    """(images, 4) confusion counts per test image, summed over the runs."""
    counts: dict[str, np.ndarray] = {}
    for r in rs:
        for row in r.rows:
            c = np.asarray([row[k] for k in ("tp", "fp", "fn", "tn")], dtype=float)
            counts[str(row["id"])] = counts.get(str(row["id"]), 0) + c
    return np.stack([counts[k] for k in sorted(counts)]) if counts else np.zeros((0, 4))


def _mean_of(rs: Sequence[RunResults], reduction: str, name: str) -> float:
    vals = _values([r.results for r in rs], reduction, get_metric(name))
    return float(np.mean(vals)) if vals else math.nan


class _Comparison:
    def __init__(self, label: str, common: list[int], test: PairedTest | None) -> None:
        self.label, self.common, self.test = label, common, test
        self.p_holm = math.nan


def _compare(runs: Mapping[str, Sequence[RunResults]], best: str) -> list[_Comparison]:
    ref_runs = {r.run for r in runs[best]}
    out = []
    for label, rs in runs.items():
        if label == best or not rs:
            continue
        common = sorted(ref_runs & {r.run for r in rs})
        if not common:
            out.append(_Comparison(label, [], None))
            continue
        a = _per_case(runs[best], "dice", set(common))
        b = _per_case(rs, "dice", set(common))
        keys = sorted(set(a) & set(b))
        out.append(_Comparison(label, common, paired_wilcoxon([a[k] for k in keys], [b[k] for k in keys])))
    tested = [c for c in out if c.test is not None and not math.isnan(c.test.p_value)]
    for c, p in zip(tested, holm([c.test.p_value for c in tested]) if tested else []):  # type: ignore[union-attr]
        c.p_holm = p
    return out


def _yes_no(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def _names(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _best_in_last_part(meta: Mapping[str, Any], parts: int) -> bool | None:
    """Whether a run's best validation epoch fell in the last ``1/parts`` of its epochs (at least its last epoch);
    None when its metadata lacks the epochs."""
    epochs, best = meta.get("epochs"), meta.get("best_epoch")
    if not (isinstance(epochs, int) and isinstance(best, int)):
        return None
    return best > epochs - max(1, epochs // parts)


def _converged(meta: Mapping[str, Any]) -> bool | None:
    """A run converged when its best validation epoch comes before the last fifth of its epochs."""
    late = _best_in_last_part(meta, 5)
    return None if late is None else not late


def _late_models(runs: Mapping[str, Sequence[RunResults]], parts: int) -> list[str]:
    """Models with runs whose best validation epoch fell in the last ``1/parts`` of their epochs, with the number of
    such runs when not all of them (``efp_s (1 of 3 runs)``)."""
    out = []
    for label, rs in runs.items():
        late = sum(bool(_best_in_last_part(r.meta, parts)) for r in rs)
        if late:
            out.append(label if late == len(rs) else f"{label} ({late} of {len(rs)} runs)")
    return out


def _still_improving(runs: Mapping[str, Sequence[RunResults]]) -> list[str]:
    """Models whose best validation epoch fell in the last tenth of their epochs (see :func:`_late_models`)."""
    return _late_models(runs, 10)


def _what_the_table_says(
    cfg: BenchmarkConfig,
    runs: Mapping[str, Sequence[RunResults]],
    best: str | None,
    comparisons: Sequence[_Comparison],
    missing: Sequence[tuple[str, list[int]]],
) -> list[str]:
    total = len(cfg.models) * cfg.num_runs
    finished = sum(len(rs) for rs in runs.values())
    if best is None:
        return [f"No run has finished yet (0 of {total})."]
    text = []
    n_best = len(runs[best])
    text.append(
        f"By mean per-image Dice the best model is **{best}** "
        f"({_mean_of(runs[best], 'per_image', 'dice'):.2f}, {n_best} of {cfg.num_runs} runs)."
    )
    tested = [c for c in comparisons if c.test is not None and not math.isnan(c.p_holm)]
    if not tested:
        text.append("No other model shares a finished run with it, so no difference can be tested yet.")
    else:
        sig = [c for c in tested if c.p_holm < ALPHA]
        ns = [c for c in tested if c.p_holm >= ALPHA]

        def item(c: _Comparison) -> str:
            return f"{c.label} (Δ {100 * c.test.mean_difference:+.2f}, {_p_is(c.p_holm)})"  # type: ignore[union-attr]

        text.append(
            f"Paired tests on per-image Dice (two-sided Wilcoxon signed-rank, Holm-adjusted over {len(tested)} "
            f"comparison{'s' if len(tested) > 1 else ''}, α = {ALPHA}; Δ = {best} minus the other, in Dice points):"
        )
        ahead = [c for c in sig if c.test.mean_difference > 0]  # type: ignore[union-attr]
        behind = [c for c in sig if c.test.mean_difference <= 0]  # type: ignore[union-attr]
        if ahead:
            text.append(f"{best} is significantly better than {_names([item(c) for c in ahead])}.")
        if behind:
            text.append(
                f"{best} differs significantly from {_names([item(c) for c in behind])}, which score higher on "
                "the images the test weighs most."
            )
        if ns:
            several = len(ns) > 1
            text.append(
                f"The difference{'s' if several else ''} from {_names([item(c) for c in ns])} "
                f"{'are' if several else 'is'} not significant: this benchmark does not tell "
                f"{'them' if several else 'it'} apart from {best} (which is not evidence that they are equal)."
            )
        if not sig:
            text.append(f"No model differs significantly from {best}.")
    untested = [c.label for c in comparisons if c.test is None]
    if untested:
        text.append(f"Not compared (no finished run in common with {best}): {_names(untested)}.")
    empty = [label for label, rs in runs.items() if not rs]
    if empty:
        text.append(f"Without any finished run: {_names(empty)}.")
    scored = {label: _mean_of(rs, "global", "dice") for label, rs in runs.items() if rs}
    best_global = max(scored, key=lambda k: scored[k])
    if best_global == best:
        text.append(f"Global Dice ranks {best} first too.")
    else:
        text.append(
            f"Global Dice ranks {best_global} first ({scored[best_global]:.2f} against "
            f"{scored[best]:.2f}); the two reductions disagree on the top model."
        )
    late = _still_improving(runs)
    if late:
        text.append(
            f"Still improving when their fixed compute ended (the checkpoint chosen on validation comes from the last "
            f"tenth of the epochs): {_names(late)}; the table compares them at this compute, not at convergence."
        )
    unconverged = _late_models(runs, 5)
    if unconverged:
        text.append(
            f"Not converged (the best validation epoch falls in the last fifth of the epochs; the Training table "
            f"says so per run): {_names(unconverged)}."
        )
    else:
        text.append(
            "Every finished run converged: its best validation epoch comes before the last fifth of its epochs."
        )
    if missing:
        gaps = "; ".join(f"{label}: {', '.join(cfg.run_key(r) for r in rs)}" for label, rs in missing)
        text.append(
            f"{finished} of {total} runs are finished; missing: {gaps}. Everything above uses the finished runs "
            "only and is recomputed when runs are added."
        )
    else:
        text.append(f"All {total} runs ({len(cfg.models)} models x {cfg.num_runs}) are finished.")
    return [" ".join(text)]


# ------------------------------------------------------------------------------------------------------- writing
def write_results_csv(runs: Mapping[str, Sequence[RunResults]], complexity: Mapping[str, Any], path: Path) -> None:
    """One row per finished run: facts, then every registry metric under each reduction it has."""
    fields = ["model", "arch", "run", "seed", "epochs", "best_epoch", "precision", "threads", "train_minutes"]
    fields += ["machine", "converged", "params"]
    scores = [(red, m) for red in ("global", "per_image") for m in METRICS if red in m.reductions]
    fields += [f"{red}_{m.name}" for red, m in scores]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for label, rs in runs.items():
            for r in rs:
                row = {
                    "model": label,
                    "arch": r.meta.get("model"),
                    "run": r.run,
                    "seed": r.seed,
                    "epochs": r.meta.get("epochs"),
                    "best_epoch": r.meta.get("best_epoch"),
                    "precision": r.meta.get("precision"),
                    "threads": r.meta.get("threads"),
                    "train_minutes": f"{float(r.meta.get('train_minutes') or 0.0):.2f}",
                    "machine": r.meta.get("machine"),
                    "converged": {True: "yes", False: "no", None: ""}[_converged(r.meta)],
                    "params": complexity.get(label, {}).get("params"),
                }
                for red, m in scores:
                    v = r.results.get(red, {}).get(m.name)
                    row[f"{red}_{m.name}"] = "" if v is None or math.isnan(v) else f"{v:.6f}"
                writer.writerow(row)


def _split_of_run0(cfg: BenchmarkConfig) -> list[str]:
    from ..data.splits import load_split

    path = Path(cfg.results_dir) / "splits" / "run0.json"
    return overlay_case_ids(load_split(path), cfg.report.overlay_cases) if path.is_file() else []


def _case_areas(runs: Mapping[str, Sequence[RunResults]]) -> dict[str, float]:
    """Each test image's ground-truth area at the evaluated resolution (``tp + fn``), from the first run that has it."""
    areas: dict[str, float] = {}
    for rs in runs.values():
        for r in rs:
            for row in r.rows:
                areas.setdefault(str(row["id"]), float(row["tp"]) + float(row["fn"]))
    return {k: areas[k] for k in sorted(areas)}


def _subgroup_section(
    cfg: BenchmarkConfig, runs: Mapping[str, Sequence[RunResults]], case_dice: Mapping[str, Mapping[str, float]]
) -> list[str]:
    """Per-image Dice of every model by diagnosis (when ``case_groups.json`` gives one) and by lesion-size tertile."""
    if not case_dice:
        return []
    areas = _case_areas(runs)
    tertiles = size_tertiles(areas)
    groupings: list[tuple[str, dict[str, str], list[str], dict[str, str]]] = []
    diagnosis = read_case_groups(cfg.results_dir).get("diagnosis", {})
    if diagnosis:
        groupings.append(("diagnosis", diagnosis, diagnosis_order(diagnosis.values()), {}))
    ranges = {}
    for name in SIZE_TERTILES:
        sizes = [a for k, a in areas.items() if tertiles[k] == name]
        if sizes:
            ranges[name] = f", {min(sizes):.0f}-{max(sizes):.0f} px²"
    groupings.append(("lesion size", tertiles, list(SIZE_TERTILES), ranges))
    lines = [
        "## Subgroups (per-image Dice [95% CI])",
        "",
        "Each test image's Dice averaged over the model's finished runs, then averaged over the images of a subgroup, "
        f"with a percentile bootstrap interval over those images ({cfg.report.bootstrap} resamples, seed 0). "
        + (
            "Diagnosis: the dataset's own metadata (`case_groups.json`). "
            if diagnosis
            else "The dataset gives no diagnosis: lesion size only. "
        )
        + "Lesion size: tertiles of the ground truth's area at the evaluated resolution (`tp + fn` of the per-image "
        "CSVs), by rank. Small groups give wide intervals: read them as a screen for a weakness, not a ranking.",
        "",
    ]
    for kind, groups, order, extra in groupings:
        counts = {g: sum(1 for k in areas if groups.get(k) == g) for g in order}
        head = ["Model"] + [f"{g} (n={counts[g]}{extra.get(g, '')})" for g in order]
        rows = []
        for label, dice in case_dice.items():
            cells = [
                "—" if not s.n else f"{100 * s.mean:.2f} [{100 * s.lower:.2f}, {100 * s.upper:.2f}]"
                for s in subgroup_means(dice, groups, order, cfg.report.bootstrap)
            ]
            rows.append([label] + cells)
        lines += [f"By {kind}:", ""] + _table(rows, head) + [""]
    return lines


def _precision_section(cfg: BenchmarkConfig) -> list[str]:
    """The ``precision: auto`` decisions kept for this benchmark's models, per machine, with the figures behind them."""
    root = Path(cfg.precision_records)
    if not root.is_dir():
        return []
    labels = [m.name for m in cfg.models]
    lines: list[str] = []
    for machine in sorted(p for p in root.iterdir() if p.is_dir()):
        found = [(label, machine / f"{label}.json") for label in labels]
        decisions = {label: json.loads(path.read_text()) for label, path in found if path.is_file()}
        rows = []
        for label, decision in decisions.items():
            f32, b16 = decision.get("fp32") or {}, decision.get("bf16") or {}

            def cell(d: Mapping[str, Any], key: str, fmt: str) -> str:
                v = d.get(key)
                return format(v, fmt) if isinstance(v, (int, float)) else "—"

            speed = "—"
            if f32.get("steady_epoch_s") and b16.get("steady_epoch_s"):
                speed = f"{f32['steady_epoch_s'] / b16['steady_epoch_s']:.2f}x"
            rows.append(
                [
                    label,
                    cell(f32, "first_epoch_s", ".1f"),
                    cell(f32, "steady_epoch_s", ".1f"),
                    cell(b16, "first_epoch_s", ".1f"),
                    cell(b16, "steady_epoch_s", ".1f"),
                    speed,
                    cell(f32, "best_val_dice_per_image", ".4f"),
                    cell(b16, "best_val_dice_per_image", ".4f"),
                    f"**{decision['precision']}**",
                    str(decision.get("reason", "")).replace("|", "/"),
                ]
            )
        if not rows:
            continue
        if not lines:
            crit = next(iter(decisions.values())).get("criteria", {})
            lines += [
                "## Precision (fp32 or bf16 autocast, chosen per machine and model)",
                "",
                "`precision: auto` trains each model a few epochs in fp32 and in bf16 (same seed, same batches, each "
                "in its own subprocess, one thread) and adopts bf16 only if the device runs it natively, "
                f"both trials finish, bf16's steady epoch is at least {crit.get('min_speedup', '?')}x faster and its "
                f"best validation Dice per image is at most {crit.get('dice_tolerance', '?')} below fp32's "
                "(`lesionseg.benchmark.precision`; a few epochs are a coarse check that catches a precision that "
                "breaks training, not a fraction of a point). A machine's decision is made once, on the data of the "
                "benchmark that first asked, and serves every benchmark, so the trial Dice of two machines need not "
                "be comparable. Epoch times in seconds; first = epoch 1 (decodes the images), steady = median of the "
                "later ones.",
                "",
            ]
        epochs = sorted({str(r.get("criteria", {}).get("epochs", "?")) for r in decisions.values()})
        data = sorted({f"`{r['data']}`" if r.get("data") else "data not recorded" for r in decisions.values()})
        lines += [f"Machine `{machine.name}` (trials of {' or '.join(epochs)} epochs; {', '.join(data)}):", ""]
        head = [
            "Model",
            "fp32 first",
            "fp32 steady",
            "bf16 first",
            "bf16 steady",
            "Speed-up",
            "Dice fp32",
            "Dice bf16",
            "Choice",
            "Why",
        ]
        lines += _table(rows, head, "lrrrrrrrll") + [""]
    return lines


def _header(cfg: BenchmarkConfig, failures: Sequence[str]) -> list[str]:
    """Title, what was run and how, the command that rebuilds the page, and the failures of the last call."""
    p = cfg.protocol
    seeds = ", ".join(map(str, cfg.seeds))
    precisions = sorted({cfg.precision_of(m) for m in cfg.models})
    lines = [
        f"# Benchmark: {cfg.name}",
        "",
        f"Dataset `{Path(cfg.data['root']).name}` (layout {cfg.data.get('layout') or 'detected'}); protocol: "
        f"{p.describe()}, {cfg.num_runs} runs per model (seeds {seeds}); checkpoints selected on validation ids "
        "taken from the training part, never on test. **Fixed compute**: each model trains for the number of epochs "
        f"listed under Runs, with no wall-clock budget, {cfg.threads or 'default'} torch thread(s) per run and "
        f"precision {'/'.join(precisions)} (the precision each run used is in the Training table); wall-clock "
        "minutes are recorded for information only. Evaluated at "
        f"{'each image’s native resolution' if cfg.native else 'the training size'}. Scores in percent, HD95 in "
        "pixels of the evaluated resolution; mean ± sample std over the finished runs, n = finished runs.",
        "",
        "Rebuild this page (and `results.csv`, the figures) from the kept results alone, byte for byte: "
        f"`lesionseg benchmark --config configs/benchmark/{cfg.name}.yaml --report-only`. Per-run files: "
        "`runs/<model>/<seed>/`.",
        "",
    ]
    if failures:
        lines += ["**Failed in the last call**:", ""] + [f"- {f}" for f in failures] + [""]
    return lines


def _runs_section(cfg: BenchmarkConfig, runs: dict[str, list[RunResults]], done_runs: dict[str, set[int]]) -> list[str]:
    """Each model's config, epochs, precision and finished/missing runs."""
    rows = []
    for m in cfg.models:
        rs = runs[m.name]
        gone = [cfg.run_key(r) for r in range(cfg.num_runs) if r not in done_runs[m.name]]
        rows.append(
            [
                m.name,
                f"`{_shown_path(m.config)}`",
                str(m.epochs),
                cfg.precision_of(m),
                f"{len(rs)}/{cfg.num_runs}",
                ", ".join(gone) or "—",
            ]
        )
    return ["## Runs", ""] + _table(rows, ["Model", "Config", "Epochs", "Precision", "Finished", "Missing"], "llrlrl")


def _interval_section(
    cfg: BenchmarkConfig, scored: dict[str, list[RunResults]], case_dice: dict[str, dict[str, float]]
) -> list[str]:
    """Bootstrap confidence intervals of both Dice reductions over the test images."""
    lines = [
        f"## Confidence intervals (percentile bootstrap over test images, {cfg.report.bootstrap} resamples, seed 0)",
        "",
        "Per-image Dice: each image's Dice averaged over the model's finished runs; global Dice: each image's "
        "confusion counts summed over them.",
        "",
    ]
    rows = []
    for label, rs in scored.items():
        values = list(case_dice[label].values())
        counts = _case_counts(rs)
        lo, hi = bootstrap_ci(per_image=values, resamples=cfg.report.bootstrap)
        glo, ghi = bootstrap_ci(counts=counts, resamples=cfg.report.bootstrap)
        rows.append(
            [
                label,
                str(len(rs)),
                str(len(values)),
                f"{100 * np.mean(values):.2f} [{100 * lo:.2f}, {100 * hi:.2f}]",
                f"{100 * global_dice(counts):.2f} [{100 * glo:.2f}, {100 * ghi:.2f}]",
            ]
        )
    lines += _table(rows, ["Model", "n", "Test images", "Per-image Dice [95% CI]", "Global Dice [95% CI]"])
    return lines + [""]


def _paired_section(cfg: BenchmarkConfig, best: str, comparisons: list[_Comparison]) -> list[str]:
    """The best model's Wilcoxon test against every other, Holm-adjusted."""
    lines = [
        "## Paired comparison",
        "",
        f"Best by mean per-image Dice: **{best}**. Two-sided Wilcoxon signed-rank test of its per-image Dice "
        "against each other model's over the test images, each image's Dice averaged over the runs both models "
        f"finished (one pair per image), Holm-adjusted over the comparisons; significant when p (Holm) < {ALPHA}. "
        "Δ = best minus the other, in Dice points.",
        "",
    ]
    rows = []
    for c in comparisons:
        if c.test is None:
            rows.append([c.label, "—", "0", "—", "—", "—", "—", "not compared"])
            continue
        t = c.test
        verdict = "—" if math.isnan(c.p_holm) else ("significant" if c.p_holm < ALPHA else "not significant")
        rows.append(
            [
                c.label,
                ", ".join(cfg.run_key(r) for r in c.common),
                str(t.n),
                f"{100 * t.mean_difference:+.2f}",
                f"{100 * t.median_difference:+.2f}",
                _p(t.p_value),
                _p(c.p_holm),
                verdict,
            ]
        )
    head = ["Compared with", "Runs", "Images", "Mean Δ", "Median Δ", "p", "p (Holm)", "Verdict"]
    return lines + _table(rows, head, "llrrrrrl") + [""]


_CALIBRATION_KEYS = ("temperature", "ece_t1", "ece_fitted")


def _calibration_section(scored: dict[str, list[RunResults]]) -> list[str]:
    """Temperature and pixel ECE at T = 1 and at the fitted T per model, from the runs' ``calibration`` blocks."""
    kept = {label: [r.meta["calibration"] for r in rs if r.meta.get("calibration")] for label, rs in scored.items()}
    if not any(kept.values()):
        if not scored:
            return []
        return ["## Calibration", "", "Not recorded for these runs (exported before the benchmark kept it).", ""]
    bins = sorted({str(c["bins"]) for cs in kept.values() for c in cs})
    lines = [
        "## Calibration",
        "",
        f"Pixel-level expected calibration error of the foreground probability ({' or '.join(bins)} equal-width "
        "bins over [0, 1]; global reduction: every pixel of every test image counted once, at the working size) at "
        "T = 1 and at the temperature fitted on validation ids at the end of training; mean ± sample std over the "
        "runs that kept it, n shown. Masks do not depend on T.",
        "",
    ]
    rows = []
    for label, cs in kept.items():
        if not cs:
            continue
        # None where a record had no fitted temperature: left out, never shown as T = 1.
        temps, t1, fitted = ([float(c[k]) for c in cs if c.get(k) is not None] for k in _CALIBRATION_KEYS)
        rows.append(
            [
                label,
                str(len(cs)),
                _mean_std(temps),
                _mean_std([100 * v for v in t1]),
                _mean_std([100 * v for v in fitted]),
            ]
        )
    head = ["Model", "n", "Temperature", "ECE global, T = 1 (%)", "ECE global, fitted T (%)"]
    lines += _table(rows, head)
    without = [
        f"{label} ({len(scored[label]) - len(cs)} of {len(scored[label])} runs)" if cs else label
        for label, cs in kept.items()
        if len(cs) < len(scored[label])
    ]
    if without:
        lines += ["", f"Not recorded (runs exported before the benchmark kept it): {_names(without)}."]
    return lines + [""]


def _size_speed_section(cfg: BenchmarkConfig, complexity: dict[str, dict[str, Any]]) -> list[str]:
    """Parameters, MACs and CPU latency of each model, and the machines the latency was measured on."""
    lines = ["## Size and speed", ""]
    rows = []
    for m in cfg.models:
        c = complexity.get(m.name)
        if c is None:
            rows.append([m.name, "—", "—", "—", "—", "not measured yet"])
            continue
        rows.append(
            [
                m.name,
                str(c["model"]),
                f"{c['params'] / 1e6:.3f}",
                f"{c['gmacs']:.3f}",
                f"{c['latency_ms']:.1f}",
                str(c["latency_setting"]),
            ]
        )
    lines += _table(rows, ["Model", "Architecture", "Params (M)", "GMACs", "CPU latency (ms)", "Setting"], "llrrrl")
    machines = sorted({str(c["machine"]) for c in complexity.values()})
    if machines:
        lines += ["", f"Latency measured on: {'; '.join(machines)}."]
    return lines + [""]


def _training_section(scored: dict[str, list[RunResults]]) -> list[str]:
    """Each finished run's epochs, best epoch, precision, threads, minutes, machine and convergence."""
    rows = []
    for label, rs in scored.items():
        for r in rs:
            rows.append(
                [
                    label,
                    r.key,
                    str(r.meta.get("epochs")),
                    str(r.meta.get("best_epoch")),
                    str(r.meta.get("precision")),
                    str(r.meta.get("threads")),
                    f"{float(r.meta.get('train_minutes') or 0.0):.1f}",
                    str(r.meta.get("machine")),
                    _yes_no(_converged(r.meta)),
                ]
            )
    if not rows:
        return []
    head = ["Model", "Run", "Epochs", "Best epoch", "Precision", "Threads", "Minutes", "Ran on", "Converged"]
    lines = ["## Training", ""] + _table(rows, head, "llrrlrrll")
    lines += ["", "Converged: the best validation epoch comes before the last fifth of the run's epochs."]
    return lines + [""]


def _cross_sections(cfg: BenchmarkConfig, scored: dict[str, list[RunResults]]) -> list[str]:
    """One section per cross-dataset evaluation (``cross:``), both reductions."""
    lines: list[str] = []
    for c in cfg.cross:
        cross = {label: [r for r in rs if c.name in r.cross] for label, rs in scored.items()}
        cross = {label: rs for label, rs in cross.items() if rs}
        if not cross:
            continue
        lines += [
            f"## Cross-dataset: trained on {cfg.name}, evaluated on {c.name} (`{Path(c.root).name}`, all labelled "
            "cases)",
            "",
        ]
        for reduction in ("per_image", "global"):
            lines += [f"{'Per-image mean' if reduction == 'per_image' else 'Global'}:", ""]
            table = {label: [r.cross[c.name][0]["results"] for r in rs] for label, rs in cross.items()}
            lines += _metric_table(table, reduction) + [""]
    return lines


def write_report(cfg: BenchmarkConfig, failures: Sequence[str] = ()) -> Path:
    """Writes ``report.md``, ``results.csv`` and the figures into ``results_dir`` from its files; returns the
    report's path."""
    out = Path(cfg.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = collect_runs(cfg)
    complexity = read_complexity(out)
    lines = _header(cfg, failures)
    scored = {label: rs for label, rs in runs.items() if rs}
    best = None
    if scored:
        means = {label: _mean_of(rs, "per_image", "dice") for label, rs in scored.items()}
        best = max(means, key=lambda k: means[k])
    comparisons = _compare(runs, best) if best else []
    done_runs = {label: {r.run for r in rs} for label, rs in runs.items()}
    missing = [
        (m.name, [r for r in range(cfg.num_runs) if r not in done_runs[m.name]])
        for m in cfg.models
        if len(done_runs[m.name]) < cfg.num_runs
    ]
    lines += ["## What the table says", ""] + _what_the_table_says(cfg, runs, best, comparisons, missing) + [""]
    lines += _runs_section(cfg, runs, done_runs) + [""]
    for reduction in ("per_image", "global"):
        table = _metric_table({label: [r.results for r in rs] for label, rs in runs.items()}, reduction)
        lines += [f"## {_REDUCTION_TITLES[reduction]}", ""] + table + [""]
    case_dice = {label: _per_case(rs, "dice") for label, rs in scored.items()}
    if scored:
        lines += _interval_section(cfg, scored, case_dice)
    lines += _subgroup_section(cfg, scored, case_dice)
    if comparisons:
        lines += _paired_section(cfg, best, comparisons)
    lines += _calibration_section(scored)
    lines += _size_speed_section(cfg, complexity)
    lines += _training_section(scored)
    lines += _precision_section(cfg)
    if cfg.audit.test_curve:
        lines += audit_section(scored, cfg.report.bootstrap, cfg.run_key, cfg.audit.split_note)
    lines += _cross_sections(cfg, scored)
    figures = draw_figures(
        out,
        scored,
        {k: list(v.values()) for k, v in case_dice.items()},
        _split_of_run0(cfg),
        cfg.report.feature_model,
        inputs_dir=Path(cfg.out_dir) / "cases",
    )
    if figures:
        lines += ["## Figures", ""] + figures
    write_results_csv(scored, complexity, out / "results.csv")
    while lines and lines[-1] == "":
        lines.pop()
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
