"""The fp32/bf16 probe: its decision rule, its records, and that it probes once per machine and model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lesionseg.benchmark import precision as P


def _ok(steady: float, dice: float, wall: float = 60.0) -> dict:
    return {
        "status": "ok",
        "steady_epoch_s": steady,
        "first_epoch_s": steady + 3,
        "best_val_dice_per_image": dice,
        "wall_s": wall,
    }


@pytest.mark.parametrize(
    ("fp32", "bf16", "choice", "why"),
    [
        (_ok(10.0, 0.80), _ok(5.0, 0.80), "bf16", "2.00x faster"),
        (_ok(10.0, 0.80), _ok(5.0, 0.79), "bf16", "2.00x faster"),  # within the tolerance
        (_ok(10.0, 0.80), _ok(5.0, 0.77), "fp32", "val Dice"),  # faster but worse
        (_ok(10.0, 0.80), _ok(9.5, 0.80), "fp32", "under the 1.1x"),  # not fast enough
        (_ok(10.0, 0.80), _ok(12.0, 0.81), "fp32", "under the 1.1x"),  # slower
        (_ok(10.0, 0.80), {"status": "failed", "detail": "non-finite loss nan"}, "fp32", "non-finite"),
        (_ok(10.0, 0.80), {"status": "timeout", "detail": "after 150 s"}, "fp32", "stopped after 150 s"),
        ({"status": "failed"}, _ok(5.0, 0.80), "fp32", "fp32 trial did not finish"),
    ],
)
def test_decide(fp32: dict, bf16: dict, choice: str, why: str) -> None:
    got, reason = P.decide(fp32, bf16)
    assert got == choice and why in reason


def test_resolve_probes_once_and_records_the_figures(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def trial(config, overrides, precision, epochs, device, timeout_s):
        calls.append((precision, list(overrides), epochs, timeout_s))
        return _ok(10.0, 0.8, wall=40.0) if precision == "fp32" else _ok(4.0, 0.8)

    monkeypatch.setattr(P, "_trial", trial)
    monkeypatch.setattr(P, "native_bf16", lambda device="cpu": True)
    overrides = ["data.root=x", "train.epochs=50", "train.seed=2", "train.time_budget_min=null", "train.threads=1"]
    assert P.resolve_precision(tmp_path, "m", "cfg.yaml", overrides, epochs=3) == "bf16"
    # The real run's length and seed are not the trial's; the bf16 trial is stopped at twice fp32's time.
    assert [c[0] for c in calls] == ["fp32", "bf16"]
    assert calls[0][1] == ["data.root=x", "train.threads=1"] and calls[0][2] == 3
    assert calls[1][3] == pytest.approx(2 * 40.0 + 30.0)
    record = json.loads(P.record_path(tmp_path, "m").read_text())
    assert record["precision"] == "bf16" and record["fp32"]["steady_epoch_s"] == 10.0
    assert record["criteria"] == {"min_speedup": P.MIN_SPEEDUP, "dice_tolerance": P.DICE_TOLERANCE, "epochs": 3}
    assert record["data"] == "x"  # what the trials trained on: the asking benchmark's data
    # Read back, not probed again.
    assert P.resolve_precision(tmp_path, "m", "cfg.yaml", overrides) == "bf16" and len(calls) == 2


def test_resolve_without_native_bf16_runs_no_trial(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(P, "_trial", lambda *a, **k: pytest.fail("no trial expected"))
    monkeypatch.setattr(P, "native_bf16", lambda device="cpu": False)
    assert P.resolve_precision(tmp_path, "m", "cfg.yaml") == "fp32"
    assert "no native bf16" in json.loads(P.record_path(tmp_path, "m").read_text())["reason"]


def test_a_crashing_trial_is_a_failed_trial_not_a_crash(tmp_path: Path) -> None:
    # A config that cannot train makes the subprocess exit non-zero; the probe reports it and goes on.
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: no_such_model}\ndata: {root: /nonexistent}\n")
    result = P._trial(bad, [], "fp32", 1, "cpu", timeout_s=120)
    assert result["status"] == "failed" and result["returncode"] != 0 and result["detail"]


def test_machine_key_is_a_file_name() -> None:
    key = P.machine_key()
    assert key and "/" not in key and " " not in key and key.endswith(f"torch{P.torch.__version__.split('+')[0]}")
