"""The record of one GPU session: versions, test results, benchmark figures.

``tools/gpu_run.sh`` runs the steps on a GPU machine and leaves their raw
output in a work folder (pytest JUnit XML, sanitizer logs, ``fastconv
bench`` results.json folders, the measured copy bandwidth, a table of the
steps with their exit codes and times).  This module turns that folder into

* ``record.json``: ``date``, ``device``, ``versions``, ``commit``,
  ``kernels_tree`` (``git rev-parse <commit>:kernels``), test counts per
  file with every failure's name and message, sanitizer summaries, and the
  benchmark figures with the issue targets checked;
* ``summary.md``: the same, short, for people.

Actions (``python -m fastconv.perf.gpu_record ACTION ...``)::

    assemble --work DIR --out DIR      (default) write record.json + summary.md
    versions --out FILE                versions, device, commit and tree hashes
    smoke --out FILE                   each GPU implementation once, small, checked
    copybw --out FILE                  device-to-device copy bandwidth (CuPy, events)
    merge A.json B.json -o FILE.json   one record from a tests call and a bench call
    command [STEPS]                    the device command line, with this checkout's
                                       commit and kernels/ tree hash filled in

Only ``copybw`` needs a GPU; ``versions`` reports what it cannot see.
Nothing here imports CuPy, Numba or PyTorch at module level.
"""
from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET

__all__ = ["git_tree_hash", "collect_versions", "smoke", "parse_junit", "parse_sanitizer_log",
           "bench_figures", "assemble", "merge", "summary_markdown",
           "measure_copy_bandwidth", "TARGETS", "main"]

#: The issues' targets (fastconv time / cuDNN time, or % of copy bandwidth).
TARGETS = {
    "resnet50_geomean_vs_cudnn": {"numba-cuda": 2.0, "cupy": 1.25},
    "depthwise_vs_cudnn": {"cupy": 1.0},
    "pooling_pct_of_copy": (60.0, 80.0),
}
GPU_BACKENDS = ("numba-cuda", "cupy")
CUDNN = "torch-cuda"
RESNET_PREFIX = "ResNet-50"
RESNET_BATCH = 32
MAX_MESSAGE = 2000
MAX_FAILURES = 200


# --------------------------------------------------------------------------
# git-compatible tree hash (the device copy of the tree is no git checkout)
# --------------------------------------------------------------------------
#: Names never part of a commit here (.gitignore's patterns for build outputs).
IGNORED = ("__pycache__", "*.pyc", "*.pyo", "*.nbi", "*.nbc", "*.egg-info", ".pytest_cache",
           ".hypothesis", ".benchmarks")


def _ignored(name: str) -> bool:
    import fnmatch
    return any(fnmatch.fnmatch(name, pat) for pat in IGNORED)


def git_tree_hash(path: str) -> str:
    """The SHA-1 ``git write-tree`` would give the folder ``path`` (as ``git rev-parse
    HEAD:path`` prints it when the folder equals the commit's), build outputs left out.

    Blobs hash ``b"blob <size>\\0" + data``; a tree hashes ``b"tree <size>\\0"`` plus its
    entries ``b"<mode> <name>\\0" + raw sha`` sorted by name, a folder's name compared as
    if it ended in ``/``.  Empty folders are not part of a git tree.
    """
    entries = []
    for name in os.listdir(path):
        if _ignored(name):
            continue
        full = os.path.join(path, name)
        if os.path.islink(full):
            data = os.readlink(full).encode()
            entries.append((name, b"120000", _object_sha(b"blob", data)))
        elif os.path.isdir(full):
            sub = git_tree_hash(full)
            if sub is not None:
                entries.append((name + "/", b"40000", bytes.fromhex(sub)))
        elif os.path.isfile(full):
            with open(full, "rb") as f:
                data = f.read()
            mode = b"100755" if os.access(full, os.X_OK) else b"100644"
            entries.append((name, mode, _object_sha(b"blob", data)))
    if not entries:
        return None
    entries.sort(key=lambda e: e[0].encode())
    body = b"".join(mode + b" " + name.rstrip("/").encode() + b"\0" + sha
                    for name, mode, sha in entries)
    return _object_sha(b"tree", body).hex()


def _object_sha(kind: bytes, data: bytes) -> bytes:
    return hashlib.sha1(kind + b" " + str(len(data)).encode() + b"\0" + data).digest()


