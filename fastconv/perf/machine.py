"""The measured machine: its description and its ceilings (GEMM GFLOP/s, copy GB/s).

Ceilings are measured, not looked up: the best of a few NumPy float32
``matmul`` calls (``2*n^3`` flops) and the best of a few ``np.copyto`` of a
buffer larger than the caches (read + write bytes counted), on the GPU the
same with CuPy (CUDA events around each call).  They are what "% of peak"
and the roofline in the reports are measured against.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time

import numpy as np

from .timing import gpu_sync

__all__ = ["describe", "measure_cpu_ceilings", "measure_gpu_ceilings", "gpu_available",
           "versions", "limit_threads"]

_limits = []  # keeps threadpoolctl's limiter alive


def limit_threads(n: int) -> list[str]:
    """Use ``n`` CPU threads in every library that is installed; returns what was limited.

    BLAS/OpenMP pools through threadpoolctl, Numba, PyTorch and OpenCV.  On a
    shared machine one thread per library avoids waiting for a second core
    that another process holds (multi-threaded kernels then stall for whole
    scheduler ticks).
    """
    done = []
    try:
        import threadpoolctl
        _limits.append(threadpoolctl.threadpool_limits(n))
        done.append("BLAS/OpenMP (threadpoolctl)")
    except ImportError:
        pass
    for name, setter in (("numba", lambda m: m.set_num_threads(n)),
                         ("torch", lambda m: m.set_num_threads(n)),
                         ("cv2", lambda m: m.setNumThreads(n))):
        try:
            import importlib
            setter(importlib.import_module(name))
            done.append(name)
        except Exception:  # noqa: BLE001 - not installed
            continue
    os.environ["FASTCONV_THREADS"] = str(n)
    return done


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def versions() -> dict:
    """Versions of NumPy and of every optional package that is installed."""
    import importlib
    out = {"python": platform.python_version()}
    for name, mod in (("fastconv", "fastconv"), ("numpy", "numpy"), ("scipy", "scipy"),
                      ("torch", "torch"), ("opencv", "cv2"), ("numba", "numba"),
                      ("numba-cuda", "numba_cuda"), ("cupy", "cupy")):
        try:
            out[name] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001 - absent or broken: just not listed
            continue
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        out["numpy-blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001
        pass
    return out


def _commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return res.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def gpu_available() -> str | None:
    """The GPU's name if CuPy can use one here, else None."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - no driver, no device, no CuPy
        return None


def describe() -> dict:
    """The machine and software a run measured (stored in every report)."""
    gpu = gpu_available()
    return {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node(), "system": f"{platform.system()} {platform.release()}",
            "cpu": _cpu_model(), "cores": os.cpu_count(),
            "load_average": _loadavg(), "threads": _threads(),
            "threads_limit": os.environ.get("FASTCONV_THREADS"),
            "memory_gib": _memory_gib(), "gpu": gpu,
            "versions": versions(), "commit": _commit()}


def _loadavg() -> list | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _threads() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_cpu_ceilings(quick: bool = True) -> dict:
    """GEMM GFLOP/s (NumPy float32 matmul) and copy GB/s (read + write) of this CPU."""
    n = 2048 if quick else 4096
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # warm-up: threads started, pages touched
    t = _best(lambda: np.matmul(a, b, out=c), 3 if quick else 5)
    gemm = 2 * n**3 / t / 1e9
    size = (64 if quick else 256) * 2**20 // 4
    src = rng.standard_normal(size, dtype=np.float32)
    dst = np.ones_like(src)  # touched: no page faults inside the timing
    np.copyto(dst, src)
    t_copy = _best(lambda: np.copyto(dst, src), 5 if quick else 10)
    copy = 2 * src.nbytes / t_copy / 1e9
    return {"device": "cpu", "gemm_gflops": gemm, "gemm_n": n, "copy_gbs": copy,
            "copy_bytes": 2 * src.nbytes, "ridge_flops_per_byte": gemm / copy}


def measure_gpu_ceilings(quick: bool = True) -> dict | None:
    """The same on the GPU with CuPy (None if no GPU can be used)."""
    name = gpu_available()
    if name is None:
        return None
    import cupy
    n = 4096 if quick else 8192
    a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    b = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    c = cupy.matmul(a, b)

    def timed(fn, repeat):
        best = float("inf")
        for _ in range(repeat):
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
        return best

    t = timed(lambda: cupy.matmul(a, b, out=c), 5)
    size = (256 if quick else 1024) * 2**20 // 4
    src = cupy.random.standard_normal(size, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    cupy.copyto(dst, src)
    gpu_sync()
    t_copy = timed(lambda: cupy.copyto(dst, src), 10)
    gemm, copy = 2 * n**3 / t / 1e9, 2 * src.nbytes / t_copy / 1e9
    return {"device": "cuda", "name": name, "gemm_gflops": gemm, "gemm_n": n,
            "copy_gbs": copy, "copy_bytes": 2 * src.nbytes,
            "ridge_flops_per_byte": gemm / copy}
