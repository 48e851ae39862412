"""Numba-CUDA pooling kernels: max (with int64 indices), avg, adaptive avg/max.

Formulas (NCHW, windows in padded coordinates, clipped to the input)::

    max_pool2d:  out[n, c, y, x] = max_{i<KH, j<KW} in[n, c, y*SH - PH + i*DH, x*SW - PW + j*DW]
    avg_pool2d:  out[n, c, y, x] = sum_{window in bounds} in / divisor(y, x)
    adaptive:    window of output i over In inputs = [floor(i*In/Out), ceil((i+1)*In/Out))

PyTorch's exact rules (``shared/docs/semantics.md``, ATen MaxPoolKernel.cpp,
AvgPoolKernel.cpp, AdaptiveMaxPooling2d.cpp):

* max: ``maxval = -inf``, ``maxidx`` = the first in-bounds element of the
  window; update ``if val > maxval or isnan(val)`` in row-major order, so NaN
  propagates with the index of the LAST NaN, ties keep the FIRST maximum,
  an all -inf window returns -inf and its first in-bounds index.  Indices
  are int64 flat ``h*W + w`` per (n, c) plane.  Padding is never read.
* avg divisor: ``divisor_override`` if given; else with count_include_pad
  the window clipped at H+PH / W+PW (padding counted, ceil_mode overhang
  not); else the number of in-bounds elements.

Layouts/dtypes: C-contiguous float32/float64 input and output; indices int64.
Cost: one compare or add per window tap; minimum bytes = (input + output)
* itemsize (+ 8 bytes per output for indices).  Memory-bound: every kernel
is one thread per output element on a 1-D grid-stride loop over
N*C*Ho*Wo (consecutive threads -> consecutive x: coalesced stores, and
loads that are coalesced for stride 1 and sector-shared otherwise).  Each
input element is read from DRAM once when windows do not overlap (stride >=
kernel); overlapping windows re-read neighbours, which the L1/L2 caches
serve.  No shared memory.  One launch per op.

Versions: 1. one thread per output (this file).
"""
from __future__ import annotations

import functools
import math

from numba import cuda

from .cuda_conv import numba_type

__all__ = ["max_pool2d_kernel", "avg_pool2d_kernel", "adaptive_avg_pool2d_kernel",
           "adaptive_max_pool2d_kernel"]


@functools.lru_cache(maxsize=None)
def max_pool2d_kernel(dtype, with_indices: bool):
    T = numba_type(dtype)
    WITH_INDICES = bool(with_indices)

    @cuda.jit
    def max_pool2d(x, out, idx, H, W, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW):
        neg_inf = T(-math.inf)
        nc_total = out.shape[0] * out.shape[1]
        total = nc_total * Ho * Wo
        C = out.shape[1]
        for t in range(cuda.grid(1), total, cuda.gridsize(1)):
            ox = t % Wo
            r = t // Wo
            oy = r % Ho
            nc = r // Ho
            n = nc // C
            c = nc - n * C
            hs = oy * SH - PH
            ws = ox * SW - PW
            he = min(hs + (KH - 1) * DH + 1, H)
            we = min(ws + (KW - 1) * DW + 1, W)
            while hs < 0:
                hs += DH
            while ws < 0:
                ws += DW
            best = neg_inf
            best_i = hs * W + ws               # first in-bounds element
            for h in range(hs, he, DH):
                for w in range(ws, we, DW):
                    v = x[n, c, h, w]
                    if v > best or v != v:     # NaN wins; the last NaN's index is kept
                        best = v
                        best_i = h * W + w
            out[n, c, oy, ox] = best
            if WITH_INDICES:
                idx[n, c, oy, ox] = best_i

    return max_pool2d


@functools.lru_cache(maxsize=None)
def avg_pool2d_kernel(dtype):
    T = numba_type(dtype)

    @cuda.jit
    def avg_pool2d(x, out, H, W, Ho, Wo, KH, KW, SH, SW, PH, PW, count_include_pad,
                   divisor_override):
        # divisor_override == 0 means "none" (0 is rejected by the argument checks)
        zero = T(0)
        C = out.shape[1]
        total = out.shape[0] * C * Ho * Wo
        for t in range(cuda.grid(1), total, cuda.gridsize(1)):
            ox = t % Wo
            r = t // Wo
            oy = r % Ho
            nc = r // Ho
            n = nc // C
            c = nc - n * C
            hs = oy * SH - PH
            ws = ox * SW - PW
            he = min(hs + KH, H + PH)          # clipped at the padded edge, not at H
            we = min(ws + KW, W + PW)
            pool = (he - hs) * (we - ws)
            hs = max(hs, 0)
            ws = max(ws, 0)
            he = min(he, H)
            we = min(we, W)
            s = zero
            for h in range(hs, he):
                for w in range(ws, we):
                    s += x[n, c, h, w]
            if divisor_override != 0:
                d = divisor_override
            elif count_include_pad:
                d = pool
            else:
                d = (he - hs) * (we - ws)
            out[n, c, oy, ox] = s / T(d)

    return avg_pool2d


@functools.lru_cache(maxsize=None)
def adaptive_avg_pool2d_kernel(dtype):
    T = numba_type(dtype)

    @cuda.jit
    def adaptive_avg_pool2d(x, out, H, W, Ho, Wo):
        zero = T(0)
        C = out.shape[1]
        total = out.shape[0] * C * Ho * Wo
        for t in range(cuda.grid(1), total, cuda.gridsize(1)):
            ox = t % Wo
            r = t // Wo
            oy = r % Ho
            nc = r // Ho
            n = nc // C
            c = nc - n * C
            hs = (oy * H) // Ho
            he = ((oy + 1) * H + Ho - 1) // Ho   # ceil((oy+1)*H/Ho)
            ws = (ox * W) // Wo
            we = ((ox + 1) * W + Wo - 1) // Wo
            s = zero
            for h in range(hs, he):
                for w in range(ws, we):
                    s += x[n, c, h, w]
            out[n, c, oy, ox] = s / T((he - hs) * (we - ws))

    return adaptive_avg_pool2d


@functools.lru_cache(maxsize=None)
def adaptive_max_pool2d_kernel(dtype, with_indices: bool):
    T = numba_type(dtype)
    WITH_INDICES = bool(with_indices)

    @cuda.jit
    def adaptive_max_pool2d(x, out, idx, H, W, Ho, Wo):
        neg_inf = T(-math.inf)
        C = out.shape[1]
        total = out.shape[0] * C * Ho * Wo
        for t in range(cuda.grid(1), total, cuda.gridsize(1)):
            ox = t % Wo
            r = t // Wo
            oy = r % Ho
            nc = r // Ho
            n = nc // C
            c = nc - n * C
            hs = (oy * H) // Ho
            he = ((oy + 1) * H + Ho - 1) // Ho
            ws = (ox * W) // Wo
            we = ((ox + 1) * W + Wo - 1) // Wo
            best = neg_inf
            best_i = hs * W + ws
            for h in range(hs, he):
                for w in range(ws, we):
                    v = x[n, c, h, w]
                    if v > best or v != v:
                        best = v
                        best_i = h * W + w
            out[n, c, oy, ox] = best
            if WITH_INDICES:
                idx[n, c, oy, ox] = best_i

    return adaptive_max_pool2d
