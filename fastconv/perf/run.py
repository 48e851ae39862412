"""``fastconv bench``: measure the ceilings, run the suite, write the report folder.

Order of work: describe the machine; measure its ceilings (GEMM and copy,
on the GPU too when one is usable); for every case of the suite and every
runner (registered implementations, then peers) check the result once
against the float64 reference, then time it; run the edge-detection
dense-versus-convolution sweep; save everything as pytest-benchmark JSON
and render the report from that JSON (:mod:`fastconv.perf.report`).
"""
from __future__ import annotations

import json
import os
import sys
import time

from .. import dense
from . import edge, machine as machine_mod, report, runners as runners_mod
from .records import benchmark_record, extra_info, percentages as _percentages, run_document
from .suite import EDGE_SWEEP, cases
from .timing import FULL, QUICK, measure, stats

__all__ = ["run_bench", "machine_label"]


def _command_line() -> str:
    """The command as typed (``python -m fastconv.perf`` for the module), notes elided."""
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        argv[0] = "python -m fastconv.perf"
    elif argv:
        argv[0] = os.path.basename(argv[0])
    for i, a in enumerate(argv[:-1]):
        if a == "--note":
            argv[i + 1] = "..."
    return " ".join(argv)


def _best_ceilings(a: dict, b: dict) -> dict:
    """Per device, the higher of two measurements (a shared machine only ever slows them)."""
    out = {}
    for dev in set(a) | set(b):
        x, y = a.get(dev), b.get(dev)
        if x is None or y is None:
            out[dev] = x or y
            continue
        best = dict(x)
        for key in ("gemm_gflops", "copy_gbs"):
            best[key] = max(x[key], y[key])
        best["ridge_flops_per_byte"] = best["gemm_gflops"] / best["copy_gbs"]
        best["measured"] = [{k: x[k] for k in ("gemm_gflops", "copy_gbs")},
                            {k: y[k] for k in ("gemm_gflops", "copy_gbs")}]
        out[dev] = best
    return out


def _measure_ceilings(devices, quick) -> dict:
    ceilings = {"cpu": machine_mod.measure_cpu_ceilings(quick)} if "cpu" in devices else {}
    gpu = machine_mod.measure_gpu_ceilings(quick) if "cuda" in devices else None
    if gpu:
        ceilings["cuda"] = gpu
    return ceilings


def machine_label(desc: dict, device: str) -> str:
    if device == "cuda" and desc.get("gpu"):
        return f"{desc['gpu']} (GPU)"
    return f"{desc.get('cpu', 'cpu')} x{desc.get('threads') or desc.get('cores')}"


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stderr)


