"""CPU (Numba ``@njit``) pooling kernels: max (with indices), avg, adaptive avg/max.

Formulas (NCHW, per (n, c) plane; window of output (oy, ox) starts at
``(oy*sh - ph, ox*sw - pw)`` with dilated taps ``(i*dh, j*dw)``)::

    max:  y = max over in-bounds taps, PyTorch's rule (``reference.max_with_indices``):
          start at -inf with the index of the first in-bounds tap; a tap
          replaces the running max when ``v > max or isnan(v)`` (NaN wins,
          the last NaN's index is kept, the first of equal maxima wins);
          indices are flat ``h*W + w`` in the unpadded plane, int64.
    avg:  y = (sum over in-bounds taps) / divisor[oy, ox]   (divisor: ``reference.avg_divisors``)
    adaptive: window rows [floor(oy*H/Ho), ceil((oy+1)*H/Ho)), same for columns.

Layouts: C-contiguous NCHW float32/float64; indices int64.  Work: one
compare/add per tap; minimum bytes: input once + output once (+ 8 bytes per
output for indices).  These ops are memory-bound: the aim is the machine's
read bandwidth (copy here: 33-35 GB/s read+write at 2 threads).

Parallel decomposition (version 2): tasks are (plane, block of output rows);
planes are cut into row blocks only when there are fewer than ~8 per thread
(``numba_backend._pool_tasks``).  ``prange`` runs over ``nchunk`` = threads
contiguous ranges of tasks, so each thread streams one contiguous part of
the input and allocates its row buffers once.  No shared memory; no
allocation per call besides the outputs (and the avg divisor table).

Version 2 (max, adaptive max, avg): separable.  PyTorch's sequential max
rule has an order-free form (see the banner above ``_mx``), so a window is
reduced as a *column pass* (fold the window's input rows, in order, into one
padded row: long contiguous vector loops reading the plane in place) then a
*row pass* (fold k_w entries per output at stride s_w; stride-2 pairs are
de-interleaved by LLVM's interleaved loads).  Values-only and with-indices
are separate kernels; the index kernels work in int32 (8 lanes beside
float32) whenever a plane has fewer than 2**31 elements.  Averages: rows
summed into a zero-padded row, then k_w entries per output / divisor.
Adaptive max with equal even column windows (112 -> 7: 16 wide) halves
pairs over the whole row before the per-window fold.
No fastmath on max pooling: it would fold away the ``v != v`` NaN test.
Values-only max pooling returns NaN for a window holding NaN whatever its
payload (torch returns the last NaN's bits; equal under NaN == NaN).

Versions:
1. row-wise tap loops: for a fixed tap (i, j) the loop over ``ox`` is
   vectorized, taps visited in PyTorch's order (kept: ``max_pool2d_rows`` runs
   when dilation makes some window miss the input entirely; the others are
   kept for ``tools/measure_cpu.py --before-after``).
2. separable column pass + row pass (above); folds never store in place:
   ``acc[q] = v if take else acc[q]`` became a masked store (vmaskmovps,
   microcoded on this AMD CPU, ~5x slower than blend + store), so long
   windows ping-pong between two row buffers.  Row passes other than the fused
   k_w = 2, 3 (dilation 1, stride 1 or 2) run tap by tap over the output row,
   ping-ponging between two Wo-long buffers (7x7 stride-1 max pool, one thread:
   48 -> 3.0 ms; its indices 62 -> 7.7 ms; 4x32x111x113 float32).
   Measured on 8x64x112x112 float32, 2 threads, wall-clock medians of 11 in one
   process, interleaved with torch and with version 1 (``python tools/measure_cpu.py
   --group pool --threads 2 --before-after``, a quiet minute of the shared machine).
   GB/s = (input + outputs, indices included) / time; copy runs at 33-35 GB/s:

   =========================  ==========  ==========  =========  ===========
   case                        v1 ms       v2 ms       v2 GB/s    torch ms
   =========================  ==========  ==========  =========  ===========
   max k2 s2                   2.45        1.49        21.6       23.4
   max k2 s2 + indices         4.00        2.01        22.4       19.9
   max k3 s2 p1                4.51        1.60        20.0       27.7
   max k3 s2 p1 + indices      8.24        2.49        18.1       29.2
   avg k2 s2                   2.02        1.54        20.8        7.2
   adaptive max 7x7            6.13        1.18        21.8        3.9
   adaptive max 7x7 + indices  6.19        1.83        14.2        3.9
   adaptive avg 7x7 (v1 only)  1.21        -           21.3        6.8
   =========================  ==========  ==========  =========  ===========

   One thread (process CPU time, ms, v1 -> v2): max k2s2 4.1 -> 1.9, +indices
   7.1 -> 2.8; max k3s2p1 9.1 -> 2.2, +indices 15.4 -> 4.1; avg k2s2 3.1 -> 2.2;
   adaptive max 11.8 -> 1.8, +indices 11.9 -> 3.2.  On this machine a 2-thread
   call waits a whole scheduler period (8 ms) whenever another tenant holds the
   second core: medians at 8.0 ms in a noisy minute measure that, not the kernel.
3. compile time (same loops, same results).  The helpers were all
   ``inline="always"`` (Numba IR inlining); the parfor passes (copy
   propagation, gufunc creation) then deep-copied the large inlined prange body
   again and again: 80 % of a first call went to Python-side IR work, not LLVM.
   The v2 helpers are now separate functions inlined by LLVM (``_HELPER``:
   ``forceinline``, ``_nrt=False``, ``error_model="numpy"``; see there why
   each).  Plain non-IR-inlined helpers had been 1.2-1.4x slower: per output
   row, each array argument cost an atomic incref/decref pair (found with perf:
   26 % of the samples in NRT_incref/NRT_decref), and ``/`` kept its
   zero-division branch.  The adaptive index row pass and the v1 helpers stay
   IR-inlined (slower otherwise).
   First calls, float32, empty private cache, one process, in call order
   (later kernels reuse helpers compiled earlier), shared machine under load:

   ==========================  ========  ========
   kernel                      v2 s      v3 s
   ==========================  ========  ========
   max_pool2d_sep              33.9      17.2
   max_pool2d_sep_idx (int32)  69.1      19.0
   max_pool2d_sep_idx (int64)  78.8      21.6
   avg_pool2d_sep               6.3       5.6
   adaptive_avg_pool2d_planes   2.2       1.9
   adaptive_max_pool2d_sep     16.8      10.1
   adaptive_max_pool2d_sep_idx 29.0      11.8
   max_pool2d_rows (v1)        13.9      14.5
   total                       250.0     102.5
   ==========================  ========  ========

   Run time, 8x64x112x112 float32, v2 and v3 kernels called side by side in one
   process, interleaved, medians of 21 (ms; 2 threads, wall clock, a quiet minute;
   rows = the v1 fallback kernel, called directly):

   ======================  ======  ======  =====
   case                     v2 ms   v3 ms   v3/v2
   ======================  ======  ======  =====
   max k2 s2                1.24    1.25    1.01
   max k2 s2 + indices      1.92    1.85    0.96
   max k3 s2 p1             1.33    1.29    0.96
   max k3 s2 p1 + indices   2.21    2.19    0.99
   avg k2 s2                1.24    1.20    0.97
   adaptive avg 7x7         1.15    1.10    0.96
   adaptive max 7x7         1.07    1.09    1.02
   adaptive max 7x7 + idx   1.74    1.76    1.01
   rows k3 s2 p1            4.45    4.47    1.00
   rows k3 s2 p1 + indices  8.24    8.62    1.05 (min 8.08 -> 8.27)
   ======================  ======  ======  =====
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

#: LLVM fast-math flags that let reductions vectorize into FMAs (reassociation,
#: contraction, no signed zeros) without assuming there are no NaNs or Infs:
#: ``fastmath=FASTMATH`` would add nnan/ninf/arcp/afn, under which NaN and Inf no
#: longer propagate as in PyTorch (an Inf in an avg-pool window came out NaN).
FASTMATH = {"reassoc", "contract", "nsz"}

#: Options of the small helpers (version 3, compile time): LLVM-level inlining
#: (``forceinline``: LLVM's alwaysinline) instead of Numba's IR-level
#: ``inline="always"``, whose IR copies the parfor passes of the parallel kernels
#: then deep-copied over and over (most of the 20-80 s first-call compile per
#: kernel).  ``_nrt=False``: no reference counting in the helpers (they borrow
#: their arrays from the caller, allocate nothing and return no array); with it,
#: a helper call costs no atomic incref/decref pair per array per output row,
#: which made plain non-IR-inlined helpers 20-30 % slower (``_nrt`` is a private
#: Numba option, Numba 0.68 here: a helper under it must never allocate, keep or
#: return an array).  ``error_model="numpy"``
#: as in the parfor body (no zero-division branch in ``/`` loops: it kept the
#: average row pass from vectorizing).  Helpers returning a view (``_tap_view``)
#: or whose loops need the kernel's context (the adaptive index row pass: 1.2x
#: slower as a separate function; the version-1 helpers of ``max_pool2d_rows``:
#: 5-9 % slower) stay IR-inlined.
_HELPER = dict(cache=True, forceinline=True, _nrt=False, error_model="numpy")

__all__ = ["max_pool2d_sep", "max_pool2d_sep_idx", "avg_pool2d_sep", "adaptive_max_pool2d_sep",
           "adaptive_max_pool2d_sep_idx", "adaptive_avg_pool2d_planes", "axis_has_empty_window",
           "max_pool2d_rows", "avg_pool2d_rows", "adaptive_max_pool2d_planes"]


@njit(**_HELPER)
def _col_range(wo, sw, off, w_in):
    """[lo, hi) of ox with 0 <= ox*sw + off < w_in."""
    lo = 0
    if off < 0:
        lo = (-off + sw - 1) // sw
    if w_in - 1 - off < 0:
        return lo, lo
    hi = min(wo, (w_in - 1 - off) // sw + 1)
    return lo, max(lo, hi)


@njit(cache=True, inline="always")
def _tap_view(src, lo, hi, sw, off):
    """src[lo*sw + off + q*sw] for q in [0, hi-lo) as a view indexed by q alone.

    (Indexing with ``q`` only, after slicing, keeps Numba from emitting
    negative-index wraparound selects that block vectorization.)
    """
    return src[lo * sw + off:(hi - 1) * sw + off + 1:sw]


@njit(cache=True, inline="always")  # v1 (rows kernel): IR-inlined, as measured
def _max_update_idx(om, im, s, rb, sw):
    for q in range(om.shape[0]):
        v = s[q]
        m = om[q]
        take = (v > m) or (v != v)
        om[q] = v if take else m
        im[q] = rb + q * sw if take else im[q]


@njit(cache=True, inline="always")  # v1 (rows kernel): IR-inlined, as measured
def _max_update_idx_s2(om, im, s, rb):
    """As _max_update_idx for stride 2, reading s[2q] from a contiguous view.

    (``s[2*q]`` on a contiguous row vectorizes as interleaved loads; a
    strided view ``src[a::2]`` does not.)
    """
    for q in range(om.shape[0]):
        v = s[2 * q]
        m = om[q]
        take = (v > m) or (v != v)
        om[q] = v if take else m
        im[q] = rb + 2 * q if take else im[q]


@njit(cache=True, inline="always")  # v1 (rows kernel): IR-inlined, as measured
def _max_update_s2(om, s):
    for q in range(om.shape[0]):
        v = s[2 * q]
        m = om[q]
        take = (v > m) or (v != v)
        om[q] = v if take else m


@njit(cache=True, inline="always")  # v1 (rows kernel): IR-inlined, as measured
def _max_update(om, s):
    for q in range(om.shape[0]):
        v = s[q]
        m = om[q]
        take = (v > m) or (v != v)
        om[q] = v if take else m


@njit(cache=True, inline="always")  # v1 (rows kernel): IR-inlined, as measured
def _max_edge(orow, idx, want_idx, n, c, oy, src, r, w_in, lo, hi, sw, off):
    """One tap for outputs [lo, hi) of a row, scalar (the few edge outputs)."""
    for ox in range(lo, hi):
        v = src[ox * sw + off]
        m = orow[ox]
        if (v > m) or (v != v):
            orow[ox] = v
            if want_idx:
                idx[n, c, oy, ox] = r * w_in + ox * sw + off


@njit(**_HELPER)
def _mx(v, m):
    """PyTorch's update test: the new value wins if larger or NaN."""
    return (v > m) | (v != v)