def _run(cmd, timeout=30, cwd=None) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def source_identity(root: str | None = None, env=None) -> dict:
    """Commit and kernels/ tree: passed in (``FASTCONV_COMMIT``, ``FASTCONV_KERNELS_TREE``,
    computed by the lead where the commit lives), from git if this is a checkout, and
    the tree hash of the files really present (``kernels_tree_worktree``)."""
    root = root or _root()
    env = os.environ if env is None else env
    out = {"commit": env.get("FASTCONV_COMMIT") or None,
           "kernels_tree": env.get("FASTCONV_KERNELS_TREE") or None,
           "source": "environment" if env.get("FASTCONV_COMMIT") else None}
    if os.path.exists(os.path.join(root, ".git")) and shutil.which("git"):
        head = _run(["git", "rev-parse", "HEAD"], cwd=root)
        tree = _run(["git", "rev-parse", "HEAD:kernels"], cwd=root)
        out["git_head"], out["git_kernels_tree"] = head, tree
        if out["commit"] is None and head:
            out["commit"], out["source"] = head, "git"
        if out["kernels_tree"] is None and tree:
            out["kernels_tree"] = tree
    for name in ("kernels", "fastconv"):
        d = os.path.join(root, name)
        out[f"{name}_tree_worktree"] = git_tree_hash(d) if os.path.isdir(d) else None
    if out["kernels_tree"] and out["kernels_tree_worktree"]:
        out["kernels_match"] = out["kernels_tree"] == out["kernels_tree_worktree"]
    else:
        out["kernels_match"] = None
    if out["commit"] is None:
        out["source"] = "unavailable (no FASTCONV_COMMIT and no git checkout)"
    return out


# --------------------------------------------------------------------------
# versions and the device
# --------------------------------------------------------------------------
def _dist_version(name: str) -> str | None:
    try:
        from importlib import metadata
        return metadata.version(name)
    except Exception:  # noqa: BLE001 - not installed
        return None


def collect_versions(root: str | None = None) -> dict:
    """Python, packages, CUDA driver/runtime, cuDNN, the GPU and the source identity.

    Every probe is guarded: what cannot be read is recorded as an error string.
    """
    v = {"python": platform.python_version(), "executable": sys.executable,
         "platform": platform.platform()}
    errors = {}
    for name in ("numpy", "numba", "numba-cuda", "cupy-cuda13x", "cupy", "torch", "pytest",
                 "pytest-benchmark", "pytest-xdist", "pytest-timeout", "llvmlite",
                 "nvidia-cuda-nvrtc", "nvidia-cuda-nvcc", "nvidia-nvjitlink",
                 "nvidia-cudnn-cu13", "cuda-bindings", "cuda-core", "cuda-python",
                 "cuda-toolkit"):
        ver = _dist_version(name)
        if ver:
            v[name] = ver
    device = {}
    try:
        import torch
        v["torch"] = torch.__version__
        v["torch_cuda"] = torch.version.cuda
        v["cudnn"] = torch.backends.cudnn.version()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            device.update(name=props.name, compute_capability=f"{props.major}.{props.minor}",
                          multiprocessors=props.multi_processor_count,
                          memory_gib=round(props.total_memory / 2**30, 1))
    except Exception as exc:  # noqa: BLE001
        errors["torch"] = f"{type(exc).__name__}: {exc}"
    try:
        import cupy
        v["cupy"] = cupy.__version__
        rt = cupy.cuda.runtime
        v["cuda_runtime"] = rt.runtimeGetVersion()
        v["cuda_driver_api"] = rt.driverGetVersion()
        try:
            v["nvrtc"] = ".".join(map(str, cupy.cuda.nvrtc.getVersion()))
        except Exception as exc:  # noqa: BLE001
            errors["nvrtc"] = f"{type(exc).__name__}: {exc}"
        if rt.getDeviceCount() > 0:
            props = rt.getDeviceProperties(0)
            name = props["name"]
            device.setdefault("name", name.decode() if isinstance(name, bytes) else str(name))
            device.setdefault("compute_capability", f"{props['major']}.{props['minor']}")
            device["l2_mib"] = round(props.get("l2CacheSize", 0) / 2**20, 1)
    except Exception as exc:  # noqa: BLE001
        errors["cupy"] = f"{type(exc).__name__}: {exc}"
    try:
        import numba
        v["numba"] = numba.__version__
        from numba import cuda
        ok = cuda.is_available()
        v["numba_cuda_available"] = bool(ok)
        if ok:
            dev = cuda.get_current_device()
            device.setdefault("compute_capability", ".".join(map(str, dev.compute_capability)))
            try:  # the NVVM numba-cuda compiles with: its PTX version must suit the driver
                from numba.cuda.cudadrv import nvvm
                v["numba_cuda_nvvm"] = ".".join(map(str, nvvm.NVVM().get_version()))
            except Exception as exc:  # noqa: BLE001
                errors["nvvm"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001
        errors["numba"] = f"{type(exc).__name__}: {exc}"
    if shutil.which("nvidia-smi"):
        v["nvidia_smi_L"] = _run(["nvidia-smi", "-L"])
        q = _run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap,memory.total,"
                  "clocks.max.sm,power.limit", "--format=csv,noheader"])
        if q:
            parts = [p.strip() for p in q.splitlines()[0].split(",")]
            keys = ("name", "driver", "compute_capability", "memory", "max_sm_clock",
                    "power_limit")
            smi = dict(zip(keys, parts))
            v["driver"] = smi.get("driver")
            device["nvidia_smi"] = smi
            device.setdefault("name", smi.get("name"))
    else:
        errors["nvidia-smi"] = "not on PATH"
    for tool, args in (("nvcc", ["--version"]), ("compute-sanitizer", ["--version"])):
        path = shutil.which(tool)
        text = _run([path] + args) if path else None
        v[tool] = text.splitlines()[-1] if text else None
    backends = None
    try:
        import fastconv
        backends = [{k: b[k] for k in ("name", "device", "available", "reason")}
                    for b in fastconv.backends()]
    except Exception as exc:  # noqa: BLE001
        errors["fastconv"] = f"{type(exc).__name__}: {exc}"
    return {"versions": v, "device": device or None, "errors": errors, "backends": backends,
            "source": source_identity(root),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


# --------------------------------------------------------------------------
# smoke: one small call per GPU implementation, before the long runs
# --------------------------------------------------------------------------
def smoke(seed: int = 0) -> dict:
    """Each GPU implementation once on a small conv2d / max_pool2d against the float64
    reference: ``ok`` with the first call's time (compilation included), else the error.

    A broken toolchain (say NVVM's PTX too new for the driver) shows here in seconds.
    """
    import time
    import numpy as np
    import fastconv as fc
    from fastconv import registry
    from fastconv.testing import assert_close, assert_exact
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 8, 17, 19)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    ref = fc.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, backend="numpy")
    ref_pool = fc.max_pool2d(x, 3, stride=2, padding=1, backend="numpy")
    out = {}
    for op in ("conv2d", "max_pool2d"):
        for impl in registry.implementations(op):
            be = registry.get_backend(impl.backend)
            if be.device != "cuda":
                continue
            why = be.unavailable_reason()
            if why is not None:
                out[impl.key] = f"unavailable: {why}"
                continue
            t0 = time.perf_counter()
            try:
                if op == "conv2d":
                    y = fc.conv2d(x, w, padding=1, backend=impl.backend,
                                  algorithm=impl.algorithm)
                    err = assert_close(y, ref, "float32", impl.key)
                else:
                    y = fc.max_pool2d(x, 3, stride=2, padding=1, backend=impl.backend)
                    assert_exact(y, ref_pool, impl.key)
                    err = 0.0
                out[impl.key] = f"ok ({time.perf_counter() - t0:.2f} s first call, " \
                                f"rel error {err:.1e})"
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                msg = str(exc).strip().splitlines()
                out[impl.key] = f"{type(exc).__name__}: {msg[0][:400] if msg else ''}"
    return out


