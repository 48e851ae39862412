"""Benchmark records in pytest-benchmark's JSON format, with fastconv's ``extra_info``.

One record per (case, implementation): ``stats`` as pytest-benchmark stores
them (seconds), and in ``extra_info`` everything the report needs: the case,
the implementation and its role, FLOPs and minimum bytes (exact counts from
the ``*Params`` record), GFLOP/s, GB/s, the machine's measured ceilings and
the percentage of the roofline reached, the relative error of the checked
result and the algorithm ``"auto"`` picks.  ``bench/`` (through
pytest-benchmark) and ``fastconv bench`` write the same fields, so saved runs
of either merge into one report.
"""
from __future__ import annotations

import datetime as _dt
import json

from .suite import Case

__all__ = ["extra_info", "percentages", "benchmark_record", "run_document", "load",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1


def extra_info(case: Case, runner, params, median_s: float, rel_error: float,
               ceilings: dict | None, auto: str | None, machine: str) -> dict:
    """The report's fields for one measurement (FLOPs and bytes exact, rates measured)."""
    itemsize = 4 if params.dtype is None else params.dtype.itemsize
    flops = int(params.flops)
    nbytes = int(params.min_bytes(itemsize))
    gflops = flops / median_s / 1e9
    gbs = nbytes / median_s / 1e9
    info = {"fastconv": FORMAT_VERSION, "case": case.id, "layer": case.name, "op": case.op,
            "group": case.group, "suite": case.suite, "describe": case.describe(),
            "input_shape": list(case.input_shape),
            "weight_shape": list(case.weight_shape) if case.weight_shape else None,
            "kwargs": dict(case.kwargs),
            "impl": runner.label, "role": runner.role, "device": runner.device,
            "backend": runner.backend, "algorithm": runner.algorithm,
            "dtype": str(params.dtype or "float32"), "flops": flops, "bytes": nbytes,
            "intensity": flops / nbytes, "median_s": median_s, "gflops": gflops, "gbs": gbs,
            "rel_error": rel_error, "auto": auto, "machine": machine}
    if ceilings:
        info.update(percentages(info, ceilings))
    return info


def percentages(info: dict, ceilings: dict) -> dict:
    """Roofline fields of a record against measured ceilings (GEMM GFLOP/s, copy GB/s)."""
    peak_f, peak_b = ceilings["gemm_gflops"], ceilings["copy_gbs"]
    roof = min(peak_f, info["intensity"] * peak_b)
    return {"peak_gflops": peak_f, "peak_gbs": peak_b, "roof_gflops": roof,
            "pct_peak": 100.0 * info["gflops"] / roof,
            "bound": "compute" if info["intensity"] * peak_b >= peak_f else "memory",
            "pct_gemm": 100.0 * info["gflops"] / peak_f,
            "pct_copy": 100.0 * info["gbs"] / peak_b}


def benchmark_record(name: str, group: str, stats: dict, info: dict, params: dict) -> dict:
    """One entry of pytest-benchmark's ``benchmarks`` list."""
    return {"group": group, "name": name, "fullname": f"fastconv-bench::{name}",
            "params": params, "param": "-".join(str(v) for v in params.values()),
            "extra_info": info,
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 1,
                        "max_time": None, "min_time": None, "precision": None,
                        "confidence": None, "warmup": True},
            "stats": stats}


def run_document(benchmarks: list, machine: dict, fastconv_section: dict) -> dict:
    """A whole run as pytest-benchmark writes it (``--benchmark-json``), plus a
    ``fastconv`` section (ceilings, skipped runners, edge counts, machine)."""
    import platform
    return {"machine_info": {"node": platform.node(), "processor": platform.processor(),
                             "machine": platform.machine(),
                             "python_implementation": platform.python_implementation(),
                             "python_version": platform.python_version(),
                             "release": platform.release(), "system": platform.system(),
                             "cpu": {"brand_raw": machine.get("cpu"),
                                     "count": machine.get("cores")}},
            "commit_info": {"id": machine.get("commit") or "unversioned"},
            "benchmarks": benchmarks,
            "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "version": "5.3.1",
            "fastconv": dict(fastconv_section, machine=machine)}


def load(path) -> dict:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if "benchmarks" not in doc:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    return doc