@njit(cache=True, inline="always")  # v1 (rows kernel): IR-inlined, as measured
def _mf_idx1(om, im, s0, s1, s2, rb, d1, d2):
    for q in range(om.shape[0]):
        m = om[q]
        bi = im[q]
        v = s0[q]
        t = _mx(v, m)
        m = v if t else m
        bi = rb + q if t else bi
        v = s1[q]
        t = _mx(v, m)
        m = v if t else m
        bi = rb + q + d1 if t else bi
        v = s2[q]
        t = _mx(v, m)
        m = v if t else m
        bi = rb + q + d2 if t else bi
        om[q] = m
        im[q] = bi


@njit(cache=True, inline="always")  # v1 (rows kernel): IR-inlined, as measured
def _mf_idx2(om, im, s0, s1, s2, rb, d1, d2):
    for q in range(om.shape[0]):
        m = om[q]
        bi = im[q]
        v = s0[2 * q]
        t = _mx(v, m)
        m = v if t else m
        bi = rb + 2 * q if t else bi
        v = s1[2 * q]
        t = _mx(v, m)
        m = v if t else m
        bi = rb + 2 * q + d1 if t else bi
        v = s2[2 * q]
        t = _mx(v, m)
        m = v if t else m
        bi = rb + 2 * q + d2 if t else bi
        om[q] = m
        im[q] = bi


