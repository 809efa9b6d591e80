"""Fit a shipped model's trust parts without retraining, measure them on its test ids, and update record and card.

Usage:
    python tools/refit_trust.py --tag skin --data-root ../shared/data/ph2 --other-root ../shared/data/kvasir_seg
    python tools/refit_trust.py --tag polyp --data-root ../shared/data/kvasir_seg --other-root ../shared/data/ph2

Steps, all with the project's own code: (1) fit the temperature, the quality estimator and the training images'
description on the split's training and validation ids only (``lesionseg.inference.trust_fit.fit_trust``, the same
call as the trainer's end-of-training hook); (2) measure them on the split's test ids
(``evaluate_trust``: ECE before/after, the quality estimate's Spearman and AUROC for Dice < 0.8, the share flagged
as unlike the training images) and the share of another dataset's images flagged; (3) write the record fields
(weights untouched; their checksum is checked before and after) and replace the card's "Trust" section.
``tools/ship_pretrained.py`` writes the same section for a newly shipped model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lesionseg.data import load_split, scan_cases
from lesionseg.inference import Predictor
from lesionseg.inference.trust_fit import case_features, evaluate_trust, fit_trust
from lesionseg.models.hub import WEIGHTS_DIR, ModelRecord, QualityCurve, load_record
from lesionseg.runtime import cpu_name

__all__ = ["trust_card_section"]

_START = "## Trust: calibration, quality estimate, unlike the training images"
_END = "<!-- end of trust section -->"
# The test figures measured again with --tta (the flip mode's curve, mask and cut).
_MODE_FIGURES = (
    "quality_spearman",
    "quality_auroc_dice_below_cut",
    "images_below_cut",
    "low_confidence_rate",
    "ece_before",
    "ece_after",
)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _auroc_cell(figures: dict[str, Any], dice_cut: float) -> str:
    if figures.get("quality_auroc_dice_below_cut") is not None:
        return _fmt(figures["quality_auroc_dice_below_cut"])
    n_poor = figures.get("images_below_cut", 0)
    return f"n/a ({n_poor} test images have Dice < {dice_cut:g}, so no AUROC exists)"


def _curve_line(name: str, curve: QualityCurve, passes: str) -> str:
    return (
        f"  - `{name}` ({passes}): the signal read at T = {curve.signal_temperature:g}, mapped to Dice by "
        f"`logit(dice) = {curve.a:.3f} + {curve.b:.3f} logit(signal)` (fitted on {curve.n_fit} validation "
        f"ids); `low_confidence` below {curve.low_confidence_below:.3f} (rule: {curve.rule})."
    )


def trust_card_section(record: ModelRecord, note: str = "") -> str:
    """The model card's trust section from a record's ``temperature``, ``quality``, ``image_description``,
    ``trust_validation`` and ``pretrained.trust_test`` fields, with an optional closing note (one paragraph)."""
    if record.quality is None or record.image_description is None or record.temperature is None:
        raise ValueError("the record has no fitted trust parts (run tools/refit_trust.py first)")
    shipped = record.pretrained
    tag = shipped.tag if shipped else "MODEL"
    val = record.trust_validation or {}
    test = (shipped.trust_test if shipped else None) or {}
    flip_test = test.get("tta", {})
    single, flip = record.quality.single, record.quality.flip
    dice_cut = (single or flip).dice_cut
    val_q = val.get("quality", {})
    d = record.image_description
    other = test.get("other_dataset", {})
    ece_after = _fmt(test.get("ece_after"), ".4f")
    ood = _fmt(100 * test["out_of_distribution_rate"], ".1f")

    def rate(figures: dict[str, Any]) -> str:
        value = figures.get("low_confidence_rate")
        return "n/a" if value is None else f"{100 * value:.1f} %"

    rows = []
    for label, val_fig, test_fig in (
        ("default (one pass)", val_q.get("single", {}), test),
        ("`--tta` (three passes)", val_q.get("flip", {}), flip_test),
    ):
        rows.append(
            f"| quality estimate, {label}: Spearman with true Dice | {_fmt(val_fig.get('quality_spearman'))} | "
            f"{_fmt(test_fig.get('quality_spearman'))} |"
        )
        rows.append(
            f"| quality estimate, {label}: AUROC for Dice < {dice_cut:g} | - | {_auroc_cell(test_fig, dice_cut)} |"
        )
        rows.append(f"| flagged low confidence, {label} | - | {rate(test_fig)} |")
    curves = [_curve_line("single", single, "the plain pass; the default")] if single else []
    curves += [_curve_line("flip", flip, "averaged over the plain and two flipped passes; `--tta`")] if flip else []
    row_text = "\n".join(rows)
    curve_text = "\n".join(curves)
    return f"""{_START}
