"""Timing one call repeatedly, and the statistics pytest-benchmark stores for it.

The caller warms up first (compilation and the first-touch page faults
stay outside the timing); the timed function synchronizes GPU work itself,
so wall-clock time covers the kernels.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

__all__ = ["Budget", "QUICK", "FULL", "measure", "stats", "gpu_sync"]


@dataclass(frozen=True)
class Budget:
    """How long to time one call: at least ``min_rounds`` and ``min_time`` seconds,
    at most ``max_rounds`` or ``max_time`` seconds (whichever ends first, after 1 round)."""
    min_time: float
    max_time: float
    min_rounds: int
    max_rounds: int


QUICK = Budget(min_time=0.15, max_time=0.8, min_rounds=3, max_rounds=30)
FULL = Budget(min_time=1.0, max_time=8.0, min_rounds=5, max_rounds=200)


def measure(fn, budget: Budget = QUICK) -> list[float]:
    """Seconds per call of ``fn()``, one entry per round."""
    data: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        data.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(data) >= budget.max_rounds:
            break
        if elapsed >= budget.min_time and len(data) >= budget.min_rounds:
            break
        if elapsed >= budget.max_time:
            break
    return data


def stats(data: list[float]) -> dict:
    """pytest-benchmark's ``stats`` record for the rounds in ``data`` (seconds)."""
    data = list(data)
    n = len(data)
    s = sorted(data)
    mean = statistics.fmean(s)
    sd = statistics.stdev(s) if n > 1 else 0.0
    if n > 1:
        q1, _med, q3 = statistics.quantiles(s, n=4, method="inclusive")
    else:
        q1 = q3 = s[0]
    iqr = q3 - q1
    lo = min((x for x in s if x >= q1 - 1.5 * iqr), default=s[0])
    hi = max((x for x in s if x <= q3 + 1.5 * iqr), default=s[-1])
    iqr_out = sum(1 for x in s if x < q1 - 1.5 * iqr or x > q3 + 1.5 * iqr)
    sd_out = sum(1 for x in s if abs(x - mean) > sd) if n > 1 else 0
    return {"min": s[0], "max": s[-1], "mean": mean, "stddev": sd, "rounds": n,
            "median": statistics.median(s), "iqr": iqr, "q1": q1, "q3": q3,
            "iqr_outliers": iqr_out, "stddev_outliers": sd_out,
            "outliers": f"{sd_out};{iqr_out}", "ld15iqr": lo, "hd15iqr": hi,
            "ops": 1.0 / mean if mean > 0 else 0.0, "total": sum(s), "data": data,
            "iterations": 1}


def gpu_sync():
    """Wait for all GPU work (CuPy's device, else Numba's); nothing without a GPU."""
    try:
        import cupy
        cupy.cuda.runtime.deviceSynchronize()
        return
    except Exception:  # noqa: BLE001 - no CuPy or no device
        pass
    try:
        from numba import cuda
        if cuda.is_available():
            cuda.synchronize()
    except Exception:  # noqa: BLE001
        pass