# --------------------------------------------------------------------------
# copy bandwidth (GPU only)
# --------------------------------------------------------------------------
def measure_copy_bandwidth(nbytes: int = 1 << 30, warmup: int = 5, repeat: int = 50) -> dict:
    """Device-to-device copy GB/s (bytes read + written), median of ``repeat`` CUDA-event
    timed copies after ``warmup``: a CuPy elementwise copy kernel and cudaMemcpyAsync.

    Random data (never zeros), the copy checked once.  ``copy_gbs`` is the higher of
    the two medians: the bandwidth pooling kernels are measured against.
    """
    import cupy as cp
    n = nbytes // 4
    src = cp.random.standard_normal(n, dtype=cp.float32)
    dst = cp.full(n, -1.0, dtype=cp.float32)
    copy_kernel = cp.ElementwiseKernel("T x", "T y", "y = x", "fastconv_copy")
    stream = cp.cuda.get_current_stream()

    def memcpy():
        cp.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, src.nbytes,
                                    cp.cuda.runtime.memcpyDeviceToDevice, stream.ptr)

    out = {"bytes_per_copy": 2 * src.nbytes, "repeat": repeat, "warmup": warmup,
           "method": "CUDA events around each copy; median; read + write bytes counted"}
    for name, fn in (("copy_kernel", lambda: copy_kernel(src, dst)), ("memcpy_d2d", memcpy)):
        dst.fill(-1.0)
        for _ in range(warmup):
            fn()
        stream.synchronize()
        if not bool(cp.array_equal(dst, src)):
            raise AssertionError(f"{name}: copy is wrong")
        times = []
        for _ in range(repeat):
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record(stream)
            fn()
            stop.record(stream)
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
        med = statistics.median(times)
        out[name] = {"median_s": med, "min_s": min(times), "max_s": max(times),
                     "gbs": 2 * src.nbytes / med / 1e9,
                     "gbs_best": 2 * src.nbytes / min(times) / 1e9}
    out["copy_gbs"] = max(out["copy_kernel"]["gbs"], out["memcpy_d2d"]["gbs"])
    return out


