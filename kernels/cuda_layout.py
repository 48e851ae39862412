"""Numba-CUDA layout kernels: strided (non-contiguous) device array -> C-contiguous copy.

Formula: ``dst[idx] = src[idx]`` for every multi-index ``idx``; ``src`` may have
any strides (a view, a transposed or Fortran-order array), ``dst`` is
C-contiguous.  Dtypes: any; the copy does no arithmetic.  Bytes moved:
2 * size * itemsize.  Launch: one thread per element on a 1-D grid-stride
loop; consecutive threads write consecutive ``dst`` elements (coalesced
stores; loads follow ``src``'s strides).  No shared memory.  Used by the
numba-cuda backend so that the compute kernels only see C-contiguous arrays,
without a round trip through the host.

Versions: 1. elementwise gather (this file).
"""
from __future__ import annotations

from numba import cuda

__all__ = ["copy1d", "copy4d"]


@cuda.jit
def copy1d(src, dst):
    for t in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[t] = src[t]


@cuda.jit
def copy4d(src, dst):
    d1, d2, d3 = dst.shape[1], dst.shape[2], dst.shape[3]
    total = dst.shape[0] * d1 * d2 * d3
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        i3 = t % d3
        r = t // d3
        i2 = r % d2
        r = r // d2
        i1 = r % d1
        i0 = r // d1
        dst[i0, i1, i2, i3] = src[i0, i1, i2, i3]
