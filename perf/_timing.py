"""The timing loop every perf script uses: warm-up calls, then timed repeats; side-by-side settings in interleaved
rounds, so that a machine that slows down or speeds up mid-run (another job, turbo, thermal) affects each alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Timing", "interleaved", "time_calls"]


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of the timed calls of one setting, in call order."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def p90(self) -> float:
        """The 90th percentile (nearest rank below)."""
        ordered = sorted(self.times)
        return ordered[int(0.9 * (len(ordered) - 1))]

    @property
    def best(self) -> float:
        return min(self.times)


def time_calls(
    fn: Callable[..., Any], repeats: int, *, warmup: int = 1, setup: Callable[[], Any] | None = None
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Args:
        fn: the work; called with no argument, or with what ``setup`` returns.
        repeats: timed calls (at least 1).
        warmup: untimed calls first (allocator, caches, lazy initialisation, autotuning).
        setup: untimed preparation before each call (e.g. fresh autograd leaves); its result is passed to ``fn``.
    """
    return interleaved({"": fn}, repeats, warmup=warmup, setup=setup)[""]


def interleaved(
    fns: Mapping[str, Callable[..., Any]],
    repeats: int,
    *,
    warmup: int = 1,
    setup: Callable[[], Any] | None = None,
) -> dict[str, Timing]:
    """Time several settings side by side: ``warmup`` untimed rounds, then ``repeats`` rounds each calling every
    setting once, in the given order.

    Returns:
        A :class:`Timing` per name of ``fns``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            args = () if setup is None else (setup(),)
            start = time.perf_counter()
            fn(*args)
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return {name: Timing(tuple(t)) for name, t in times.items()}
