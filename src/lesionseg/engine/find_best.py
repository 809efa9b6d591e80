"""Choose what to ship from cross-validation folders, as nnU-Net's ``find_best_configuration`` does.

Candidates: each folder's single model (fold 0), each folder's fold ensemble, and ensembles mixing folders (the
per-case mean of their probabilities), each with and without flip TTA. All are scored on the out-of-fold (OOF)
predictions of ``fold_<i>/oof.npz`` at the working size: threshold 0.5, then the post-processing
:func:`~lesionseg.inference.postprocess.select_postprocessing` chooses on the same OOF masks. On OOF each case has one
prediction (from the fold model that did not see it), so a single model and its fold ensemble share the pooled OOF
estimate (a single fold model's performance, which its ensemble is expected to match or beat). nnU-Net scores a
configuration by it and predicts with the ensemble of its folds: a tie goes to the candidate with more networks,
then to the faster one. The ensemble's own gain shows on OOF only between configurations trained twice on the same
folds (two seeds): the mixed ensemble of the two folders averages two networks per case, neither of which saw it.

Latency is a warm end-to-end :meth:`~lesionseg.inference.predictor.Predictor.predict` of a 768x576 image on the CPU,
measured for the single models and for a folder's fold ensemble where ``<cv_dir>/ensemble.json`` exists; other
ensembles' are estimated as the shared pre/post-processing plus the members' network time times the passes.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..inference.postprocess import apply_postprocessing, select_postprocessing
from ..inference.predictor import Predictor
from ..metrics.confusion import get_stats
from ..metrics.scores import dice
from .crossval import fold_dirs

__all__ = ["Candidate", "Latency", "find_best", "load_oof", "measure_latency", "score_oof"]

#: The image a latency is measured on: (H, W) of a PH2 dermoscopy image.
LATENCY_IMAGE = (576, 768)


@dataclass
class Latency:
    """Milliseconds of one folder's fold-0 model on the CPU: end to end (plain, flip TTA) and one network pass; and
    of the folder's fold ensemble (``<cv_dir>/ensemble.json``, from ``lesionseg ensemble create``) where there is one,
    end to end, plain and flip TTA (else estimated)."""

    plain_ms: float
    flip_ms: float
    network_ms: float
    ensemble_plain_ms: float | None = None
    ensemble_flip_ms: float | None = None
    backend: str = "torch"


@dataclass
class Candidate:
    name: str
    kind: str
    members: list[str]
    flip: bool
    dice_per_image: float
    dice_global: float
    postprocess: list[str]
    latency_ms: float | None = None
    latency_estimated: bool = False


def load_oof(cv_dir: str | Path) -> dict[str, Any]:
    """A folder's pooled OOF predictions: ``ids``, ``probs``, ``probs_flip`` (float32) and ``truths``, sorted by id,
    and ``folds`` (how many folds gave them).

    Raises:
        FileNotFoundError: no fold has an ``oof.npz`` (run ``lesionseg cv summarize`` first).
    """
    parts = [np.load(d / "oof.npz") for d in fold_dirs(cv_dir) if (d / "oof.npz").is_file()]
    if not parts:
        raise FileNotFoundError(f"{cv_dir}: no fold_<i>/oof.npz; write them with: lesionseg cv summarize {cv_dir}")
    ids = np.concatenate([p["ids"] for p in parts])
    order = np.argsort(ids)
    out = {key: np.concatenate([p[key] for p in parts])[order] for key in ("probs", "probs_flip", "truths")}
    out["probs"] = out["probs"].astype(np.float32)
    out["probs_flip"] = out["probs_flip"].astype(np.float32)
    return {"ids": ids[order], "folds": len(parts), **out}


def _dice(masks: np.ndarray, truths: np.ndarray, reduction: str) -> float:
    return float(dice(*get_stats(torch.from_numpy(masks), torch.from_numpy(truths)).as_tuple(), reduction))


def score_oof(probs: np.ndarray, truths: np.ndarray, threshold: float = 0.5) -> tuple[float, float, list[str]]:
    """OOF Dice per image and global of probabilities (N, H, W) cut at ``threshold`` and post-processed with the
    steps chosen on them (per-image Dice); returns ``(per_image, global, steps)``."""
    masks = (probs > threshold).astype(np.uint8)
    truths = truths.astype(np.uint8)
    choice = select_postprocessing(list(masks), list(truths), reduction="per_image")
    if choice.steps:
        masks = np.stack([apply_postprocessing(m, choice.steps) for m in masks])
    return _dice(masks, truths, "per_image"), _dice(masks, truths, "global"), list(choice.steps)


def _interleaved_ms(calls: Sequence[Callable[[], object]], repeats: int = 7, warmup: int = 2) -> list[float]:
    """Median milliseconds of each call, the calls taken in turn each round so that a machine's load drifting over
    the measurement touches them alike."""
    for _ in range(warmup):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for i, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[i].append(1000 * (time.perf_counter() - start))
    return [statistics.median(t) for t in times]


def measure_latency(cv_dir: str | Path, repeats: int = 7) -> Latency:
    """Warm CPU milliseconds of a folder's fold-0 best model on a 768x576 image: :meth:`Predictor.predict` plain and
    with flip TTA, and one network pass at the working size; the same end to end for the folder's fold ensemble
    (``<cv_dir>/ensemble.json``) where it exists. Medians, interleaved; onnxruntime where installed (what `lesionseg
    predict` runs by default, the graphs exported once into the user cache), else torch."""
    import importlib.util

    backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") is not None else "torch"
    stems = [fold_dirs(cv_dir)[0] / "best"]
    ensemble = Path(cv_dir) / "ensemble.json"
    if ensemble.is_file():
        stems.append(ensemble)
    predictors = [
        Predictor.from_checkpoint(stem, backend=backend, device="cpu", tta=tta)
        for stem in stems
        for tta in (False, True)
    ]
    plain = predictors[0]
    image = np.random.default_rng(0).integers(0, 256, (*LATENCY_IMAGE, plain.in_channels), dtype=np.uint8)
    x = plain._to_batch([image])
    calls = [lambda p=p: p.predict([image]) for p in predictors] + [lambda: plain._run(x)]
    ms = _interleaved_ms(calls, repeats)
    extra = {"ensemble_plain_ms": ms[2], "ensemble_flip_ms": ms[3]} if len(stems) > 1 else {}
    return Latency(plain_ms=ms[0], flip_ms=ms[1], network_ms=ms[-1], backend=backend, **extra)


def _ensemble_ms(members: Sequence[tuple[Latency, int]], flip: bool) -> float:
    """Shared pre/post-processing (the slowest member's) + every member model's network time x passes."""
    passes = 3 if flip else 1
    shared = max((m.flip_ms if flip else m.plain_ms) - passes * m.network_ms for m, _ in members)
    return max(0.0, shared) + sum(n * passes * m.network_ms for m, n in members)


def _resized(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if probs.shape[1:] == size:
        return probs
    return np.stack([cv2.resize(p, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for p in probs])


def find_best(
    cv_dirs: Sequence[str | Path],
    budget_ms: float | None = None,
    out: str | Path | None = None,
    measure: bool = True,
    latencies: dict[str, Latency] | None = None,
) -> dict[str, Any]:
    """Score every candidate on OOF, attach latencies, and choose the best OOF per-image Dice within the budget (ties
    go to more networks, then to the faster one); writes ``find_best.json`` and ``find_best.md`` into ``out`` when
    given.

    Args:
        latencies: measured latencies by folder (tests); else measured when ``measure``.
    """
    names = [str(d) for d in cv_dirs]
    if len(set(names)) != len(names):
        raise ValueError("find-best: a CV folder is given twice")
    oofs = {name: load_oof(name) for name in names}
    # Folders with unfinished folds cover fewer ids: every candidate is scored on the ids all folders cover.
    common = set.intersection(*(set(o["ids"].tolist()) for o in oofs.values()))
    if not common:
        raise ValueError(f"find-best: the folders {names} have no out-of-fold id in common")
    left_out = sorted(set.union(*(set(o["ids"].tolist()) for o in oofs.values())) - common)
    for o in oofs.values():
        keep = np.isin(o["ids"], sorted(common))
        o.update({key: o[key][keep] for key in ("ids", "probs", "probs_flip", "truths")})
    first = oofs[names[0]]
    lat = dict(latencies or {})
    if measure:
        for name in names:
            lat.setdefault(name, measure_latency(name))
    truths = first["truths"]
    size = truths.shape[1:]
    candidates: list[Candidate] = []
    groups = [(n,) for n in names] + [
        combo for r in range(2, len(names) + 1) for combo in itertools.combinations(names, r)
    ]
    for members in groups:
        for flip in (False, True):
            key = "probs_flip" if flip else "probs"
            probs = np.mean([_resized(oofs[m][key], size) for m in members], axis=0)
            per_image, global_, steps = score_oof(probs, truths)
            tag = " + flip" if flip else ""
            if len(members) == 1:
                m = members[0]
                ms = (lat[m].flip_ms if flip else lat[m].plain_ms) if m in lat else None
                candidates.append(
                    Candidate(f"{Path(m).name} fold 0{tag}", "single", [m], flip, per_image, global_, steps, ms)
                )
                ms = _ensemble_ms([(lat[m], oofs[m]["folds"])], flip) if m in lat else None
                measured = m in lat and lat[m].ensemble_plain_ms is not None
                if measured:
                    ms = lat[m].ensemble_flip_ms if flip else lat[m].ensemble_plain_ms
                candidates.append(
                    Candidate(
                        f"{Path(m).name} {oofs[m]['folds']}-fold ensemble{tag}",
                        "fold_ensemble",
                        [m],
                        flip,
                        per_image,
                        global_,
                        steps,
                        ms,
                        not measured,
                    )
                )
            else:
                known = all(m in lat for m in members)
                ms = _ensemble_ms([(lat[m], oofs[m]["folds"]) for m in members], flip) if known else None
                label = " + ".join(Path(m).name for m in members)
                candidates.append(
                    Candidate(
                        f"mix({label}){tag}", "mixed_ensemble", list(members), flip, per_image, global_, steps, ms, True
                    )
                )
    allowed = [c for c in candidates if budget_ms is None or (c.latency_ms is not None and c.latency_ms <= budget_ms)]
    choice = (
        min(
            allowed,
            key=lambda c: (
                -round(c.dice_per_image, 6),
                -(1 if c.kind == "single" else sum(oofs[m]["folds"] for m in c.members)),
                c.latency_ms if c.latency_ms is not None else 0.0,
            ),
        )
        if allowed
        else None
    )
    result = {
        "cv_dirs": names,
        "budget_ms": budget_ms,
        "images": len(truths),
        "ids_left_out": left_out,
        "latency_image": f"{LATENCY_IMAGE[1]}x{LATENCY_IMAGE[0]}, CPU, warm, median",
        "latencies": {k: asdict(v) for k, v in lat.items()},
        "candidates": [asdict(c) for c in candidates],
        "choice": asdict(choice) if choice else None,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "find_best.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "find_best.md").write_text(_table(result, candidates, choice))
    return result


def _table(result: dict[str, Any], candidates: list[Candidate], choice: Candidate | None) -> str:
    budget = "none" if result["budget_ms"] is None else f"{result['budget_ms']:g} ms"
    lines = [
        "# Best configuration (out-of-fold)",
        "",
        f"{result['images']} OOF images at the working size, threshold 0.5 + post-processing chosen on OOF; "
        f"latency {result['latency_image']}; budget {budget}."
        + (
            f" {len(result['ids_left_out'])} ids not covered by every folder left out."
            if result["ids_left_out"]
            else ""
        ),
        "",
        "| candidate | OOF Dice per-image | OOF Dice global | post-processing | latency ms |",
        "|---|---|---|---|---|",
    ]
    for c in sorted(candidates, key=lambda c: -c.dice_per_image):
        ms = "-" if c.latency_ms is None else f"{c.latency_ms:.1f}" + (" (estimated)" if c.latency_estimated else "")
        mark = " **chosen**" if choice is not None and c.name == choice.name else ""
        lines.append(
            f"| {c.name}{mark} | {100 * c.dice_per_image:.2f} | {100 * c.dice_global:.2f} | "
            f"{' + '.join(c.postprocess) or 'none'} | {ms} |"
        )
    lines.append("")
    if choice is None:
        lines.append("No candidate fits the budget.")
    else:
        lines.append(
            f"Chosen: **{choice.name}** (OOF Dice per-image {100 * choice.dice_per_image:.2f}). A fold ensemble shares "
            "its single model's OOF estimate (one OOF prediction per case, which the ensemble is expected to match or "
            "beat); ties go to more networks, as nnU-Net predicts with its folds' ensemble."
        )
    return "\n".join(lines) + "\n"