# --------------------------------------------------------------------------
# test results
# --------------------------------------------------------------------------
def _file_of(case: ET.Element) -> str:
    f = case.get("file")
    if f:
        return f.replace(os.sep, "/")
    parts = (case.get("classname") or "").split(".")
    for i, p in enumerate(parts):
        if p.startswith("test_") or p.endswith("_test") or p == "conftest":
            return "/".join(parts[:i + 1]) + ".py"
    return "/".join(parts) or "?"


def parse_junit(path: str) -> dict:
    """Counts per file (passed, failed, errors, skipped) and every failure/error with
    its test id and message, from one pytest ``--junitxml`` file."""
    root = ET.parse(path).getroot()
    files, failures = {}, []
    totals = dict(passed=0, failed=0, errors=0, skipped=0, time_s=0.0)
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for suite in suites:
        totals["time_s"] += float(suite.get("time") or 0)
        for case in suite.iter("testcase"):
            if not case.get("name"):
                totals["interrupted"] = totals.get("interrupted", 0) + 1  # cut off by SIGINT
                continue
            fname = _file_of(case)
            c = files.setdefault(fname, dict(passed=0, failed=0, errors=0, skipped=0))
            kids = {k.tag: k for k in case}
            if "failure" in kids or "error" in kids:
                kind = "failed" if "failure" in kids else "errors"
                el = kids.get("failure", kids.get("error"))
                msg = (el.get("message") or "").strip()
                text = (el.text or "").strip()
                failures.append({"file": fname, "test": f"{fname}::{case.get('name')}",
                                 "kind": "failure" if kind == "failed" else "error",
                                 "message": msg[:MAX_MESSAGE],
                                 "detail": text[-MAX_MESSAGE:]})
            elif "skipped" in kids:
                kind = "skipped"
            else:
                kind = "passed"
            c[kind] += 1
            totals[kind] += 1
    totals["time_s"] = round(totals["time_s"], 2)
    return {"totals": totals, "files": files, "failures": failures[:MAX_FAILURES],
            "failures_total": len(failures)}


_SAN_PATTERNS = (re.compile(r"=+ ERROR SUMMARY: .*"),
                 re.compile(r"=+ RACECHECK SUMMARY: .*"),
                 re.compile(r"=+ (?:Invalid|Race reported|Error|Program hit) .*"),
                 re.compile(r"=+ Target application returned an error.*"),
                 re.compile(r"\d+ (?:passed|failed|error|skipped|deselected)[^\n]* in [\d.]+s.*"))


