"""perf/_timing.py, the timing loop of the perf scripts: warm-up calls are untimed, settings interleave."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PERF = Path(__file__).resolve().parents[1] / "perf"


def _timing():
    spec = importlib.util.spec_from_file_location("_timing", PERF / "_timing.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_timing", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_interleaved_rounds_and_untimed_warmup():
    timing = _timing()
    calls: list[str] = []
    result = timing.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, warmup=2)
    assert calls == ["a", "b"] * 5
    assert len(result["a"].times) == len(result["b"].times) == 3


def test_setup_is_untimed_and_passed_on():
    timing = _timing()
    seen: list[int] = []
    counter = iter(range(100))
    t = timing.time_calls(seen.append, 4, warmup=1, setup=lambda: next(counter))
    assert seen == [0, 1, 2, 3, 4] and len(t.times) == 4


def test_statistics():
    t = _timing().Timing((0.5, 0.1, 0.3, 0.2, 0.4))
    assert t.median == 0.3 and t.best == 0.1 and t.p90 == 0.4
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        _timing().time_calls(lambda: None, 0)
