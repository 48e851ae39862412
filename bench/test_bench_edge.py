"""The edge-detection sweep: dense matrix, sparse matrix and every CPU conv2d.

A 320 x 280 image and the kernel [-1, 1] (the lecture notes' example), and
the same scaled down; the dense matrix only where it fits
``fastconv.dense.MEMORY_LIMIT``.  ``fastconv report`` fits the growth of each
method from these records and extrapolates it to 320 x 280.
"""
import pytest

from fastconv.perf import edge
from fastconv.perf.run import machine_label


def _methods(cache, size):
    if cache.get("size") != size:
        cache.clear()
        cache["size"] = size
        cache["x"], cache["ref"], cache["methods"] = edge.edge_methods(*size)
    return cache


@pytest.mark.parametrize("method", [edge.METHOD_DENSE, edge.METHOD_SPARSE, "conv2d"])
def test_edge_detection(benchmark, timed, edge_size, method, edge_methods_cache, ceilings,
                        machine_description):
    width, height = edge_size
    cache = _methods(edge_methods_cache, edge_size)
    chosen = [m for m in cache["methods"] if m[0] == method or
              (method == "conv2d" and m[0].startswith("conv2d"))]
    runnable = [m for m in chosen if not isinstance(m[2], str)]
    if not runnable:
        pytest.skip("; ".join(m[2] for m in chosen) or f"no {method} here")
    # several registered conv2d implementations: benchmark the fastest of one warm call each
    name, role, fn = runnable[0] if len(runnable) == 1 else _fastest(runnable)
    err = edge.check_method(name, fn, cache["ref"], f"{width}x{height}")
    benchmark.group = "edge-detection sweep"
    timed(fn)
    benchmark.extra_info.update(edge.sweep_info(
        width, height, name, role, benchmark.stats.stats.median, err,
        machine_label(machine_description, "cpu"), ceilings.get("cpu")))


def _fastest(methods):
    import time
    best, best_t = None, float("inf")
    for m in methods:
        m[2]()
        t0 = time.perf_counter()
        m[2]()
        t = time.perf_counter() - t0
        if t < best_t:
            best, best_t = m, t
    return best