Fitted on the split's training and validation ids only, without retraining (`python tools/refit_trust.py --tag
{tag} ...`; the trainer's end-of-training hook does the same), measured on the {test.get("images", "?")} test ids at
the working size ({test.get("command", "")}, and with `--tta`; {test.get("machine", "")}). See
`lesionseg.inference.trust` for the reasoning behind each part.

| | validation ids ({val.get("n_val", "?")}) | test ids ({test.get("images", "?")}) |
|---|---:|---:|
| pixel ECE (15 bins) at T = 1 | {_fmt(val.get("ece_before"), ".4f")} | {_fmt(test.get("ece_before"), ".4f")} |
| pixel ECE at T = {record.temperature:.3f} | {_fmt(val.get("ece_after"), ".4f")} | {ece_after} |
{row_text}
| flagged unlike the training images | {_fmt(100 * val.get("ood_flagged", 0), ".1f")} % | {ood} % |

- **Calibrated probabilities**: `predict`, `evaluate`, `serve` and the exported ONNX path divide the logits by
  T = {record.temperature:.3f} before the sigmoid (`--save-probabilities` writes them); masks do not change (the
  threshold {record.threshold} is kept at T = 1).
- **Quality estimate** (`predicted_dice`): the expected Dice of the mask under the model's probabilities, from the
  passes the prediction runs anyway (no extra network call), with one curve and one cut per mode, each fitted on
  the validation ids:
{curve_text}
- **Unlike the training images** (`out_of_distribution`): Mahalanobis distance of {len(d.features)} colour and
  texture statistics of the working-size image from the {d.n_train} training images (Ledoit-Wolf shrinkage
  {d.shrinkage:.3f}), flagged above {d.threshold:.2f} (99th percentile of a log-normal fitted to the
  {d.n_val} validation ids' distances). On {other.get("images", "?")} images of
  {other.get("name", "another dataset")} it flags {_fmt(100 * other["rate"] if "rate" in other else None, ".1f")} %.
  It sees changes of device, modality or colour (a grayscale photo); it cannot see a different kind of lesion
  photographed the same way.
{note.strip() + chr(10) if note.strip() else ""}{_END}
"""


def replace_trust_section(card: str, section: str) -> str:
    """The card with its trust section replaced, or inserted before "## Speed" (else appended)."""
    if _START in card and _END in card:
        head, rest = card.split(_START, 1)
        return head + section + "\n" + rest.split(_END, 1)[1].lstrip("\n")
    if "## Speed" in card:
        head, tail = card.split("## Speed", 1)
        return head + section + "\n## Speed" + tail
    return card.rstrip("\n") + "\n\n" + section


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", required=True)
    parser.add_argument("--data-root", required=True, help="the dataset the model was trained on")
    parser.add_argument("--other-root", help="another dataset's images, to measure the out-of-distribution flag")
    parser.add_argument("--note", default="", help="a closing paragraph for the card's trust section")
    parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="fit nothing: rewrite the record in the current format and the card's trust section from the figures "
        "the record already holds",
    )
    args = parser.parse_args()

    stem = WEIGHTS_DIR / args.tag
    weights = stem.with_suffix(".safetensors")
    sha_before = _sha(weights)
    record = load_record(stem)
    if record.dataset is None or record.dataset.split is None or record.pretrained is None:
        raise SystemExit(f"{stem}.json: not a shipped record with a split")
    card = stem.with_suffix(".md")
    if args.card_only:
        if record.pretrained.trust_test is None:
            raise SystemExit(f"{stem}.json: no trust figures yet; run without --card-only")
        stem.with_suffix(".json").write_text(record.to_json())
        card.write_text(replace_trust_section(card.read_text(), trust_card_section(record, args.note)))
        print(f"rewrote {stem}.json and the trust section of {card}")
        return
    split = load_split(record.dataset.split)
    cases = {c.id: c for c in scan_cases(args.data_root, record.dataset.layout).cases}
    missing = sorted(i for i in split.all_ids if i not in cases)
    if missing:
        raise SystemExit(f"{args.data_root}: {len(missing)} split ids missing, e.g. {missing[:3]}")

    base = Predictor.from_checkpoint(stem, temperature=1.0)
    fit = fit_trust(base, [cases[i] for i in split.train], [cases[i] for i in split.val], progress=True)
    record = fit.apply_to(record)
    evaluations = {}
    for tta in (False, True):
        predictor = Predictor.from_checkpoint(
            stem, temperature=fit.temperature, quality=fit.quality_for(tta), description=fit.description, tta=tta
        )
        evaluations[tta] = evaluate_trust(predictor, [cases[i] for i in split.test], progress=True)
    evaluation = evaluations[False]
    test: dict[str, Any] = evaluation.summary()
    test["command"] = f"`lesionseg evaluate --model {args.tag} --data-root {args.data_root}`"
    flip = evaluations[True].summary()
    test["tta"] = {k: flip[k] for k in _MODE_FIGURES} | {"command": test["command"][:-1] + " --tta`"}
    test["machine"] = f"{cpu_name()}"
    if args.other_root:
        other = scan_cases(args.other_root).cases
        scores = np.atleast_1d(fit.description.score(case_features(base, other, progress=True)))
        test["other_dataset"] = {
            "name": Path(args.other_root).name,
            "images": len(other),
            "rate": round(float(np.mean(scores > fit.description.threshold)), 4),
            "median_score": round(float(np.median(scores)), 3),
        }
    assert record.pretrained is not None
    record = replace(record, pretrained=replace(record.pretrained, trust_test=test))
    for line in evaluation.lines():
        print(line)
    print(json.dumps({"temperature": fit.temperature, "validation": fit.validation, "test": test}, indent=1))
    if args.dry_run:
        return
    stem.with_suffix(".json").write_text(record.to_json())
    card.write_text(replace_trust_section(card.read_text(), trust_card_section(record, args.note)))
    if _sha(weights) != sha_before:
        raise SystemExit(f"{weights} changed; it must not")
    print(f"wrote {stem}.json and {card} (weights unchanged, SHA-256 {sha_before})")


if __name__ == "__main__":
    main()
