"""Compile, into Numba's on-disk cache, kernel specializations the test suite needs late.

Started by ``conftest.pytest_collection_finish`` as a background job (see
``background.py``) when a run selects many numba tests: the main pytest
process compiles on one core for most of its run (the pooling kernels take
20-60 s each, see kernels/cpu_pool.py), while the second core mostly waits.
This script compiles the specializations the main process reaches last
(float64 pooling, 64-bit pooling indices) on that second core first; when
the main process gets there, Numba loads them from the cache instead.  It
checks nothing and changes no result: a specialization it has not finished
yet is simply compiled by the main process as before.  Killed at the end of
the test run if still going.
"""
from __future__ import annotations

import numpy as np


def main() -> None:
    import fastconv as fc
    from fastconv.wrappers import numba_backend as nb

    x64 = np.random.default_rng(0).random((1, 2, 6, 7))
    for x in (x64, x64.astype(np.float32)):
        if x.dtype == np.float32:
            # 64-bit flat indices (planes past 2^31 elements, test_index_limits)
            nb._no_index = lambda p: np.int64(1 << 62)
        fc.max_pool2d(x, 2, return_indices=True, backend="numba")
        fc.adaptive_max_pool2d(x, 3, return_indices=True, backend="numba")
        if x.dtype == np.float64:
            fc.max_pool2d(x, 2, backend="numba")
            fc.max_pool2d(x, 2, dilation=3, backend="numba")            # rows kernel (v1)
            fc.avg_pool2d(x, 2, backend="numba")
            fc.adaptive_avg_pool2d(x, 3, backend="numba")
            fc.adaptive_max_pool2d(x, 3, backend="numba")


if __name__ == "__main__":
    main()