@njit(cache=True, inline="always")  # v1 (rows kernel): IR-inlined, as measured
def _mf1(om, s0, s1, s2):
    for q in range(om.shape[0]):
        m = om[q]
        v = s0[q]
        m = v if _mx(v, m) else m
        v = s1[q]
        m = v if _mx(v, m) else m
        v = s2[q]
        om[q] = v if _mx(v, m) else m


@njit(cache=True, inline="always")  # v1 (rows kernel): IR-inlined, as measured
def _mf2(om, s0, s1, s2):
    for q in range(om.shape[0]):
        m = om[q]
        v = s0[2 * q]
        m = v if _mx(v, m) else m
        v = s1[2 * q]
        m = v if _mx(v, m) else m
        v = s2[2 * q]
        om[q] = v if _mx(v, m) else m


@njit(cache=True, inline="always")  # v1 (rows kernel): IR-inlined, as measured
def _max_fused(om, im, want_idx, s0, s1, s2, ntap, rb, dw, two):
    """2 or 3 taps of one kernel row, in order, for every output of ``om`` (one pass).

    ``s_j`` are contiguous views where tap j of output q is ``s_j[q]`` (stride 1)
    or ``s_j[2q]`` (``two``: stride 2); the index of that tap is
    ``rb + q*stride + j*dw``.  Two taps run as three with the second repeated
    (a repeat never changes the value or the index), so every loop is
    branch-free and vectorizes.
    """
    d2 = 2 * dw
    if ntap == 2:
        s2 = s1
        d2 = dw
    if want_idx:
        if two:
            _mf_idx2(om, im, s0, s1, s2, rb, dw, d2)
        else:
            _mf_idx1(om, im, s0, s1, s2, rb, dw, d2)
    else:
        if two:
            _mf2(om, s0, s1, s2)
        else:
            _mf1(om, s0, s1, s2)


