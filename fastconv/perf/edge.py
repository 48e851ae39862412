"""The dense-matrix-versus-convolution comparison of the lecture notes (edge detection).

Goodfellow et al. (ch. 9), as quoted in the seed notes: a 320 x 280 image
(320 wide, 280 tall) convolved with the kernel ``[-1, 1]``.  The exact
counts come from :func:`fastconv.dense.edge_detection_counts`.  Here the
three ways of computing it are *measured* on a sweep of image sizes (the
dense matrix only where it fits the memory limit), their growth is fitted
as ``t = a * pixels^b`` by least squares on log-log axes, and each fit is
extrapolated to 320 x 280.

Methods:

* ``dense matrix x vector``: the prebuilt ``(H_out*W_out) x (H*W)`` float32
  matrix times the image (``numpy.matmul``);
* ``dense matrix build``: building that matrix once (:func:`dense.dense_matrix`);
* ``sparse CSR x vector``: the same matrix in CSR form (SciPy, else NumPy);
* every registered CPU conv2d implementation except ``numpy/dense``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dense, registry
from ..testing import assert_close
from .records import benchmark_record
from .timing import QUICK, measure, stats

__all__ = ["sweep", "fit_power_law", "fits", "extrapolations", "METHOD_DENSE",
           "METHOD_SPARSE", "METHOD_BUILD"]

METHOD_DENSE = "dense matrix x vector"
METHOD_BUILD = "dense matrix build"
METHOD_SPARSE = "sparse CSR x vector"
GROUP = "edge-detection sweep"


def edge_methods(width: int, height: int, memory_limit=None):
    """The methods at one image size: ``(x, reference, [(name, role, fn or skip reason)])``.

    ``x`` is a fresh ``(1, 1, height, width)`` float32 image, ``reference`` the
    float64 result ``x[..., 1:] - x[..., :-1]``.
    """
    p = dense.edge_detection_params(width, height)
    rng = np.random.default_rng()
    x = rng.standard_normal((1, 1, height, width)).astype(np.float32)
    ref = x[..., 1:].astype(np.float64) - x[..., :-1]
    xv = x.reshape(-1)
    out = []
    try:
        m = dense.dense_matrix(p, dense.EDGE_KERNEL, memory_limit)
    except dense.DenseMatrixTooLarge as exc:
        out.append((METHOD_DENSE, "baseline", str(exc)))
        out.append((METHOD_BUILD, "baseline", str(exc)))
    else:
        out.append((METHOD_DENSE, "baseline", lambda: (m @ xv).reshape(1, 1, p.h_out, p.w_out)))
        out.append((METHOD_BUILD, "baseline",
                    lambda: dense.dense_matrix(p, dense.EDGE_KERNEL, memory_limit)))
    s = dense.sparse_matrix(p, dense.EDGE_KERNEL)
    out.append((METHOD_SPARSE, "baseline", lambda: (s @ xv).reshape(1, 1, p.h_out, p.w_out)))
    w = dense.EDGE_KERNEL
    for impl in registry.implementations("conv2d"):
        be = registry.get_backend(impl.backend)
        if be.device != "cpu" or impl.algorithm == "dense":
            continue
        label = f"conv2d {impl.backend}/{impl.algorithm}"
        why = be.unavailable_reason() or impl.unsupported_reason(p)
        if why:
            out.append((label, "fastconv", why))
            continue
        out.append((label, "fastconv", (lambda f: lambda: f(x, w, None, p))(impl.fn)))
    return x, ref, out


def check_method(name: str, fn, ref, size: str):
    """Warm up and check ``fn`` (the matrix build is not a convolution: only run)."""
    first = fn()
    err = None
    if name != METHOD_BUILD:
        err = assert_close(first, ref, "float32", f"{name} {size}")
    fn()
    return err


def sweep_info(width: int, height: int, name: str, role: str, median_s: float, err,
               machine: str = "", ceilings: dict | None = None) -> dict:
    """The ``extra_info`` of one sweep measurement (counts exact, time measured)."""
    c = dense.counts(dense.edge_detection_params(width, height))
    info = {"fastconv": 1, "sweep": "edge", "case": f"edge {width}x{height}",
            "layer": "edge detection sweep", "op": "conv2d", "group": GROUP,
            "impl": name, "role": role, "device": "cpu", "width": width,
            "height": height, "pixels": width * height, "dtype": "float32",
            "flops": c["conv_flops"], "dense_flops": c["dense_flops"],
            "entries": c["entries"], "dense_bytes": c["dense_bytes"],
            "nonzeros": c["nonzeros"], "median_s": median_s, "rel_error": err,
            "machine": machine}
    if ceilings:
        info.update(peak_gflops=ceilings["gemm_gflops"], peak_gbs=ceilings["copy_gbs"])
    return info


def sweep(sizes, budget=QUICK, memory_limit=None, progress=None, machine: str = "",
          ceilings: dict | None = None) -> tuple[list, list]:
    """Time every method on every ``(width, height)``; returns (records, skipped notes).

    Each result is checked against the float64 reference before it is timed.
    """
    records, skipped = [], []
    build_budget = type(budget)(0.0, budget.max_time, 1, 3)
    sweep_budget = type(budget)(budget.min_time, budget.max_time, max(budget.min_rounds, 5),
                                budget.max_rounds)
    for width, height in sizes:
        _x, ref, methods = edge_methods(width, height, memory_limit)
        for name, role, fn in methods:
            if progress is not None:
                progress.set_postfix_str(f"edge {width}x{height} {name}"[:60])
            if isinstance(fn, str):
                skipped.append(f"{GROUP} {width}x{height} {name}: {fn}")
                continue
            err = check_method(name, fn, ref, f"{width}x{height}")
            st = stats(measure(fn, build_budget if name == METHOD_BUILD else sweep_budget))
            info = sweep_info(width, height, name, role, st["median"], err, machine, ceilings)
            records.append(benchmark_record(f"edge[{width}x{height}-{name}]", GROUP, st, info,
                                            {"size": f"{width}x{height}", "method": name}))
        del methods
        if progress is not None:
            progress.update(1)
    return records, skipped


def fit_power_law(pixels, seconds) -> dict | None:
    """Least squares of ``log t = log a + b log pixels``: ``{"a", "b", "points", "r2"}``."""
    x = np.log(np.asarray(pixels, dtype=float))
    y = np.log(np.asarray(seconds, dtype=float))
    if x.size < 2 or np.ptp(x) == 0:
        return None
    b, loga = np.polyfit(x, y, 1)
    pred = loga + b * x
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"a": math.exp(loga), "b": float(b), "points": int(x.size),
            "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0,
            "min_pixels": int(np.exp(x.min()).round()), "max_pixels": int(np.exp(x.max()).round())}


def sweep_records(benchmarks: list) -> list:
    return [b for b in benchmarks if b.get("extra_info", {}).get("sweep") == "edge"]


def fits(benchmarks: list, machine: str | None = None, largest: int | None = None) -> dict:
    """Per method, the power-law fit of the fastest round against pixels.

    The minimum, not the median: on a shared machine other processes add
    delays (in multiples of the scheduler's tick) that the minimum filters out.
    ``largest=k`` fits only the k largest sizes (past the caches: the asymptote).
    """
    by_method: dict = {}
    for b in sweep_records(benchmarks):
        info = b["extra_info"]
        if machine is not None and info.get("machine") != machine:
            continue
        by_method.setdefault(info["impl"], []).append((info["pixels"], b["stats"]["min"]))
    out = {}
    for method, pts in by_method.items():
        pts.sort()
        if largest:
            pts = pts[-largest:]
        f = fit_power_law([p for p, _ in pts], [t for _, t in pts])
        if f is not None:
            out[method] = f
    return out


def extrapolations(fit_table: dict, width: int = 320, height: int = 280) -> dict:
    """Each fit evaluated at ``width x height`` pixels (seconds)."""
    px = width * height
    return {m: f["a"] * px ** f["b"] for m, f in fit_table.items()}
