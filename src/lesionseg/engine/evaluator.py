"""Evaluation: a model on a dataset at the working size, or at each image's native resolution."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.base import Case, SegmentationDataset, find_cases, load_case
from ..data.splits import Split, load_split
from ..inference.predictor import Predictor, autocast_context
from ..metrics import SegmentationMetrics

__all__ = ["evaluate_dataset", "evaluate_native", "select_cases"]


@torch.inference_mode()
def evaluate_dataset(
    model: nn.Module,
    dataset: SegmentationDataset,
    threshold: float = 0.5,
    precision: str = "fp32",
    batch_size: int = 16,
    include_hd95: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> SegmentationMetrics:
    """Scores at the dataset's working size (how the papers report): prediction and mask both resized."""
    model.eval()
    metrics = SegmentationMetrics(include_hd95=include_hd95)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    for x, y, ids in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(precision):
            logits = model(x).float()
        metrics.update((torch.sigmoid(logits) > threshold).to(torch.uint8), y.to(torch.uint8), ids=list(ids))
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
) -> tuple[list[Case], str]:
    """Cases of ``root`` to evaluate, and a description of the choice.

    With a split and ``subset="test"``: the split's test ids found under ``root`` plus every id the split does not
    list at all (cases unseen in training, e.g. another copy of the dataset); ids used for training or validation are
    left out. ``subset="train"``/``"val"``: exactly those ids. ``subset="all"`` or no split: every case.
    """
    cases = [c for c in find_cases(root, layout) if c.mask is not None]
    if split is None or subset == "all":
        return cases, f"all {len(cases)} cases of {root}"
    sp = split if isinstance(split, Split) else load_split(split)
    if subset == "test":
        seen = set(sp.train) | set(sp.val)
        chosen = [c for c in cases if c.id not in seen]
        n_test = sum(c.id in set(sp.test) for c in chosen)
        desc = f"{len(chosen)} cases of {root}: {n_test} split test ids + {len(chosen) - n_test} ids not in the split"
    else:
        wanted = set(sp.subset(subset))
        chosen = [c for c in cases if c.id in wanted]
        desc = f"{len(chosen)} {subset} ids of {root}"
    if not chosen:
        raise ValueError(f"{root}: no cases left to evaluate for subset {subset!r}")
    return chosen, desc