@njit(parallel=True, cache=True)
def max_pool2d_rows(x, out, idx, want_idx, kh, kw, sh, sw, ph, pw, dh, dw):
    """out[n,c,oy,ox] (and idx) by PyTorch's max rule; x: (N,C,H,W), out/idx: (N,C,Ho,Wo)."""
    n_img, ch, h, w_in = x.shape
    ho, wo = out.shape[2], out.shape[3]
    ninf = -np.inf
    for t in prange(n_img * ch):
        n = t // ch
        c = t % ch
        plane = x[n, c]
        for oy in range(ho):
            hs = oy * sh - ph
            h0 = hs
            while h0 < 0:
                h0 += dh
            orow = out[n, c, oy]
            for ox in range(wo):
                orow[ox] = ninf
            if want_idx:
                irow = idx[n, c, oy]
                first = min(wo, (pw + sw - 1) // sw)  # windows from here start in bounds
                for ox in range(first):
                    w0 = ox * sw - pw
                    while w0 < 0:
                        w0 += dw
                    irow[ox] = h0 * w_in + w0
                rest = irow[first:]
                rb0 = h0 * w_in + first * sw - pw
                for q in range(wo - first):
                    rest[q] = rb0 + q * sw
            for i in range(kh):
                r = hs + i * dh
                if r < 0 or r >= h:
                    continue
                src = plane[r]
                # outputs [c_lo, c_hi) have every tap of this kernel row in bounds
                c_lo, c_hi = 0, 0
                if (kw == 2 or kw == 3) and (sw == 1 or sw == 2):
                    c_lo = _col_range(wo, sw, -pw, w_in)[0]
                    c_hi = max(c_lo, _col_range(wo, sw, (kw - 1) * dw - pw, w_in)[1])
                    if c_hi > c_lo:
                        base = c_lo * sw - pw
                        n_in = c_hi - c_lo
                        ext = (n_in - 1) * sw + 1
                        s0 = src[base:base + ext]
                        s1 = src[base + dw:base + dw + ext]
                        s2 = src[base + (kw - 1) * dw:base + (kw - 1) * dw + ext]
                        imv = idx[n, c, oy, c_lo:c_hi] if want_idx else idx[0, 0, 0, 0:1]
                        _max_fused(orow[c_lo:c_hi], imv, want_idx, s0, s1, s2, kw,
                                   r * w_in + base, dw, sw == 2)
                for j in range(kw):
                    off = j * dw - pw
                    lo, hi = _col_range(wo, sw, off, w_in)
                    if c_hi > c_lo:  # only the edges remain: [lo, c_lo) and [c_hi, hi)
                        if lo < c_lo:
                            hi2 = min(hi, c_lo)
                        else:
                            lo = max(lo, c_hi)
                            hi2 = hi
                        if lo < c_lo and hi > c_hi:
                            # both edges: do the right one separately
                            _max_edge(orow, idx, want_idx, n, c, oy, src, r, w_in,
                                      c_hi, hi, sw, off)
                        hi = hi2
                    if hi <= lo:
                        continue
                    om = orow[lo:hi]
                    if want_idx:
                        im = idx[n, c, oy, lo:hi]
                        rb = r * w_in + lo * sw + off
                        if sw == 1:
                            _max_update_idx(om, im, src[lo + off:hi + off], rb, 1)
                        elif sw == 2:
                            _max_update_idx_s2(om, im, src[lo * 2 + off:], rb)
                        else:
                            _max_update_idx(om, im, _tap_view(src, lo, hi, sw, off), rb, sw)
                    else:
                        if sw == 1:
                            _max_update(om, src[lo + off:hi + off])
                        elif sw == 2:
                            _max_update_s2(om, src[lo * 2 + off:])
                        else:
                            _max_update(om, _tap_view(src, lo, hi, sw, off))


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def avg_pool2d_rows(x, out, divisor, kh, kw, sh, sw, ph, pw):
    """out = (sum of in-bounds taps) / divisor[oy, ox]; divisor: (Ho, Wo) in x's dtype."""
    n_img, ch, h, w_in = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for t in prange(n_img * ch):
        n = t // ch
        c = t % ch
        plane = x[n, c]
        for oy in range(ho):
            orow = out[n, c, oy]
            for ox in range(wo):
                orow[ox] = 0.0
            hs = oy * sh - ph
            for i in range(kh):
                r = hs + i
                if r < 0 or r >= h:
                    continue
                src = plane[r]
                for j in range(kw):
                    off = j - pw
                    lo, hi = _col_range(wo, sw, off, w_in)
                    if hi <= lo:
                        continue
                    om = orow[lo:hi]
                    if sw == 1:
                        s1 = src[lo + off:hi + off]
                        for q in range(hi - lo):
                            om[q] += s1[q]
                    elif sw == 2:
                        s2 = src[lo * 2 + off:]
                        for q in range(hi - lo):
                            om[q] += s2[2 * q]
                    else:
                        ss = _tap_view(src, lo, hi, sw, off)
                        for q in range(hi - lo):
                            om[q] += ss[q]
            drow = divisor[oy]
            for ox in range(wo):
                orow[ox] = orow[ox] / drow[ox]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def adaptive_avg_pool2d_planes(x, out):
    """Adaptive average pooling, one task per (n, c) plane.

    Per output row: the window's input rows are summed into one row of
    column sums (long contiguous vector loops), then each output sums its
    column range of that row.
    """
    n_img, ch, h, w_in = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for t in prange(n_img * ch):
        n = t // ch
        c = t % ch
        plane = x[n, c]
        colsum = np.empty(w_in, dtype=out.dtype)
        for oy in range(ho):
            h0 = (oy * h) // ho
            h1 = ((oy + 1) * h + ho - 1) // ho
            first = plane[h0]
            for q in range(w_in):
                colsum[q] = first[q]
            for r in range(h0 + 1, h1):
                src = plane[r]
                for q in range(w_in):
                    colsum[q] += src[q]
            for ox in range(wo):
                w0 = (ox * w_in) // wo
                w1 = ((ox + 1) * w_in + wo - 1) // wo
                s = 0.0
                for q in range(w0, w1):
                    s += colsum[q]
                out[n, c, oy, ox] = s / ((h1 - h0) * (w1 - w0))


@njit(parallel=True, cache=True)
def adaptive_max_pool2d_planes(x, out, idx, want_idx):
    """Adaptive max pooling by PyTorch's max rule, one task per (n, c) plane."""
    n_img, ch, h, w_in = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for t in prange(n_img * ch):
        n = t // ch
        c = t % ch
        plane = x[n, c]
        for oy in range(ho):
            h0 = (oy * h) // ho
            h1 = ((oy + 1) * h + ho - 1) // ho
            for ox in range(wo):
                w0 = (ox * w_in) // wo
                w1 = ((ox + 1) * w_in + wo - 1) // wo
                best = h0 * w_in + w0
                m = -np.inf
                for r in range(h0, h1):
                    src = plane[r]
                    for q in range(w0, w1):
                        v = src[q]
                        if v > m or v != v:
                            m = v
                            best = r * w_in + q
                out[n, c, oy, ox] = m
                if want_idx:
                    idx[n, c, oy, ox] = best



# ---------------------------------------------------------------------------
# version 2: separable max pooling (a column pass, then a row pass)
# ---------------------------------------------------------------------------
# PyTorch's sequential rule has an order-free form (read from the update
# ``v > m or isnan(v)`` scanned in row-major window order, where the flat index
# h*W + w grows with the scan):
#     any NaN in the window -> NaN, index = the LARGEST flat index holding a NaN;
#     otherwise             -> M = the maximum, index = the SMALLEST flat index holding M
#                              (an all -inf window: its first in-bounds element).
# So the window reduction may run in any order with the combine ``_take``
# below (values alone: ``_mx`` in any order).  A k_h x k_w window then splits
# into a column pass (fold the window's input rows, in order, into one padded
# row ``col``: long contiguous vector loops) and a row pass (fold k_w entries
# of ``col`` per output at stride s_w).
#
# Every fold writes to an array other than the ones it reads: an in-place
# ``acc[q] = v if take else acc[q]`` is turned by LLVM into a masked store
# (vmaskmovps), microcoded and ~5x slower on this AMD CPU than a blend and a
# plain store.  Long windows therefore ping-pong between ``col`` and ``tmp``.

@njit(**_HELPER)
def _take(m, bi, v, iv):
    """Does (v, iv) replace the running (m, bi)?  Order-free form of PyTorch's rule."""
    return (((v != v) & ((m == m) | (iv > bi))) | (v > m)) | ((v == m) & (iv < bi))


@njit(**_HELPER)
def _fold_val(dst, plane, ra, rb, rc, rd, n):
    """dst[q] = plane rows ra, rb, rc, rd (the first n, 1 <= n <= 4) folded in order.

    (Rows are read as ``plane[r, q]``, not through per-row views: building a
    view per output row cost more than the vector loop itself.)
    """
    if n == 1:
        for q in range(dst.shape[0]):
            dst[q] = plane[ra, q]
    elif n == 2:
        for q in range(dst.shape[0]):
            m = plane[ra, q]
            v = plane[rb, q]
            dst[q] = v if _mx(v, m) else m
    elif n == 3:
        for q in range(dst.shape[0]):
            m = plane[ra, q]
            v = plane[rb, q]
            m = v if _mx(v, m) else m
            v = plane[rc, q]
            dst[q] = v if _mx(v, m) else m
    else:
        for q in range(dst.shape[0]):
            m = plane[ra, q]
            v = plane[rb, q]
            m = v if _mx(v, m) else m
            v = plane[rc, q]
            m = v if _mx(v, m) else m
            v = plane[rd, q]
            dst[q] = v if _mx(v, m) else m


@njit(**_HELPER)
def _fold_buf_val(dst, buf, plane, rb, rc, rd, n):
    """dst = the running fold ``buf`` then rows rb[, rc[, rd]] (n = 1..3 of them)."""
    if n == 1:
        for q in range(dst.shape[0]):
            m = buf[q]
            v = plane[rb, q]
            dst[q] = v if _mx(v, m) else m
    elif n == 2:
        for q in range(dst.shape[0]):
            m = buf[q]
            v = plane[rb, q]
            m = v if _mx(v, m) else m
            v = plane[rc, q]
            dst[q] = v if _mx(v, m) else m
    else:
        for q in range(dst.shape[0]):
            m = buf[q]
            v = plane[rb, q]
            m = v if _mx(v, m) else m
            v = plane[rc, q]
            m = v if _mx(v, m) else m
            v = plane[rd, q]
            dst[q] = v if _mx(v, m) else m


@njit(**_HELPER)
def _fold_rows_val(col, tmp, plane, r0, nr, dr):
    """col[:] = rows r0, r0+dr, ..., (nr >= 1 rows of plane) folded in order.

    col, tmp: distinct buffers of the row's width; 4 rows in the first pass,
    then the running fold and 3 more rows per pass, ping-ponging so the
    last pass writes col.
    """
    passes = 1 + (max(0, nr - 4) + 2) // 3
    in_col = passes % 2 == 1  # where the first pass writes
    n = min(4, nr)
    rb, rc, rd = r0 + dr * min(1, n - 1), r0 + dr * min(2, n - 1), r0 + dr * min(3, n - 1)
    if in_col:
        _fold_val(col, plane, r0, rb, rc, rd, n)
    else:
        _fold_val(tmp, plane, r0, rb, rc, rd, n)
    i = n
    while i < nr:
        n = min(3, nr - i)
        rb = r0 + i * dr
        rc, rd = rb + dr * min(1, n - 1), rb + dr * min(2, n - 1)
        if in_col:
            _fold_buf_val(tmp, col, plane, rb, rc, rd, n)
        else:
            _fold_buf_val(col, tmp, plane, rb, rc, rd, n)
        in_col = not in_col
        i += n


@njit(**_HELPER)
def _fold_idx(dst, di, plane, ra, rb, rc, rd, n, w_in):
    """As _fold_val, with di[q] = flat index r*w_in + q of each column's winner."""
    ba, bb, bc, bd = ra * w_in, rb * w_in, rc * w_in, rd * w_in
    if n == 1:
        for q in range(dst.shape[0]):
            dst[q] = plane[ra, q]
            di[q] = ba + q
    elif n == 2:
        for q in range(dst.shape[0]):
            m = plane[ra, q]
            v = plane[rb, q]
            t = _mx(v, m)
            dst[q] = v if t else m
            di[q] = (bb if t else ba) + q
    elif n == 3:
        for q in range(dst.shape[0]):
            m = plane[ra, q]
            v = plane[rb, q]
            t = _mx(v, m)
            m = v if t else m
            bi = bb if t else ba
            v = plane[rc, q]
            t = _mx(v, m)
            dst[q] = v if t else m
            di[q] = (bc if t else bi) + q
    else:
        for q in range(dst.shape[0]):
            m = plane[ra, q]
            v = plane[rb, q]
            t = _mx(v, m)
            m = v if t else m
            bi = bb if t else ba
            v = plane[rc, q]
            t = _mx(v, m)
            m = v if t else m
            bi = bc if t else bi
            v = plane[rd, q]
            t = _mx(v, m)
            dst[q] = v if t else m
            di[q] = (bd if t else bi) + q


@njit(**_HELPER)
def _fold_buf_idx(dst, di, buf, bi_, plane, rb, rc, rd, n, w_in):
    """As _fold_buf_val, with indices (bi_: the running fold's)."""
    bb, bc, bd = rb * w_in, rc * w_in, rd * w_in
    if n == 1:
        for q in range(dst.shape[0]):
            m = buf[q]
            v = plane[rb, q]
            t = _mx(v, m)
            dst[q] = v if t else m
            di[q] = bb + q if t else bi_[q]
    elif n == 2:
        for q in range(dst.shape[0]):
            m = buf[q]
            bi = bi_[q]
            v = plane[rb, q]
            t = _mx(v, m)
            m = v if t else m
            bi = bb + q if t else bi
            v = plane[rc, q]
            t = _mx(v, m)
            dst[q] = v if t else m
            di[q] = bc + q if t else bi
    else:
        for q in range(dst.shape[0]):
            m = buf[q]
            bi = bi_[q]
            v = plane[rb, q]
            t = _mx(v, m)
            m = v if t else m
            bi = bb + q if t else bi
            v = plane[rc, q]
            t = _mx(v, m)
            m = v if t else m
            bi = bc + q if t else bi
            v = plane[rd, q]
            t = _mx(v, m)
            dst[q] = v if t else m
            di[q] = bd + q if t else bi


@njit(**_HELPER)
def _fold_rows_idx(col, ci, tmp, ti, plane, r0, nr, dr, w_in):
    """As _fold_rows_val, with the flat index of each column's winner in ci."""
    passes = 1 + (max(0, nr - 4) + 2) // 3
    in_col = passes % 2 == 1
    n = min(4, nr)
    rb, rc, rd = r0 + dr * min(1, n - 1), r0 + dr * min(2, n - 1), r0 + dr * min(3, n - 1)
    if in_col:
        _fold_idx(col, ci, plane, r0, rb, rc, rd, n, w_in)
    else:
        _fold_idx(tmp, ti, plane, r0, rb, rc, rd, n, w_in)
    i = n
    while i < nr:
        n = min(3, nr - i)
        rb = r0 + i * dr
        rc, rd = rb + dr * min(1, n - 1), rb + dr * min(2, n - 1)
        if in_col:
            _fold_buf_idx(tmp, ti, col, ci, plane, rb, rc, rd, n, w_in)
        else:
            _fold_buf_idx(col, ci, tmp, ti, plane, rb, rc, rd, n, w_in)
        in_col = not in_col
        i += n


@njit(**_HELPER)
def _row_pass_val(oplane, oy, col, kw, sw, dw, ta, tb):
    """oplane[oy, q] = max rule over col[q*sw + j*dw], j < kw (col: the padded folded row)."""
    n = oplane.shape[1]
    if dw == 1 and sw == 2 and kw == 2:
        for q in range(n):
            m = col[2 * q]
            v = col[2 * q + 1]
            oplane[oy, q] = v if _mx(v, m) else m
    elif dw == 1 and sw == 2 and kw == 3:
        for q in range(n):
            m = col[2 * q]
            v = col[2 * q + 1]
            m = v if _mx(v, m) else m
            v = col[2 * q + 2]
            oplane[oy, q] = v if _mx(v, m) else m
    elif dw == 1 and sw == 1 and kw == 2:
        for q in range(n):
            m = col[q]
            v = col[q + 1]
            oplane[oy, q] = v if _mx(v, m) else m
    elif dw == 1 and sw == 1 and kw == 3:
        for q in range(n):
            m = col[q]
            v = col[q + 1]
            m = v if _mx(v, m) else m
            v = col[q + 2]
            oplane[oy, q] = v if _mx(v, m) else m
    elif kw == 1:
        for q in range(n):
            oplane[oy, q] = col[q * sw]
    elif kw == 2:
        _tap_pass_val(oplane[oy], col, col, dw, sw, True)
    else:  # tap by tap over the row, as in _row_pass_idx
        _tap_pass_val(ta, col, col, dw, sw, True)
        in_a = True
        for j in range(2, kw):
            if j == kw - 1:
                if in_a:
                    _tap_pass_val(oplane[oy], ta, col, j * dw, sw, False)
                else:
                    _tap_pass_val(oplane[oy], tb, col, j * dw, sw, False)
            elif in_a:
                _tap_pass_val(tb, ta, col, j * dw, sw, False)
            else:
                _tap_pass_val(ta, tb, col, j * dw, sw, False)
            in_a = not in_a


@njit(**_HELPER)
def _tap_pass_val(dst, src, col, off, sw, src_strided):
    """dst[q] = src[q] (or tap 0, col[q*sw], when ``src_strided``) folded with col[off + q*sw]."""
    n = dst.shape[0]
    if sw == 1:
        c = col[off:off + n]
        a = src[:n]
        for q in range(n):
            m = a[q]
            v = c[q]
            dst[q] = v if _mx(v, m) else m
    elif sw == 2:
        c = col[off:]
        if src_strided:
            for q in range(n):
                m = src[2 * q]
                v = c[2 * q]
                dst[q] = v if _mx(v, m) else m
        else:
            for q in range(n):
                m = src[q]
                v = c[2 * q]
                dst[q] = v if _mx(v, m) else m
    else:
        for q in range(n):
            m = src[q * sw] if src_strided else src[q]
            v = col[off + q * sw]
            dst[q] = v if _mx(v, m) else m


@njit(**_HELPER)
def _row_pass_idx(oplane, iplane, oy, col, ci, kw, sw, dw, ta, tai, tb, tbi):
    """As _row_pass_val with indices (ci: flat index of each col entry), order-free combine.

    Other shapes than the fused ones run tap by tap over the whole output row
    (vector loops at s_w = 1 and 2), ping-ponging between the row buffers
    ``ta``/``tb`` (length Wo) and writing the output row in the last pass.
    """
    n = oplane.shape[1]
    if dw == 1 and sw == 1 and kw == 2:
        for q in range(n):
            m = col[q]
            bi = ci[q]
            v = col[q + 1]
            iv = ci[q + 1]
            t = _take(m, bi, v, iv)
            oplane[oy, q] = v if t else m
            iplane[oy, q] = iv if t else bi
    elif dw == 1 and sw == 1 and kw == 3:
        for q in range(n):
            m = col[q]
            bi = ci[q]
            v = col[q + 1]
            iv = ci[q + 1]
            t = _take(m, bi, v, iv)
            m = v if t else m
            bi = iv if t else bi
            v = col[q + 2]
            iv = ci[q + 2]
            t = _take(m, bi, v, iv)
            oplane[oy, q] = v if t else m
            iplane[oy, q] = iv if t else bi
    elif dw == 1 and sw == 2 and kw == 2:
        for q in range(n):
            m = col[2 * q]
            bi = ci[2 * q]
            v = col[2 * q + 1]
            iv = ci[2 * q + 1]
            t = _take(m, bi, v, iv)
            oplane[oy, q] = v if t else m
            iplane[oy, q] = iv if t else bi
    elif dw == 1 and sw == 2 and kw == 3:
        for q in range(n):
            m = col[2 * q]
            bi = ci[2 * q]
            v = col[2 * q + 1]
            iv = ci[2 * q + 1]
            t = _take(m, bi, v, iv)
            m = v if t else m
            bi = iv if t else bi
            v = col[2 * q + 2]
            iv = ci[2 * q + 2]
            t = _take(m, bi, v, iv)
            oplane[oy, q] = v if t else m
            iplane[oy, q] = iv if t else bi
    elif kw == 1:
        for q in range(n):
            oplane[oy, q] = col[q * sw]
            iplane[oy, q] = ci[q * sw]
    elif kw == 2:
        _tap_pass_idx(oplane[oy], iplane[oy], col, ci, 0, col, ci, dw, sw, True)
    else:
        _tap_pass_idx(ta, tai, col, ci, 0, col, ci, dw, sw, True)
        in_a = True
        for j in range(2, kw):
            if j == kw - 1:
                if in_a:
                    _tap_pass_idx(oplane[oy], iplane[oy], ta, tai, 0, col, ci, j * dw, sw, False)
                else:
                    _tap_pass_idx(oplane[oy], iplane[oy], tb, tbi, 0, col, ci, j * dw, sw, False)
            elif in_a:
                _tap_pass_idx(tb, tbi, ta, tai, 0, col, ci, j * dw, sw, False)
            else:
                _tap_pass_idx(ta, tai, tb, tbi, 0, col, ci, j * dw, sw, False)
            in_a = not in_a


@njit(**_HELPER)
def _tap_pass_idx(dst, di, src, si, s_off, col, ci, off, sw, src_strided):
    """(dst, di)[q] = (src, si)[q] combined with the tap (col, ci)[off + q*sw].

    ``src_strided``: the running value is itself tap 0 of col, read at q*sw
    (first pass); otherwise src/si are row buffers read at q.
    """
    n = dst.shape[0]
    if sw == 1:
        c = col[off:off + n]
        cc = ci[off:off + n]
        if src_strided:
            a = src[s_off:s_off + n]
            ai = si[s_off:s_off + n]
        else:
            a = src[:n]
            ai = si[:n]
        for q in range(n):
            m = a[q]
            bi = ai[q]
            v = c[q]
            iv = cc[q]
            t = _take(m, bi, v, iv)
            dst[q] = v if t else m
            di[q] = iv if t else bi
    elif sw == 2:
        c = col[off:]
        cc = ci[off:]
        if src_strided:
            for q in range(n):
                m = src[2 * q]
                bi = si[2 * q]
                v = c[2 * q]
                iv = cc[2 * q]
                t = _take(m, bi, v, iv)
                dst[q] = v if t else m
                di[q] = iv if t else bi
        else:
            for q in range(n):
                m = src[q]
                bi = si[q]
                v = c[2 * q]
                iv = cc[2 * q]
                t = _take(m, bi, v, iv)
                dst[q] = v if t else m
                di[q] = iv if t else bi
    else:
        for q in range(n):
            if src_strided:
                m = src[q * sw]
                bi = si[q * sw]
            else:
                m = src[q]
                bi = si[q]
            v = col[off + q * sw]
            iv = ci[off + q * sw]
            t = _take(m, bi, v, iv)
            dst[q] = v if t else m
            di[q] = iv if t else bi


@njit(cache=True)
def axis_has_empty_window(n, k, s, p, d, n_out):
    """Does some output's window along this axis have no tap inside [0, n)?  (only with d > 1)"""
    for o in range(n_out):
        start = o * s - p
        first = start
        if first < 0:
            first += (-first + d - 1) // d * d
        if first >= n or first > start + (k - 1) * d:
            return True
    return False


@njit(**_HELPER)
def _tap_rows(hs, kh, dh, h):
    """[i0, i1): kernel rows i with 0 <= hs + i*dh < h."""
    i0 = 0
    if hs < 0:
        i0 = (-hs + dh - 1) // dh
    i1 = kh
    last = (h - 1 - hs) // dh + 1 if h - 1 - hs >= 0 else 0
    if last < i1:
        i1 = last
    return i0, max(i0, i1)


@njit(**_HELPER)
def _task_rows(t, nrb, rows_per, ho):
    """(plane, first output row, end output row) of task t."""
    oy0 = (t % nrb) * rows_per
    return t // nrb, oy0, min(ho, oy0 + rows_per)


@njit(parallel=True, cache=True)
def max_pool2d_sep(x, out, kh, kw, sh, sw, ph, pw, dh, dw, nchunk, nrb):
    """Values only; every window has an in-bounds tap (see ``axis_has_empty_window``).

    Tasks: (plane, block of output rows), ``nrb`` blocks per plane; ``nchunk``
    contiguous ranges of tasks, one per thread.
    """
    n_img, ch, h, w_in = x.shape
    ho, wo = out.shape[2], out.shape[3]
    planes = n_img * ch
    xs = x.reshape(planes, h, w_in)
    os_ = out.reshape(planes, ho, wo)
    wp = max(pw + w_in, (wo - 1) * sw + (kw - 1) * dw + 1)
    rows_per = (ho + nrb - 1) // nrb
    ntask = planes * nrb
    for c in prange(nchunk):
        col = np.full(wp, -np.inf, dtype=x.dtype)  # -inf padding around the folded row
        tmp = np.empty(w_in, dtype=x.dtype)
        ta = np.empty(wo, dtype=x.dtype)  # row buffers of the tap-by-tap row pass
        tb = np.empty(wo, dtype=x.dtype)
        mid = col[pw:pw + w_in]
        for t in range(c * ntask // nchunk, (c + 1) * ntask // nchunk):
            pl, oy0, oy1 = _task_rows(t, nrb, rows_per, ho)
            plane = xs[pl]
            oplane = os_[pl]
            for oy in range(oy0, oy1):
                hs = oy * sh - ph
                i0, i1 = _tap_rows(hs, kh, dh, h)
                _fold_rows_val(mid, tmp, plane, hs + i0 * dh, i1 - i0, dh)
                _row_pass_val(oplane, oy, col, kw, sw, dw, ta, tb)


@njit(parallel=True, cache=True)
def max_pool2d_sep_idx(x, out, idx, kh, kw, sh, sw, ph, pw, dh, dw, nchunk, nrb, big):
    """As max_pool2d_sep, with int64 flat indices; ``big`` > any flat index (padding's)."""
    n_img, ch, h, w_in = x.shape
    ho, wo = out.shape[2], out.shape[3]
    planes = n_img * ch
    xs = x.reshape(planes, h, w_in)
    os_ = out.reshape(planes, ho, wo)
    is_ = idx.reshape(planes, ho, wo)
    wp = max(pw + w_in, (wo - 1) * sw + (kw - 1) * dw + 1)
    rows_per = (ho + nrb - 1) // nrb
    ntask = planes * nrb
    for c in prange(nchunk):
        col = np.full(wp, -np.inf, dtype=x.dtype)
        ci = np.full(wp, big)  # big's type: int32 when the plane allows (8-wide selects)
        tmp = np.empty(w_in, dtype=x.dtype)
        ti = ci[:w_in].copy()
        ta = np.empty(wo, dtype=x.dtype)  # row buffers of the tap-by-tap row pass
        tb = np.empty(wo, dtype=x.dtype)
        tai = ci[:wo].copy()
        tbi = ci[:wo].copy()
        mid = col[pw:pw + w_in]
        mi = ci[pw:pw + w_in]
        for t in range(c * ntask // nchunk, (c + 1) * ntask // nchunk):
            pl, oy0, oy1 = _task_rows(t, nrb, rows_per, ho)
            plane = xs[pl]
            oplane = os_[pl]
            iplane = is_[pl]
            for oy in range(oy0, oy1):
                hs = oy * sh - ph
                i0, i1 = _tap_rows(hs, kh, dh, h)
                _fold_rows_idx(mid, mi, tmp, ti, plane, hs + i0 * dh, i1 - i0, dh, w_in)
                _row_pass_idx(oplane, iplane, oy, col, ci, kw, sw, dw, ta, tai, tb, tbi)


@njit(**_HELPER)
def _halve_val(dst, src, n):
    """dst[i] = src[2i], src[2i+1] folded, i < n (groups of an even width halve in place)."""
    for i in range(n):
        m = src[2 * i]
        v = src[2 * i + 1]
        dst[i] = v if _mx(v, m) else m


@njit(cache=True, inline="always")
def _halve_idx(dst, di, src, si, n):
    for i in range(n):
        m = src[2 * i]
        bi = si[2 * i]
        v = src[2 * i + 1]
        iv = si[2 * i + 1]
        t = _take(m, bi, v, iv)
        dst[i] = v if t else m
        di[i] = iv if t else bi


@njit(**_HELPER)
def _groups_val(orow, src, kk):
    """orow[ox] = fold of src[ox*kk : (ox+1)*kk] (kk >= 1)."""
    for ox in range(orow.shape[0]):
        m = src[ox * kk]
        for q in range(ox * kk + 1, (ox + 1) * kk):
            v = src[q]
            m = v if _mx(v, m) else m
        orow[ox] = m


@njit(cache=True, inline="always")
def _groups_idx(orow, irow, src, si, kk):
    for ox in range(orow.shape[0]):
        m = src[ox * kk]
        bi = si[ox * kk]
        for q in range(ox * kk + 1, (ox + 1) * kk):
            v = src[q]
            iv = si[q]
            t = _take(m, bi, v, iv)
            m = v if t else m
            bi = iv if t else bi
        orow[ox] = m
        irow[ox] = bi


@njit(**_HELPER)
def _adaptive_row_pass_val(orow, col, tmp, w_in):
    """orow[ox] = fold of col over adaptive column window ox.  Equal windows of an even
    width k (W = Wo*k) are halved pairwise over the whole row first (vector loops over
    stride-2 pairs; the rule is order-free), then folded by groups."""
    wo = orow.shape[0]
    if w_in % wo == 0 and (w_in // wo) % 2 == 0:
        kk = w_in // wo // 2
        _halve_val(tmp, col, wo * kk)
        in_tmp = True
        while kk % 2 == 0:
            kk //= 2
            if in_tmp:
                _halve_val(col, tmp, wo * kk)
            else:
                _halve_val(tmp, col, wo * kk)
            in_tmp = not in_tmp
        if in_tmp:
            _groups_val(orow, tmp, kk)
        else:
            _groups_val(orow, col, kk)
    else:
        for ox in range(wo):
            w0 = (ox * w_in) // wo
            w1 = ((ox + 1) * w_in + wo - 1) // wo
            m = col[w0]
            for q in range(w0 + 1, w1):
                v = col[q]
                m = v if _mx(v, m) else m
            orow[ox] = m


@njit(cache=True, inline="always")
def _adaptive_row_pass_idx(orow, irow, col, ci, tmp, ti, w_in):
    """As _adaptive_row_pass_val, with indices (order-free combine)."""
    wo = orow.shape[0]
    if w_in % wo == 0 and (w_in // wo) % 2 == 0:
        kk = w_in // wo // 2
        _halve_idx(tmp, ti, col, ci, wo * kk)
        in_tmp = True
        while kk % 2 == 0:
            kk //= 2
            if in_tmp:
                _halve_idx(col, ci, tmp, ti, wo * kk)
            else:
                _halve_idx(tmp, ti, col, ci, wo * kk)
            in_tmp = not in_tmp
        if in_tmp:
            _groups_idx(orow, irow, tmp, ti, kk)
        else:
            _groups_idx(orow, irow, col, ci, kk)
    else:
        for ox in range(wo):
            w0 = (ox * w_in) // wo
            w1 = ((ox + 1) * w_in + wo - 1) // wo
            m = col[w0]
            bi = ci[w0]
            for q in range(w0 + 1, w1):
                v = col[q]
                iv = ci[q]
                t = _take(m, bi, v, iv)
                m = v if t else m
                bi = iv if t else bi
            orow[ox] = m
            irow[ox] = bi


@njit(parallel=True, cache=True)
def adaptive_max_pool2d_sep(x, out, nchunk, nrb):
    """Adaptive max pooling, values only: per output row, its window rows folded into one
    row (vector loops), then each output folds its column range of that row."""
    n_img, ch, h, w_in = x.shape
    ho, wo = out.shape[2], out.shape[3]
    planes = n_img * ch
    xs = x.reshape(planes, h, w_in)
    os_ = out.reshape(planes, ho, wo)
    rows_per = (ho + nrb - 1) // nrb
    ntask = planes * nrb
    for c in prange(nchunk):
        col = np.empty(w_in, dtype=x.dtype)
        tmp = np.empty(w_in, dtype=x.dtype)
        for t in range(c * ntask // nchunk, (c + 1) * ntask // nchunk):
            pl, oy0, oy1 = _task_rows(t, nrb, rows_per, ho)
            plane = xs[pl]
            for oy in range(oy0, oy1):
                h0 = (oy * h) // ho
                h1 = ((oy + 1) * h + ho - 1) // ho
                _fold_rows_val(col, tmp, plane, h0, h1 - h0, 1)
                _adaptive_row_pass_val(os_[pl, oy], col, tmp, w_in)


@njit(parallel=True, cache=True)
def adaptive_max_pool2d_sep_idx(x, out, idx, nchunk, nrb, big):
    """As adaptive_max_pool2d_sep, with int64 flat indices (order-free combine across columns)."""
    n_img, ch, h, w_in = x.shape
    ho, wo = out.shape[2], out.shape[3]
    planes = n_img * ch
    xs = x.reshape(planes, h, w_in)
    os_ = out.reshape(planes, ho, wo)
    is_ = idx.reshape(planes, ho, wo)
    rows_per = (ho + nrb - 1) // nrb
    ntask = planes * nrb
    for c in prange(nchunk):
        col = np.empty(w_in, dtype=x.dtype)
        ci = np.full(w_in, big)
        tmp = np.empty(w_in, dtype=x.dtype)
        ti = np.full(w_in, big)
        for t in range(c * ntask // nchunk, (c + 1) * ntask // nchunk):
            pl, oy0, oy1 = _task_rows(t, nrb, rows_per, ho)
            plane = xs[pl]
            for oy in range(oy0, oy1):
                h0 = (oy * h) // ho
                h1 = ((oy + 1) * h + ho - 1) // ho
                _fold_rows_idx(col, ci, tmp, ti, plane, h0, h1 - h0, 1, w_in)
                _adaptive_row_pass_idx(os_[pl, oy], is_[pl, oy], col, ci, tmp, ti, w_in)


# ---------------------------------------------------------------------------
# version 2: separable average pooling
# ---------------------------------------------------------------------------
@njit(fastmath=FASTMATH, **_HELPER)
def _sum_rows(dst, plane, r0, nr):
    """dst[:] = sum of rows r0 .. r0+nr-1 of plane (nr >= 1): up to 4 rows per pass."""
    n = min(4, nr)
    if n == 1:
        for q in range(dst.shape[0]):
            dst[q] = plane[r0, q]
    elif n == 2:
        for q in range(dst.shape[0]):
            dst[q] = plane[r0, q] + plane[r0 + 1, q]
    elif n == 3:
        for q in range(dst.shape[0]):
            dst[q] = plane[r0, q] + plane[r0 + 1, q] + plane[r0 + 2, q]
    else:
        for q in range(dst.shape[0]):
            dst[q] = (plane[r0, q] + plane[r0 + 1, q]) + (plane[r0 + 2, q] + plane[r0 + 3, q])
    r = r0 + n
    while r < r0 + nr:
        n = min(3, r0 + nr - r)
        if n == 1:
            for q in range(dst.shape[0]):
                dst[q] += plane[r, q]
        elif n == 2:
            for q in range(dst.shape[0]):
                dst[q] += plane[r, q] + plane[r + 1, q]
        else:
            for q in range(dst.shape[0]):
                dst[q] += plane[r, q] + plane[r + 1, q] + plane[r + 2, q]
        r += n


@njit(fastmath=FASTMATH, **_HELPER)
def _row_pass_avg(oplane, oy, col, drow, kw, sw):
    """oplane[oy, q] = (sum of col[q*sw + j], j < kw) / drow[q] (col: zero-padded row sums)."""
    n = oplane.shape[1]
    if sw == 2 and kw == 2:
        for q in range(n):
            oplane[oy, q] = (col[2 * q] + col[2 * q + 1]) / drow[q]
    elif sw == 2 and kw == 3:
        for q in range(n):
            oplane[oy, q] = (col[2 * q] + col[2 * q + 1] + col[2 * q + 2]) / drow[q]
    elif sw == 1 and kw == 2:
        for q in range(n):
            oplane[oy, q] = (col[q] + col[q + 1]) / drow[q]
    elif sw == 1 and kw == 3:
        for q in range(n):
            oplane[oy, q] = (col[q] + col[q + 1] + col[q + 2]) / drow[q]
    else:
        for q in range(n):
            s = col[q * sw]
            for j in range(1, kw):
                s += col[q * sw + j]
            oplane[oy, q] = s / drow[q]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def avg_pool2d_sep(x, out, divisor, kh, kw, sh, sw, ph, pw, nchunk, nrb):
    """out = (sum of in-bounds taps) / divisor[oy, ox]: per output row, the window's rows
    summed into one zero-padded row (vector loops), then k_w entries per output at stride s_w.
    Tasks as in max_pool2d_sep."""
    n_img, ch, h, w_in = x.shape
    ho, wo = out.shape[2], out.shape[3]
    planes = n_img * ch
    xs = x.reshape(planes, h, w_in)
    os_ = out.reshape(planes, ho, wo)
    wp = max(pw + w_in, (wo - 1) * sw + kw)
    rows_per = (ho + nrb - 1) // nrb
    ntask = planes * nrb
    for c in prange(nchunk):
        col = np.zeros(wp, dtype=x.dtype)  # zero padding around the row sums
        mid = col[pw:pw + w_in]
        for t in range(c * ntask // nchunk, (c + 1) * ntask // nchunk):
            pl, oy0, oy1 = _task_rows(t, nrb, rows_per, ho)
            plane = xs[pl]
            oplane = os_[pl]
            for oy in range(oy0, oy1):
                hs = oy * sh - ph
                i0, i1 = _tap_rows(hs, kh, 1, h)
                if i1 > i0:
                    _sum_rows(mid, plane, hs + i0, i1 - i0)
                else:  # a ceil_mode window row below the input: nothing to sum
                    for q in range(w_in):
                        mid[q] = 0.0
                _row_pass_avg(oplane, oy, col, divisor[oy], kw, sw)