def parse_sanitizer_log(path: str, max_lines: int = 20) -> dict:
    """The summary lines of one compute-sanitizer log (and pytest's own summary line)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if any(p.search(s) for p in _SAN_PATTERNS) and s not in lines:
            lines.append(s)
    errors = None
    m = re.findall(r"ERROR SUMMARY: (\d+) error", text)
    if m:
        errors = int(m[-1])
    hazards = re.findall(r"RACECHECK SUMMARY: (\d+) hazard", text)
    return {"errors": errors, "hazards": int(hazards[-1]) if hazards else None,
            "summary": lines[:max_lines]}


# --------------------------------------------------------------------------
# benchmark figures
# --------------------------------------------------------------------------
def _geomean(values) -> float | None:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def _load_bench(paths) -> tuple[list, dict]:
    """All benchmark entries of several results.json (later files win on equal names)."""
    entries, meta = {}, {"files": [], "failed": [], "skipped": [], "ceilings": {},
                         "commands": []}
    for p in paths:
        with open(p, encoding="utf-8") as f:
            doc = json.load(f)
        sec = doc.get("fastconv", {})
        meta["files"].append(p)
        meta["failed"] += sec.get("failed", [])
        meta["skipped"] += [s for s in sec.get("skipped", []) if "| " in s or "GPU" in s]
        for dev, c in (sec.get("ceilings") or {}).items():
            meta["ceilings"].setdefault(dev, []).append(
                {k: c.get(k) for k in ("gemm_gflops", "copy_gbs", "gemm_n", "name")})
        if sec.get("command"):
            meta["commands"].append(sec["command"])
        for b in doc.get("benchmarks", []):
            entries[b["name"]] = b
    return list(entries.values()), meta


def bench_figures(paths, copy_gbs: float | None = None, targets=None) -> dict:
    """Per layer: every GPU backend's best implementation, cuDNN, their ratio; the
    ResNet-50 batch-32 geomeans, depthwise and pooling checks against the targets.

    ``copy_gbs``: the measured device copy bandwidth (else the bench's own ceiling).
    """
    targets = targets or TARGETS
    entries, meta = _load_bench(paths)
    layers = {}
    for b in entries:
        info = b.get("extra_info", {})
        if info.get("device") != "cuda" or "case" not in info:
            continue
        row = layers.setdefault(info["case"], {
            "case": info["case"], "layer": info.get("layer"), "op": info.get("op"),
            "group": info.get("group"), "batch": (info.get("input_shape") or [None])[0],
            "bytes": info.get("bytes"), "flops": info.get("flops"), "impls": {}})
        row["impls"][info["impl"]] = {
            "median_s": info.get("median_s", b["stats"]["median"]),
            "min_s": b["stats"].get("min"), "rounds": b["stats"].get("rounds"),
            "gflops": info.get("gflops"), "gbs": info.get("gbs"),
            "rel_error": info.get("rel_error"), "role": info.get("role"),
            "backend": info.get("backend")}
    if copy_gbs is None:
        bench_copy = [c["copy_gbs"] for c in meta["ceilings"].get("cuda", []) if c.get("copy_gbs")]
        copy_gbs = max(bench_copy) if bench_copy else None
    for row in layers.values():
        cud = row["impls"].get(CUDNN)
        row["cudnn_s"] = cud["median_s"] if cud else None
        row["best"] = {}
        for be in GPU_BACKENDS:
            mine = {k: v for k, v in row["impls"].items()
                    if v.get("backend") == be and v.get("role") == "fastconv"}
            if not mine:
                continue
            impl, rec = min(mine.items(), key=lambda kv: kv[1]["median_s"])
            best = {"impl": impl, "median_s": rec["median_s"],
                    "vs_cudnn": rec["median_s"] / row["cudnn_s"] if row["cudnn_s"] else None}
            if row["op"] and "pool" in row["op"] and copy_gbs and row.get("bytes"):
                gbs = row["bytes"] / rec["median_s"] / 1e9
                best.update(gbs=gbs, pct_copy=100.0 * gbs / copy_gbs)
            row["best"][be] = best
        if row["op"] and "pool" in row["op"] and copy_gbs and row.get("bytes") and cud:
            row["cudnn_pct_copy"] = 100.0 * row["bytes"] / cud["median_s"] / 1e9 / copy_gbs
    # ResNet-50 at batch 32: geomean of (best of backend) / cuDNN
    resnet = sorted(c for c, r in layers.items()
                    if (r["layer"] or "").startswith(RESNET_PREFIX) and r["batch"] == RESNET_BATCH)
    checks = {}
    for be, limit in targets["resnet50_geomean_vs_cudnn"].items():
        ratios = {c: layers[c]["best"].get(be, {}).get("vs_cudnn") for c in resnet}
        have = {c: r for c, r in ratios.items() if r is not None}
        g = _geomean(have.values())
        complete = bool(resnet) and len(have) == len(resnet)
        checks[f"resnet50_geomean_{be}"] = {
            "target": f"<= {limit}x cuDNN", "value": g, "layers": len(have),
            "layers_expected": len(resnet), "complete": complete,
            "pass": (g <= limit) if (g is not None and complete) else None,
            "missing": sorted(set(resnet) - set(have))}
    dw = [c for c, r in layers.items() if "depthwise" in (r["layer"] or "").lower()]
    for be, limit in targets["depthwise_vs_cudnn"].items():
        for c in dw:
            r = layers[c]["best"].get(be, {}).get("vs_cudnn")
            checks[f"depthwise_{be}"] = {"target": f"<= {limit}x cuDNN", "case": c, "value": r,
                                         "pass": None if r is None else r <= limit}
    lo, hi = targets["pooling_pct_of_copy"]
    for c, r in sorted(layers.items()):
        if not (r["op"] and "pool" in r["op"]):
            continue
        for be in GPU_BACKENDS:
            pct = r["best"].get(be, {}).get("pct_copy")
            checks[f"pooling {c} {be}"] = {
                "target": f">= {lo:g}% (and {hi:g}%) of copy bandwidth", "value": pct,
                "pass": None if pct is None else pct >= lo,
                f"pass_{hi:g}": None if pct is None else pct >= hi}
    return {"copy_gbs": copy_gbs, "layers": [layers[c] for c in sorted(layers)],
            "resnet50_cases": resnet, "checks": checks, "failed": meta["failed"],
            "skipped": meta["skipped"], "ceilings": meta["ceilings"],
            "commands": meta["commands"], "files": [os.path.basename(os.path.dirname(p)) + "/"
                                                     + os.path.basename(p)
                                                     for p in meta["files"]]}


# --------------------------------------------------------------------------
# the record
# --------------------------------------------------------------------------
def _read_steps(work: str) -> list:
    path = os.path.join(work, "steps.tsv")
    steps = []
    if not os.path.exists(path):
        return steps
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 5 or parts[0] == "step":
                continue
            name, status, rc, secs, budget = parts[:5]
            steps.append({"step": name, "status": status,
                          "rc": int(rc) if rc.lstrip("-").isdigit() else None,
                          "seconds": float(secs) if secs else None,
                          "budget_s": int(budget) if budget.isdigit() else None,
                          "note": parts[5] if len(parts) > 5 else ""})
    return steps


def _load_json(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def assemble(work: str, dry_run: bool = False) -> dict:
    """The record of one ``tools/gpu_run.sh`` call from its work folder."""
    vers = _load_json(os.path.join(work, "versions.json")) or {}
    src = vers.get("source") or {}
    tests = {}
    for p in sorted(glob.glob(os.path.join(work, "junit-*.xml"))):
        name = os.path.basename(p)[len("junit-"):-len(".xml")]
        try:
            tests[name] = parse_junit(p)
        except ET.ParseError as exc:
            tests[name] = {"error": f"unreadable JUnit XML: {exc}"}
    sanitizer = {}
    for p in sorted(glob.glob(os.path.join(work, "sanitizer-*.log"))):
        sanitizer[os.path.basename(p)[len("sanitizer-"):-len(".log")]] = parse_sanitizer_log(p)
    copybw = _load_json(os.path.join(work, "copybw.json"))
    bench_files = sorted(glob.glob(os.path.join(work, "bench-*", "results.json")))
    bench = (bench_figures(bench_files, copybw.get("copy_gbs") if copybw else None)
             if bench_files else None)
    device = vers.get("device") or {}
    rec = {
        "format": "fastconv-gpu-record/1",
        "date": vers.get("date") or _dt.datetime.now(_dt.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "dry_run": bool(dry_run),
        "device": device.get("name"),
        "device_details": device,
        "versions": vers.get("versions", {}),
        "version_errors": vers.get("errors", {}),
        "backends": vers.get("backends"),
        "commit": src.get("commit"),
        "kernels_tree": src.get("kernels_tree"),
        "source": src,
        "steps": _read_steps(work),
        "tests": tests,
        "sanitizer": sanitizer,
        "smoke": _load_json(os.path.join(work, "smoke.json")),
        "copy_bandwidth": copybw,
        "bench": bench,
    }
    totals = dict(passed=0, failed=0, errors=0, skipped=0)
    for t in tests.values():
        for k in totals:
            totals[k] += t.get("totals", {}).get(k, 0)
    rec["tests_total"] = totals
    rec["warnings"] = _warnings(rec)
    return rec


def _warnings(rec: dict) -> list:
    w = []
    src = rec.get("source") or {}
    if rec.get("dry_run"):
        w.append("dry run: nothing ran on a GPU; no figure in this record is a GPU measurement")
    if not rec.get("commit"):
        w.append("commit unknown: pass FASTCONV_COMMIT and FASTCONV_KERNELS_TREE")
    if src.get("kernels_match") is False:
        w.append("kernels/ on the device differs from kernels_tree "
                 f"({src.get('kernels_tree_worktree')} != {src.get('kernels_tree')}): "
                 "uncommitted kernel changes were measured")
    for be in rec.get("backends") or []:
        if be["device"] == "cuda" and not be["available"] and not rec.get("dry_run"):
            w.append(f"backend {be['name']} unavailable on the device ({be['reason']}): "
                     "its tests were skipped, not run")
    for key, res in (rec.get("smoke") or {}).items():
        if not res.startswith("ok") and not rec.get("dry_run"):
            w.append(f"smoke {key}: {res[:200]}")
    for s in rec.get("steps", []):
        if s["status"] not in ("ok", "skipped"):
            w.append(f"step {s['step']}: {s['status']} (rc {s['rc']}) {s['note']}".rstrip())
    b = rec.get("bench") or {}
    if b.get("failed"):
        w.append(f"bench: {len(b['failed'])} implementation(s) failed their check")
    return w


def merge(records: list) -> dict:
    """One record from several calls (say ``tests`` then ``bench``) of the same commit."""
    out = dict(records[0])
    out["merged_from"] = [r.get("date") for r in records]
    out["steps"] = [dict(s, call=1) for s in out.get("steps", [])]
    for i, r in enumerate(records[1:], 2):
        for key in ("commit", "kernels_tree", "device"):
            if r.get(key) and out.get(key) and r[key] != out[key]:
                out.setdefault("warnings", []).append(
                    f"merge: {key} differs between calls ({out[key]} vs {r[key]})")
        out["steps"] = out["steps"] + [dict(s, call=i) for s in r.get("steps", [])]
        for key in ("tests", "sanitizer"):
            out[key] = dict(out.get(key) or {}, **(r.get(key) or {}))
        for key in ("copy_bandwidth", "bench", "smoke"):
            if r.get(key):
                out[key] = r[key]
        out["dry_run"] = bool(out.get("dry_run")) or bool(r.get("dry_run"))
        out["warnings"] = list(dict.fromkeys(out.get("warnings", []) + r.get("warnings", [])))
    totals = dict(passed=0, failed=0, errors=0, skipped=0)
    for t in (out.get("tests") or {}).values():
        for k in totals:
            totals[k] += t.get("totals", {}).get(k, 0)
    out["tests_total"] = totals
    return out


def _fmt(v, spec=".2f", unit=""):
    return "-" if v is None else f"{v:{spec}}{unit}"


def _ms(s):
    return "-" if s is None else f"{s * 1e3:.3f}"


def summary_markdown(rec: dict) -> str:
    """A short Markdown summary of a record."""
    v = rec.get("versions", {})
    src = rec.get("source") or {}
    L = [f"# fastconv GPU run {rec.get('date', '')}" + (" (DRY RUN, no GPU)" if rec.get("dry_run")
                                                         else ""), ""]
    L.append(f"- device: {rec.get('device') or 'none'}"
             + (f" (sm {rec['device_details'].get('compute_capability')})"
                if rec.get("device_details") else ""))
    L.append(f"- commit: `{rec.get('commit')}`; kernels_tree: `{rec.get('kernels_tree')}`"
             f" (device copy: `{src.get('kernels_tree_worktree')}`, match: "
             f"{src.get('kernels_match')})")
    keys = ("python", "numpy", "numba", "numba-cuda", "cupy", "torch", "torch_cuda", "cudnn",
            "driver", "cuda_runtime", "nvrtc")
    L.append("- versions: " + ", ".join(f"{k} {v[k]}" for k in keys if v.get(k) is not None))
    for w in rec.get("warnings", []):
        L.append(f"- **warning**: {w}")
    if rec.get("steps"):
        L += ["", "## Steps", "", "| step | status | rc | s | budget s | note |",
              "|---|---|---|---|---|---|"]
        for s in rec["steps"]:
            L.append(f"| {s['step']} | {s['status']} | {_fmt(s['rc'], 'd')} "
                     f"| {_fmt(s['seconds'], '.0f')} | {s['budget_s']} | {s['note']} |")
    if rec.get("smoke"):
        L += ["", "## Smoke (one small call each)", ""]
        L += [f"- {k}: {r}" for k, r in rec["smoke"].items()]
    if rec.get("tests"):
        L += ["", "## Tests", "", "| run | file | passed | failed | errors | skipped |",
              "|---|---|---|---|---|---|"]
        for run, t in rec["tests"].items():
            if "error" in t:
                L.append(f"| {run} | {t['error']} | | | | |")
                continue
            for f, c in sorted(t["files"].items()):
                L.append(f"| {run} | {f} | {c['passed']} | {c['failed']} | {c['errors']} "
                         f"| {c['skipped']} |")
        fails = [f for t in rec["tests"].values() for f in t.get("failures", [])]
        if fails:
            L += ["", f"Failures ({len(fails)}):", ""]
            for f in fails[:40]:
                msg = f["message"].splitlines()[0][:200] if f["message"] else ""
                L.append(f"- `{f['test']}`: {msg}")
    if rec.get("sanitizer"):
        L += ["", "## compute-sanitizer", ""]
        for name, s in rec["sanitizer"].items():
            L.append(f"- {name}: errors {s['errors']}, hazards {s['hazards']}; "
                     + "; ".join(s["summary"][:4]))
    cb = rec.get("copy_bandwidth")
    if cb:
        L += ["", f"Copy bandwidth (read + write, median of {cb.get('repeat')}): kernel "
              f"{cb['copy_kernel']['gbs']:.0f} GB/s, cudaMemcpy D2D "
              f"{cb['memcpy_d2d']['gbs']:.0f} GB/s; used {cb['copy_gbs']:.0f} GB/s"]
    b = rec.get("bench")
    if b:
        L += ["", "## Benchmarks (median ms; ratio = fastconv / cuDNN, lower is better)", "",
              "| case | cuDNN | numba-cuda best | ratio | cupy best | ratio | % copy (nc / cupy) |",
              "|---|---|---|---|---|---|---|"]
        for r in b["layers"]:
            nc, cp_ = r["best"].get("numba-cuda", {}), r["best"].get("cupy", {})
            pct = (f"{_fmt(nc.get('pct_copy'), '.0f')} / {_fmt(cp_.get('pct_copy'), '.0f')}"
                   if "pool" in (r["op"] or "") else "")
            L.append(f"| {r['case']} | {_ms(r['cudnn_s'])} | "
                     f"{_ms(nc.get('median_s'))} {nc.get('impl', '')} | "
                     f"{_fmt(nc.get('vs_cudnn'))} | {_ms(cp_.get('median_s'))} "
                     f"{cp_.get('impl', '')} | {_fmt(cp_.get('vs_cudnn'))} | {pct} |")
        L += ["", "| check | target | value | pass |", "|---|---|---|---|"]
        for name, c in b["checks"].items():
            L.append(f"| {name} | {c['target']} | {_fmt(c['value'])} | {c['pass']} |")
        if b["failed"]:
            L += ["", "Bench failures:", ""] + [f"- {f[:300]}" for f in b["failed"][:20]]
    return "\n".join(L) + "\n"


def _write(rec: dict, out_json: str, out_md: str | None):
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    tmp = out_json + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(rec, f, indent=1, default=str)
    os.replace(tmp, out_json)
    if out_md:
        with open(out_md, "w", encoding="utf-8") as f:
            f.write(summary_markdown(rec))


def device_command(steps: str = "tests", root: str | None = None) -> str:
    """The command line for the device tool, with this checkout's identity filled in."""
    root = root or _root()
    head = _run(["git", "rev-parse", "HEAD"], cwd=root) or "UNKNOWN"
    tree = _run(["git", "rev-parse", "HEAD:kernels"], cwd=root) or "UNKNOWN"
    return (f"FASTCONV_COMMIT={head} FASTCONV_KERNELS_TREE={tree} "
            f"bash tools/gpu_run.sh {steps}")


def main(argv=None) -> int:
    import argparse
    argv = list(sys.argv[1:] if argv is None else argv)
    actions = ("assemble", "versions", "smoke", "copybw", "merge", "command")
    action = argv.pop(0) if argv and argv[0] in actions else "assemble"
    p = argparse.ArgumentParser(prog=f"python -m fastconv.perf.gpu_record {action}")
    if action == "assemble":
        p.add_argument("--work", required=True, help="the work folder of tools/gpu_run.sh")
        p.add_argument("--out", required=True, help="folder for record.json and summary.md")
        p.add_argument("--dry-run", action="store_true")
        a = p.parse_args(argv)
        rec = assemble(a.work, a.dry_run)
        _write(rec, os.path.join(a.out, "record.json"), os.path.join(a.out, "summary.md"))
        print(f"gpu_record: {os.path.join(a.out, 'record.json')}: tests {rec['tests_total']}, "
              f"{len(rec['warnings'])} warning(s)")
        return 0
    if action == "versions":
        p.add_argument("--out", required=True)
        a = p.parse_args(argv)
        v = collect_versions()
        _write(v, a.out, None)
        print(json.dumps(v, indent=1, default=str))
        return 0
    if action == "smoke":
        p.add_argument("--out", required=True)
        a = p.parse_args(argv)
        r = smoke()
        _write(r, a.out, None)
        for k, res in r.items():
            print(f"smoke {k}: {res}")
        return 0
    if action == "copybw":
        p.add_argument("--out", required=True)
        p.add_argument("--mib", type=int, default=1024)
        p.add_argument("--repeat", type=int, default=50)
        a = p.parse_args(argv)
        r = measure_copy_bandwidth(a.mib << 20, repeat=a.repeat)
        _write(r, a.out, None)
        print(f"copy bandwidth: kernel {r['copy_kernel']['gbs']:.0f} GB/s, memcpy "
              f"{r['memcpy_d2d']['gbs']:.0f} GB/s (median of {a.repeat}, read + write)")
        return 0
    if action == "merge":
        p.add_argument("records", nargs="+")
        p.add_argument("-o", "--out", required=True, help="merged record .json (.md beside it)")
        a = p.parse_args(argv)
        recs = [_load_json(r) for r in a.records]
        rec = merge(recs)
        _write(rec, a.out, os.path.splitext(a.out)[0] + ".md")
        print(f"gpu_record: merged {len(recs)} record(s) into {a.out}")
        return 0
    p.add_argument("steps", nargs="*", default=["tests"])
    a = p.parse_args(argv)
    dirty = _run(["git", "status", "--porcelain", "--", "kernels", "fastconv", "tests",
                  "tools"], cwd=_root())
    if dirty:
        print("warning: uncommitted changes travel with the working tree and will be "
              "measured (commit first, then run):\n" + dirty, file=sys.stderr)
    print(device_command(" ".join(a.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