def run_bench(out_dir: str, quick: bool = True, suite: str | None = None,
              devices=("cpu", "cuda"), name_filter: str | None = None,
              runner_filter: str | None = None, peers: bool = True, edge_sweep: bool = True,
              dense_limit: int | None = None, progress: bool = True, note: str | None = None,
              log=print) -> dict:
    """Run a benchmark and write ``out_dir`` (report.md, results.json, machine.json, PNGs).

    Returns the run document (pytest-benchmark JSON with a ``fastconv`` section).
    """
    t_start = time.perf_counter()
    suite = suite or ("quick" if quick else "cpu")
    budget = QUICK if quick else FULL
    desc = machine_mod.describe()
    log(f"fastconv bench: suite {suite!r}; machine {desc['cpu']} ({desc['threads']} threads)"
        + (f", GPU {desc['gpu']}" if desc.get("gpu") else ", no GPU"))
    ceilings = _measure_ceilings(devices, quick)
    for dev, c in ceilings.items():
        log(f"  ceiling {dev}: GEMM {c['gemm_gflops']:.1f} GFLOP/s (n={c['gemm_n']}), "
            f"copy {c['copy_gbs']:.1f} GB/s")
    usable = tuple(d for d in devices if d in ceilings)
    no_gpu = (["GPU: no device usable by CuPy here; GPU backends and GPU peers not run"]
              if "cuda" in devices and "cuda" not in ceilings else [])

    todo = []
    for case in cases(suite, name_filter):
        for r in runners_mod.runners(case.op, usable, peers):
            if runner_filter and not any(f.strip() in r.label for f in runner_filter.split(",")):
                continue
            todo.append((case, r))
    sizes = EDGE_SWEEP["quick" if quick else "full"] if edge_sweep else ()
    n_cases = len({case.id for case, _r in todo})
    bar = _progress(len(todo) + len(sizes), progress)
    benchmarks, skipped, failed = [], list(no_gpu), []
    old_limit = dense.MEMORY_LIMIT
    if dense_limit is not None:
        dense.MEMORY_LIMIT = int(dense_limit)
    try:
        data_cache, auto_cache = {}, {}
        seen, t_case = [], time.perf_counter()
        for case, r in todo:
            if bar is None and (not seen or seen[-1] != case.id):
                if seen:
                    log(f"  [{len(seen)}/{n_cases}] {seen[-1]}: "
                        f"{time.perf_counter() - t_case:.0f} s")
                seen.append(case.id)
                t_case = time.perf_counter()
            if bar is not None:
                bar.set_postfix_str(f"{case.name[:28]} | {r.label[:26]}")
            data = data_cache.get(case.id)
            if data is None:
                data_cache.clear()
                data = data_cache[case.id] = runners_mod.case_data(case)
            key = (case.id, r.device)
            if key not in auto_cache:
                auto_cache[key] = runners_mod.auto_choice(case, data, r.device)
            try:
                fn, err = runners_mod.prepare(r, data)
            except runners_mod.Skip as exc:
                skipped.append(f"{case.id} | {r.label}: {exc}")
            except AssertionError as exc:
                failed.append(f"{case.id} | {r.label}: WRONG RESULT, not timed: {exc}")
            except Exception as exc:  # noqa: BLE001 - one runner must not end the run
                failed.append(f"{case.id} | {r.label}: {type(exc).__name__}: {exc}")
            else:
                st = stats(measure(fn, budget))
                label = machine_label(desc, r.device)
                info = extra_info(case, r, data.params, st["median"], err,
                                  ceilings.get(r.device), auto_cache[key], label)
                benchmarks.append(benchmark_record(f"{case.id} | {r.label}", case.group, st, info,
                                                   {"case": case.id, "impl": r.label}))
                del fn
            if bar is not None:
                bar.update(1)
        if bar is None and seen:
            log(f"  [{len(seen)}/{n_cases}] {seen[-1]}: {time.perf_counter() - t_case:.0f} s")
        data_cache.clear()
        dense.clear_cache()
        if sizes:
            recs, skips = edge.sweep(sizes, budget, None, bar,
                                     machine_label(desc, "cpu"), ceilings.get("cpu"))
            benchmarks += recs
            skipped += skips
        # measured again at the end: the higher of the two is the ceiling, and every
        # record's percentages are recomputed against it
        ceilings = _best_ceilings(ceilings, _measure_ceilings(usable, quick))
        for b in benchmarks:
            c = ceilings.get(b["extra_info"].get("device"))
            if c and "intensity" in b["extra_info"]:
                b["extra_info"].update(_percentages(b["extra_info"], c))
            elif c and "peak_gflops" in b["extra_info"]:
                b["extra_info"].update(peak_gflops=c["gemm_gflops"], peak_gbs=c["copy_gbs"])
    finally:
        dense.MEMORY_LIMIT = old_limit
        dense.clear_cache()
        if bar is not None:
            bar.close()
    section = {"suite": suite, "quick": quick, "ceilings": ceilings, "skipped": skipped,
               "failed": failed, "edge_counts": dense.edge_detection_counts(),
               "dense_memory_limit": int(dense_limit or old_limit),
               "elapsed_s": time.perf_counter() - t_start, "note": note,
               "runners": {f"{case.op} {r.label}": r.description
                           for case in cases(suite, name_filter)
                           for r in runners_mod.runners(case.op, usable, peers)},
               "command": _command_line()}
    doc = run_document(benchmarks, desc, section)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(out_dir, "machine.json"), "w", encoding="utf-8") as f:
        json.dump({"machine": desc, "ceilings": ceilings}, f, indent=1)
    report.write_report([doc], out_dir, sources=["results.json"])
    log(f"fastconv bench: {len(benchmarks)} measurements, {len(skipped)} skipped, "
        f"{len(failed)} failed, {time.perf_counter() - t_start:.0f} s; report in "
        f"{os.path.join(out_dir, 'report.md')}")
    return doc
