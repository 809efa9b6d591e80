"""Evaluation: a model on a dataset at the working size, or at each image's native resolution."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.base import Case, DataProblem, SegmentationDataset, load_case, scan_cases
from ..data.cache import open_case_cache
from ..data.check import screen_cases
from ..data.splits import Split, load_split
from ..inference.postprocess import apply_postprocessing
from ..inference.predictor import Predictor, autocast_context
from ..inference.trust import ImageDescription, QualityEstimator
from ..inference.trust_fit import TrustEvaluation, evaluate_trust
from ..metrics import SegmentationMetrics, format_table
from ..models.hub import load_model, resolve_checkpoint
from .distributed import resolve_device

__all__ = [
    "Evaluation",
    "evaluate_checkpoint",
    "evaluate_dataset",
    "evaluate_native",
    "predict_dataset",
    "select_cases",
]


@torch.inference_mode()
def predict_dataset(
    model: nn.Module,
    dataset: SegmentationDataset,
    threshold: float = 0.5,
    precision: str = "fp32",
    batch_size: int = 16,
    channels_last: bool = False,
    progress: bool = False,
    device: str | torch.device | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[tuple[Tensor, Tensor, list[str]]]:
    """Yield ``(pred uint8 (B, 1, h, w), target uint8 (B, 1, h, w), ids)`` over a dataset at its working size.

    The model computes on ``device`` (None = where its parameters are); predictions come back on the CPU.
    ``forward``, when given, replaces the model call (a predictor's TTA forward, on the CPU batch).
    """
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    else:
        device = torch.device(device)
        model.to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=device.type == "cuda")
    for x, y, ids in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        if forward is not None:
            logits = forward(x).float()
        else:
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(precision, device):
                logits = model(x).float()
        yield (torch.sigmoid(logits) > threshold).to(torch.uint8).cpu(), y.to(torch.uint8), list(ids)


def evaluate_dataset(
    model: nn.Module,
    dataset: SegmentationDataset,
    threshold: float = 0.5,
    precision: str = "fp32",
    batch_size: int = 16,
    include_hd95: bool = False,
    channels_last: bool = False,
    progress: bool = False,
    postprocess: Sequence[str] = (),
    device: str | torch.device | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> SegmentationMetrics:
    """Scores at the dataset's working size (how the papers report): prediction and mask both resized.

    ``postprocess`` steps (e.g. the checkpoint record's) are applied to each predicted mask before scoring.
    ``forward`` maps a normalised batch to logits in place of ``model`` (e.g. a predictor's flip-averaged
    :meth:`~lesionseg.inference.Predictor.logits_at_working_size`); its precision and device are its own.
    """
    metrics = SegmentationMetrics(include_hd95=include_hd95)
    for pred, target, ids in predict_dataset(
        model, dataset, threshold, precision, batch_size, channels_last, progress, device, forward
    ):
        if postprocess:
            pred = torch.from_numpy(np.stack([apply_postprocessing(p[0].numpy(), postprocess) for p in pred]))[:, None]
        metrics.update(pred, target, ids=ids)
    return metrics


def evaluate_native(
    predictor: Predictor,
    cases: Sequence[Case],
    include_hd95: bool = True,
    progress: bool = False,
) -> SegmentationMetrics:
    """Scores at each image's own resolution: probabilities resized back, compared with the original mask."""
    metrics = SegmentationMetrics(include_hd95=include_hd95)
    for case in tqdm(cases, desc="evaluate (native)", disable=not progress, leave=False):
        image, mask = load_case(case, predictor.in_channels)
        if mask is None:
            raise ValueError(f"case {case.id} ({case.image}) has no mask to evaluate against")
        pred = predictor.predict_mask([image])[0]
        metrics.update(
            torch.from_numpy(pred)[None, None], torch.from_numpy(mask.astype(np.uint8))[None, None], ids=[case.id]
        )
    return metrics


def select_cases(
    root: str | Path,
    layout: str | None = None,
    split: str | Split | None = None,
    subset: str = "test",
    skip_bad: bool = False,
    channels: int = 3,
    progress: bool = False,
    skipped: list[DataProblem] | None = None,
    known_readable: Callable[[Case], bool] | None = None,
) -> tuple[list[Case], str]:
    """Cases of ``root`` to evaluate, and a description of the choice.

    With a split and ``subset="test"``: the split's test ids found under ``root`` plus every id the split does not
    list at all (cases unseen in training, e.g. another copy of the dataset); ids used for training or validation are
    left out. ``subset="train"``/``"val"``: exactly those ids. ``subset="all"`` or no split: every case.

    Every chosen case is read once first: cases with unusable files (unreadable, no mask, sizes differ, ...) raise
    :class:`~lesionseg.data.BadDataError` naming all of them, or with ``skip_bad`` are left out and their problems
    appended to ``skipped``. Cases for which ``known_readable`` returns True (a valid disk-cache entry) are not read.
    """
    scan = scan_cases(root, layout)
    ids = sorted({c.id for c in scan.cases if c.mask is not None} | {p.case_id for p in scan.problems if p.case_id})
    sp = None if split is None or subset == "all" else (split if isinstance(split, Split) else load_split(split))
    if sp is None:
        chosen = ids
    elif subset == "test":
        seen = set(sp.train) | set(sp.val)
        chosen = [i for i in ids if i not in seen]
    else:
        wanted = set(sp.subset(subset))
        chosen = [i for i in ids if i in wanted]
    cases, bad = screen_cases(
        scan, chosen, skip_bad=skip_bad, channels=channels, progress=progress, known_readable=known_readable
    )
    cases = [c for c in cases if c.mask is not None]
    if skipped is not None:
        skipped.extend(bad)
    note = f" ({len({p.case_id for p in bad})} skipped for unusable files)" if bad else ""
    if sp is None:
        desc = f"all {len(cases)} cases of {root}{note}"
    elif subset == "test":
        n_test = sum(c.id in set(sp.test) for c in cases)
        desc = (
            f"{len(cases)} cases of {root}: {n_test} split test ids + {len(cases) - n_test} ids not in the split{note}"
        )
    else:
        desc = f"{len(cases)} {subset} ids of {root}{note}"
    if not cases:
        raise ValueError(f"{root}: no cases left to evaluate for subset {subset!r}")
    return cases, desc


@dataclass
class Evaluation:
    """A checkpoint's scores on a set of cases, with what was evaluated and how.

    Attributes:
        metrics: the accumulated metric object (both reductions, per-image rows).
        model: registered model name of the checkpoint.
        checkpoint: the checkpoint evaluated.
        cases: description of the evaluated cases.
        resolution: ``"HxW"`` (the working size) or ``"native resolution"``.
        skipped: cases left out for unusable files.
        trust: calibration, quality-estimate and out-of-distribution figures on the same cases (working size);
            None when not asked for.
    """

    metrics: SegmentationMetrics
    model: str
    checkpoint: str
    cases: str
    resolution: str
    skipped: list[DataProblem] = field(default_factory=list)
    trust: TrustEvaluation | None = None

    @property
    def title(self) -> str:
        return f"{self.model} on {self.cases}, at {self.resolution}"

    def results(self) -> dict[str, dict[str, float]]:
        return self.metrics.aggregate()

    def save(self, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Writes ``metrics.json`` (with ``extra`` fields), ``report.md`` and ``per_image.csv`` into ``out``; with
        trust figures also ``trust.json``, ``trust_per_image.csv`` and ``reliability.png``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        results = self.results()
        payload = {
            "checkpoint": self.checkpoint,
            "model": self.model,
            "cases": self.cases,
            "resolution": self.resolution,
            "results": results,
            **(extra or {}),
        }
        rows = self.metrics.per_image_table()
        if rows:
            with open(out / "per_image.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        report = format_table(results, self.title) + "\n"
        if self.trust is not None:
            payload["trust"] = self.trust.summary()
            (out / "trust.json").write_text(json.dumps(self.trust.to_dict(), indent=1) + "\n")
            with open(out / "trust_per_image.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(self.trust.rows[0]))
                writer.writeheader()
                writer.writerows(self.trust.rows)
            from ..viz.reliability import plot_reliability_diagram

            t = self.trust
            plot_reliability_diagram(
                {
                    f"T = 1 (ECE {t.before.ece:.4f})": t.before,
                    f"T = {t.temperature:.3g} (ECE {t.after.ece:.4f})": t.after,
                },
                out / "reliability.png",
                title=f"{self.model}: {len(t.rows)} images, pixels at the working size",
            )
            report += "\n" + "\n".join(f"- {line}" for line in t.lines()) + "\n"
        (out / "report.md").write_text(report)
        if self.skipped:
            ids = sorted({p.case_id or str(p.path) for p in self.skipped})
            payload["skipped"] = ids
            skipped = {"cases": ids, "problems": [p.to_dict() for p in self.skipped]}
            (out / "skipped.json").write_text(json.dumps(skipped, indent=1) + "\n")
        else:
            (out / "skipped.json").unlink(missing_ok=True)
        # metrics.json last: its presence marks a complete evaluation.
        (out / "metrics.json").write_text(json.dumps(payload, indent=1) + "\n")
        return out


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    layout: str | None = None,
    split: str | Split | None = "checkpoint",
    subset: str = "test",
    native: bool = False,
    threshold: float | None = None,
    precision: str = "fp32",
    tta: bool = False,
    include_hd95: bool = True,
    progress: bool = False,
    postprocess: bool = True,
    device: str = "auto",
    skip_bad: bool | None = None,
    cache_dir: str | None = None,
    trust: bool = True,
) -> Evaluation:
    """Scores a checkpoint on a split's test ids or on any data root of a known layout.

    Args:
        checkpoint: checkpoint stem, ``.json``/``.safetensors`` file or run folder (its ``best``).
        data_root: data root; None = the one the checkpoint was trained on.
        layout: dataset layout; None = the checkpoint's (for its own root) or detected (for another root).
        split: split name, JSON path or :class:`Split`; ``"checkpoint"`` = the checkpoint's; None = no split.
        subset: which cases (see :func:`select_cases`).
        native: score at each image's own resolution instead of the working size.
        threshold: probability threshold; None = the checkpoint's.
        precision: ``fp32``, ``bf16`` or (CUDA) ``fp16`` inference.
        tta: flip test-time augmentation (horizontal and vertical flips averaged), at either resolution.
        include_hd95: also compute HD95 (pixels of the evaluated resolution).
        progress: show a progress bar.
        postprocess: apply the post-processing the checkpoint record chose on validation data (if any).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        skip_bad: leave out cases with unusable files (listed in :attr:`Evaluation.skipped`) instead of refusing;
            None = the checkpoint's training setting ``data.skip_bad``.
        cache_dir: on-disk cache of decoded, resized images (``auto``, a folder, or ``""`` for none; see
            ``data.cache_dir``); None = the checkpoint's training setting ``data.cache_dir``.
        trust: also measure calibration (ECE at T = 1 and at the record's temperature), the quality estimate and
            the out-of-distribution flag on the same cases, at the working size (:attr:`Evaluation.trust`).
    """
    torch_device = resolve_device(device)
    model, record = load_model(resolve_checkpoint(checkpoint))
    steps = tuple(record.get("postprocess", {}).get("steps", ())) if postprocess else ()
    ds = record.get("dataset", {})
    root = data_root or ds.get("root")
    if not root:
        raise ValueError(f"{checkpoint}: the checkpoint names no data root; give one")
    if layout is None and data_root is None:
        layout = ds.get("layout")
    if isinstance(split, str) and split == "checkpoint":
        split = ds.get("split")
    trained_data = record.get("config", {}).get("data", {})
    if skip_bad is None:
        skip_bad = bool(trained_data.get("skip_bad", False))
    disk_cache = open_case_cache(trained_data.get("cache_dir") if cache_dir is None else cache_dir, root)
    size = (int(record["image_size"][0]), int(record["image_size"][1]))
    channels = record.get("in_channels", 3)
    skipped: list[DataProblem] = []
    cases, desc = select_cases(
        root,
        layout,
        split,
        subset,
        skip_bad,
        channels,
        progress,
        skipped=skipped,
        known_readable=None if disk_cache is None else lambda c: disk_cache.contains(c, size, channels),
    )
    predictor = Predictor(
        model,
        size,
        record["mean"],
        record["std"],
        threshold or record["threshold"],
        record.get("in_channels", 3),
        precision=precision,
        tta=tta,
        postprocess=steps,
        device=torch_device,
        temperature=record.get("temperature", 1.0),
        quality=QualityEstimator.from_dict(record["quality"]) if record.get("quality") else None,
        description=ImageDescription.from_dict(record["image_description"])
        if record.get("image_description")
        else None,
    )
    if native:
        metrics = evaluate_native(predictor, cases, include_hd95=include_hd95, progress=progress)
        where = "native resolution"
    else:
        dataset = SegmentationDataset(
            cases,
            size=size,
            mean=record["mean"],
            std=record["std"],
            in_channels=record.get("in_channels", 3),
            cache=False,
            disk_cache=disk_cache,
        )
        metrics = evaluate_dataset(
            model,
            dataset,
            threshold=predictor.threshold,
            precision=precision,
            include_hd95=include_hd95,
            progress=progress,
            postprocess=steps,
            device=torch_device,
            forward=predictor.logits_at_working_size if tta else None,
        )
        where = f"{size[0]}x{size[1]}"
    if tta:
        where += ", flip TTA"
    if steps:
        where += f", post-processed: {' + '.join(steps)}"
    trust_eval = evaluate_trust(predictor, cases, progress=progress) if trust else None
    return Evaluation(metrics, record["model"], str(checkpoint), desc, where, skipped, trust_eval)
