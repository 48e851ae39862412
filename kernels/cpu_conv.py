"""CPU (Numba ``@njit``) convolution kernels: direct, im2col, transposed (gather and col2im).

Formulas (index notation, cross-correlation, NCHW, ``g = o // (C_out/G)``)::

    conv2d:           y[n,o,oy,ox] = b[o] + sum_{c,i,j} xp[n, g*Cg+c, oy*sh + i*dh, ox*sw + j*dw]
                                                      * w[o, c, i, j]
    conv_transpose2d: y[n,o,oy,ox] = b[o] + sum_{c,i,j : oy+ph-i*dh = iy*sh, ox+pw-j*dw = ix*sw}
                                             x[n, g*Cg+c, iy, ix] * w[g*Cg+c, o-g*Og, i, j]

``xp`` is the input padded by (top, bottom, left, right) in the padding mode.
The whole padded input is never materialized: padding is an *index map* per
axis (``rmap[padded_row] -> source row``, ``cmap[padded_col] -> source col``,
-1 for a zero), built by :func:`padding_index_map`; kernels build at most a
few padded rows, or (version 6) the padded planes of one im2col chunk.  Layouts: C-contiguous
NCHW float32/float64 (one compiled specialization per dtype), int64 maps.

FLOPs: conv2d 2*N*Co*Ho*Wo*Cg*kh*kw; transposed 2*N*Ci*H*W*Og*kh*kw.
Minimum bytes: input + weight + output, once each.

Parallel decomposition (``prange``, Numba's OpenMP layer, 2 threads here):
work is cut into tasks that never write the same output element (no
atomics, deterministic); tasks are dealt round-robin to ``nworkers`` slots so
each slot owns one row of a scratch array allocated once by the caller (no
allocation inside the parallel region, no page faults).  No shared memory
(CPU); working sets are a few rows (L1) or one im2col chunk (capped).

Versions:
1. conv2d_direct: per task (n, group, block of <=4 output channels, block of
   output rows).  Each padded input row needed is built once into a
   scratch row (interior copied, pad columns through cmap), then
   accumulated into <=4 output rows at once.  The innermost loop runs along
   the contiguous output row (vectorizes to vfmadd ymm with fastmath); for
   kw == 3 the three taps are fused in one pass (3 FMAs per store) and two
   output channels share each input load.  No workspace beyond one row.
2. im2col_fill: columns (Cg*kh*kw [+1 row of ones for the bias], nb*rows*cols)
   for a chunk of images / output rows / output columns; the GEMM is done
   by the caller with BLAS (NumPy matmul -> OpenBLAS sgemm/dgemm).  Interior
   columns are plain strided copies, only padding columns use cmap.
3. conv_transpose2d_direct: gather form, per task (n, o, rows): every
   output row sums its contributing input rows (no scatter across tasks).
4. col2im_add: the GEMM + col2im transposed convolution's second half:
   per (n, o) plane, adds the (kh, kw) column planes into the output in a
   fixed order (deterministic).
5. conv2d_plane_direct: depthwise / single-channel (C_in/G == 1), stride 1,
   any padding mode: a ring of padded input rows per task (each input row
   copied once), 3x3 fuses all 9 taps in one pass per output row (one store
   per 9 FMAs), kw 3/5 fuse a kernel row per pass.
6. pad_planes + wide_cols + uncol_wide: "wide" im2col for stride 1: the
   chunk's padded planes, then each column row is ONE contiguous copy
   (outputs are computed Wp wide, the Wp - Wo extra per row dropped after
   the GEMM).  Trades (Wp/Wo - 1) extra GEMM work for a fill without
   per-row overhead (3x faster on LeNet C3-like small rows).
7. (removed) conv2d_direct_flat, the flattened-plane direct kernel for small
   planes: superseded by the register-blocked kernel of ``cpu_igemm.py``,
   which uses the same "wide" trick with outputs held in registers (LeNet-5
   C3 on one core: 5.7 -> 2.3 ms).
8. col2im_phase_planes: col2im for stride > 1 through stride-phase planes
   (the "sub-pixel" view of a transposed convolution): output pixel
   (qy*sh + ry, qx*sw + rx) is element (qy, qx) of phase plane (ry, rx).
   The GEMM runs on x zero-padded to rows of ``bw`` (>= W) columns and each
   phase plane has rows of the same ``bw``, so every tap (i, j) of an image
   is ONE contiguous add of ~H*bw elements (vectorized, no clipping: taps
   outside the output land in a halo) instead of kh*H short interleaved
   read-modify-writes (version 4 ran at ~1.3 G adds/s on one core on the
   DCGAN-like layer, W = 28).  The output is then written once, phase rows
   interleaved, bias included (no fill pass, no output read; for sw == 2
   as one interleaved store group, which vectorizes: 2.0 -> 1.55 ms).
   Work: Og*kh*kw*H*bw adds per image; bytes: columns read once, output
   written once; scratch per worker sh*sw*BH*bw (a few KiB to ~1 MiB).
9. conv2d_plane_same: depthwise / single-channel, stride 1, Wo == W (e.g.
   "same" padding), any padding mode / dilation / multiplier.  No ring copy:
   interior rows (all kernel rows inside the input) are one pass per band of
   rows over the flattened plane, ``y_flat[f] = b + sum_ij w[i,j] *
   x_flat[f + (i*dh - pt)*W + j*dw - pl]`` (input and output share the row
   stride W), reading the input in place; 3x3 fuses the 9 taps in three row
   sums (fast-math without reassoc, so LLVM keeps three short FMA chains).
   The pl + pr columns per row that wrap into the neighbouring row are then
   recomputed through cmap (3x3: source columns hoisted out of the row loop),
   rows touching the row padding go through rmap.  Padded taps multiply a
   zero as in the reference.  Parallel: (plane, row band) units, one
   contiguous run per thread (each streams its own half of memory); bands of
   ~4096 outputs; no scratch.  Dispatched for 3x3 with W <= 256.  MobileNet
   depthwise 16x32x112x112, 2 threads, same process, interleaved (median /
   10th percentile, quiet moments): kernel alone v5 2.36 -> v9 1.9-2.1 ms;
   through fc.conv2d v5 2.77 -> v9 2.37 ms and 2.84 -> 2.43 ms (torch 5.07
   and 5.14 ms in those runs: v9/torch 0.47, v5/torch 0.55); v9/v5 0.83-0.86
   in every quiet run.  With another process holding a core, both take ~8 ms
   (waits at the thread barrier dominate) and the ratio is ~1.  Single core,
   L2-resident planes: v5 16.5-18, v9 12.4-13.7 cycles per 8 outputs (the
   flat pass ~10, the recomputed edge columns ~2.4).  Not used for 5x5
   (1.1x v5) nor for 1024-wide 3x3 filters (1.04-1.18x v5 when quiet).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

#: LLVM fast-math flags that let reductions vectorize into FMAs (reassociation,
#: contraction, no signed zeros) without assuming there are no NaNs or Infs:
#: ``fastmath=FASTMATH`` would add nnan/ninf/arcp/afn, under which NaN and Inf no
#: longer propagate as in PyTorch (an Inf in an avg-pool window came out NaN).
FASTMATH = {"reassoc", "contract", "nsz"}

__all__ = ["padding_index_map", "conv2d_direct", "conv2d_plane_direct", "conv2d_plane_same",
           "pad_planes", "wide_cols", "uncol_wide", "im2col_fill",
           "conv_transpose2d_direct",
           "col2im_add", "phase_geometry", "col2im_phase_planes", "add_bias", "fill_bias"]


def padding_index_map(size: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """int64 map from padded position ``p`` in ``[0, lo+size+hi)`` to a source index or -1.

    Modes as PyTorch's ``F.pad``: zeros (-1: the value is 0), reflect (mirror
    without repeating the edge), replicate (the edge repeated), circular (wrap).
    """
    p = np.arange(-lo, size + hi, dtype=np.int64)
    if mode == "zeros":
        return np.where((p >= 0) & (p < size), p, -1)
    if mode == "reflect":
        m = np.abs(p)
        return np.where(m >= size, 2 * (size - 1) - m, m)  # pad < size is checked upstream
    if mode == "replicate":
        return np.clip(p, 0, size - 1)
    if mode == "circular":
        return np.mod(p, size)
    raise ValueError(f"unknown padding mode {mode!r}")


@njit(cache=True, inline="always")
def _build_row(src, c, sr, cmap, pl, row):
    """row[:] = padded input row ``sr`` of channel ``c``: interior copied, pads via cmap."""
    srow = src[c, sr]
    wsrc = srow.shape[0]
    for xp in range(pl):
        s = cmap[xp]
        row[xp] = srow[s] if s >= 0 else 0.0
    inner = row[pl:pl + wsrc]
    for xi in range(wsrc):
        inner[xi] = srow[xi]
    for xp in range(pl + wsrc, cmap.shape[0]):
        s = cmap[xp]
        row[xp] = srow[s] if s >= 0 else 0.0


# Inner loops index arrays only with the loop counter (offsets are applied by
# slicing first): an index like ``row[ox + off]`` with ``off`` of unknown sign
# makes Numba emit a negative-index wraparound select per access, which
# stops LLVM from vectorizing (measured: 2.8 -> 18.5 GFLOP/s on one loaded core).
@njit(cache=True, inline="always")
def _acc2_k3(o0, o1, row, a0, a1, a2, b0, b1, b2, dw, sw, wo):
    if sw == 1:
        r0 = row[0:wo]
        r1 = row[dw:dw + wo]
        r2 = row[2 * dw:2 * dw + wo]
        for ox in range(wo):
            v0 = r0[ox]
            v1 = r1[ox]
            v2 = r2[ox]
            o0[ox] += a0 * v0 + a1 * v1 + a2 * v2
            o1[ox] += b0 * v0 + b1 * v1 + b2 * v2
    else:
        r0 = row[0::sw]
        r1 = row[dw::sw]
        r2 = row[2 * dw::sw]
        for ox in range(wo):
            v0 = r0[ox]
            v1 = r1[ox]
            v2 = r2[ox]
            o0[ox] += a0 * v0 + a1 * v1 + a2 * v2
            o1[ox] += b0 * v0 + b1 * v1 + b2 * v2


@njit(cache=True, inline="always")
def _acc1_k3(o0, row, a0, a1, a2, dw, sw, wo):
    if sw == 1:
        r0 = row[0:wo]
        r1 = row[dw:dw + wo]
        r2 = row[2 * dw:2 * dw + wo]
        for ox in range(wo):
            o0[ox] += a0 * r0[ox] + a1 * r1[ox] + a2 * r2[ox]
    else:
        r0 = row[0::sw]
        r1 = row[dw::sw]
        r2 = row[2 * dw::sw]
        for ox in range(wo):
            o0[ox] += a0 * r0[ox] + a1 * r1[ox] + a2 * r2[ox]


@njit(cache=True, inline="always")
def _acc2(o0, o1, row, a0, b0, off, sw, wo):
    if sw == 1:
        r = row[off:off + wo]
        for ox in range(wo):
            v = r[ox]
            o0[ox] += a0 * v
            o1[ox] += b0 * v
    else:
        r = row[off::sw]
        for ox in range(wo):
            v = r[ox]
            o0[ox] += a0 * v
            o1[ox] += b0 * v


@njit(cache=True, inline="always")
def _acc1(o0, row, a0, off, sw, wo):
    if sw == 1:
        r = row[off:off + wo]
        for ox in range(wo):
            o0[ox] += a0 * r[ox]
    else:
        r = row[off::sw]
        for ox in range(wo):
            o0[ox] += a0 * r[ox]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def conv2d_direct(x, w, b, has_bias, out, rmap, cmap, pl, sh, sw, dh, dw, groups,
                  rows_per_task, nworkers, scratch):
    """Register-blocked direct convolution (version 1 of the header); writes ``out``.

    x: (N, C, H, W); w: (Co, Cg, kh, kw); out: (N, Co, Ho, Wo); scratch:
    (nworkers, >= len(cmap)).  ``rows_per_task`` output rows per task.
    """
    n_img, _c, _h, _w = x.shape
    c_out, cg, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    og = c_out // groups
    cob = 4
    nblk = (og + cob - 1) // cob
    nyb = (ho + rows_per_task - 1) // rows_per_task
    total = n_img * groups * nblk * nyb
    for wk in prange(nworkers):
        row = scratch[wk]
        for t in range(wk, total, nworkers):
            yb = t % nyb
            r = t // nyb
            blk = r % nblk
            r = r // nblk
            g = r % groups
            n = r // groups
            co0 = g * og + blk * cob
            nco = min(cob, (g + 1) * og - co0)
            xn = x[n]
            y0 = yb * rows_per_task
            y1 = min(ho, y0 + rows_per_task)
            for oy in range(y0, y1):
                for k in range(nco):
                    bv = b[co0 + k] if has_bias else 0.0
                    orow = out[n, co0 + k, oy]
                    for ox in range(wo):
                        orow[ox] = bv
                for ci in range(cg):
                    c = g * cg + ci
                    for i in range(kh):
                        sr = rmap[oy * sh + i * dh]
                        # a padding row is still multiplied (0 * Inf = NaN, as PyTorch)
                        _padded_row(xn, c, sr, cmap, pl, row)
                        k = 0
                        while k < nco:
                            o0 = out[n, co0 + k, oy]
                            wa = w[co0 + k, ci, i]
                            if k + 1 < nco:  # two output channels share each input load
                                o1 = out[n, co0 + k + 1, oy]
                                wb = w[co0 + k + 1, ci, i]
                                if kw == 3:
                                    _acc2_k3(o0, o1, row, wa[0], wa[1], wa[2], wb[0], wb[1],
                                             wb[2], dw, sw, wo)
                                else:
                                    for j in range(kw):
                                        _acc2(o0, o1, row, wa[j], wb[j], j * dw, sw, wo)
                                k += 2
                            else:
                                if kw == 3:
                                    _acc1_k3(o0, row, wa[0], wa[1], wa[2], dw, sw, wo)
                                else:
                                    for j in range(kw):
                                        _acc1(o0, row, wa[j], j * dw, sw, wo)
                                k += 1


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def conv2d_plane_direct(x, w, b, out, rmap, cmap, pl, dh, dw, rows_per_task, nworkers,
                        scratch):
    """Depthwise / single-channel direct convolution, stride 1, any padding mode (version 5).

    One input channel per output channel (``C_in/G == 1``): output channel
    ``o`` reads input plane ``o // (C_out/G)``.  Each task (image, output
    channel, block of output rows) keeps a ring of the ``span = dh*(kh-1)+1``
    padded input rows it needs: moving down one output row builds one new
    padded row (interior copied, pads through the index maps), so the input
    is read once and no border cases remain in the inner loops.  3x3 fuses
    all 9 taps in one pass over the output row (9 loads + 9 FMAs per store,
    output written once); kw 3/5 fuse one kernel row per pass.
    ``b`` holds zeros when there is no bias (keeps arithmetic in x's dtype).
    scratch: (nworkers, span * len(cmap)).
    """
    n_img, c_in, h, w_in = x.shape
    c_out, _cg, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    mult = c_out // c_in
    wp = cmap.shape[0]
    span = dh * (kh - 1) + 1
    nyb = (ho + rows_per_task - 1) // rows_per_task
    total = n_img * c_out * nyb
    for wkr in prange(nworkers):
        ring = scratch[wkr, :span * wp].reshape((span, wp))
        for t in range(wkr, total, nworkers):
            yb = t % nyb
            r = t // nyb
            o = r % c_out
            n = r // c_out
            xn = x[n]
            ci = o // mult
            wk = w[o, 0]
            bv = b[o]
            y0 = yb * rows_per_task
            y1 = min(ho, y0 + rows_per_task)
            for pr in range(y0, y0 + span - 1):
                _padded_row(xn, ci, rmap[pr], cmap, pl, ring[pr % span])
            for oy in range(y0, y1):
                pr = oy + span - 1
                _padded_row(xn, ci, rmap[pr], cmap, pl, ring[pr % span])
                orow = out[n, o, oy]
                if kh == 3 and kw == 3:
                    p0 = ring[oy % span]
                    p1 = ring[(oy + dh) % span]
                    p2 = ring[(oy + 2 * dh) % span]
                    a00, a01, a02 = wk[0, 0], wk[0, 1], wk[0, 2]
                    a10, a11, a12 = wk[1, 0], wk[1, 1], wk[1, 2]
                    a20, a21, a22 = wk[2, 0], wk[2, 1], wk[2, 2]
                    p00, p01, p02 = p0[0:wo], p0[dw:dw + wo], p0[2 * dw:2 * dw + wo]
                    p10, p11, p12 = p1[0:wo], p1[dw:dw + wo], p1[2 * dw:2 * dw + wo]
                    p20, p21, p22 = p2[0:wo], p2[dw:dw + wo], p2[2 * dw:2 * dw + wo]
                    for q in range(wo):
                        orow[q] = (bv + a00 * p00[q] + a01 * p01[q] + a02 * p02[q]
                                   + a10 * p10[q] + a11 * p11[q] + a12 * p12[q]
                                   + a20 * p20[q] + a21 * p21[q] + a22 * p22[q])
                else:
                    for q in range(wo):
                        orow[q] = bv
                    for i in range(kh):
                        prow = ring[(oy + i * dh) % span]
                        if kw == 3:
                            _acc1_k3(orow, prow, wk[i, 0], wk[i, 1], wk[i, 2], dw, 1, wo)
                        elif kw == 5:
                            a0, a1, a2, a3, a4 = (wk[i, 0], wk[i, 1], wk[i, 2], wk[i, 3],
                                                  wk[i, 4])
                            q0, q1, q2 = (prow[0:wo], prow[dw:dw + wo],
                                          prow[2 * dw:2 * dw + wo])
                            q3, q4 = prow[3 * dw:3 * dw + wo], prow[4 * dw:4 * dw + wo]
                            for q in range(wo):
                                orow[q] += (a0 * q0[q] + a1 * q1[q] + a2 * q2[q]
                                            + a3 * q3[q] + a4 * q4[q])
                        else:
                            for j in range(kw):
                                _acc1(orow, prow, wk[i, j], j * dw, 1, wo)


@njit(cache=True, inline="always")
def _padded_row(xn, c, sr, cmap, pl, row):
    """row = padded input row (source row ``sr`` of channel ``c``; -1: a row of zeros)."""
    if sr < 0:
        for q in range(row.shape[0]):
            row[q] = 0.0
    else:
        _build_row(xn, c, sr, cmap, pl, row)


#: Version 9 keeps LLVM's contraction (FMA) but not reassociation: with ``reassoc`` LLVM
#: re-linearizes the three row sums of the 3x3 pass into one 9-FMA dependency chain.
FASTMATH_NO_REASSOC = {"contract", "nsz"}


@njit(cache=True, inline="always")
def _plane_src_row(xc, rmap, r, zrow):
    """Source row of padded row ``r`` (a row of zeros where it falls on zero padding)."""
    s = rmap[r]
    return xc[s] if s >= 0 else zrow


@njit(cache=True, inline="always")
def _plane_border_cols(orow, xc, wk, bv, rmap, cmap, oy, ox0, ox1, dh, dw, zero):
    """orow[ox0:ox1] through both index maps; a padded tap multiplies a zero (0 * w as the
    reference, so an Inf/NaN weight still gives NaN there)."""
    kh, kw = wk.shape
    for ox in range(ox0, ox1):
        acc = bv
        for i in range(kh):
            s = rmap[oy + i * dh]
            for j in range(kw):
                c = cmap[ox + j * dw]
                v = xc[s, c] if (s >= 0 and c >= 0) else zero
                acc += wk[i, j] * v
        orow[ox] = acc


@njit(cache=True, inline="always")
def _plane_edge_cols_3x3(oc, xc, wk, bv, cmap, ya, yz, pt, dh, dw, ox0, ox1, zero):
    """Columns [ox0, ox1) of the interior rows [ya, yz) of a 3x3 output plane (all three kernel
    rows inside the input): source columns through cmap, hoisted out of the row loop."""
    a00, a01, a02 = wk[0, 0], wk[0, 1], wk[0, 2]
    a10, a11, a12 = wk[1, 0], wk[1, 1], wk[1, 2]
    a20, a21, a22 = wk[2, 0], wk[2, 1], wk[2, 2]
    for ox in range(ox0, ox1):
        c0 = cmap[ox]
        c1 = cmap[ox + dw]
        c2 = cmap[ox + 2 * dw]
        for oy in range(ya, yz):
            r0 = xc[oy - pt]
            r1 = xc[oy - pt + dh]
            r2 = xc[oy - pt + 2 * dh]
            v00 = r0[c0] if c0 >= 0 else zero
            v10 = r1[c0] if c0 >= 0 else zero
            v20 = r2[c0] if c0 >= 0 else zero
            v01 = r0[c1] if c1 >= 0 else zero
            v11 = r1[c1] if c1 >= 0 else zero
            v21 = r2[c1] if c1 >= 0 else zero
            v02 = r0[c2] if c2 >= 0 else zero
            v12 = r1[c2] if c2 >= 0 else zero
            v22 = r2[c2] if c2 >= 0 else zero
            oc[oy, ox] = (bv + a00 * v00 + a01 * v01 + a02 * v02 + a10 * v10 + a11 * v11
                          + a12 * v12 + a20 * v20 + a21 * v21 + a22 * v22)


@njit(cache=True, inline="always")
def _plane_row_maps(orow, xc, wk, bv, rmap, cmap, oy, cl, cr, dh, dw, zrow):
    """One output row whose kernel rows may fall on row padding: source rows through rmap (zrow
    for a zero-padded row), interior columns [cl, cr) vectorized, the others through cmap."""
    kh, kw = wk.shape
    m = cr - cl
    if m > 0 and kh == 3 and kw == 3:
        oi = orow[cl:cr]
        s0 = _plane_src_row(xc, rmap, oy, zrow)
        s1 = _plane_src_row(xc, rmap, oy + dh, zrow)
        s2 = _plane_src_row(xc, rmap, oy + 2 * dh, zrow)
        a00, a01, a02 = wk[0, 0], wk[0, 1], wk[0, 2]
        a10, a11, a12 = wk[1, 0], wk[1, 1], wk[1, 2]
        a20, a21, a22 = wk[2, 0], wk[2, 1], wk[2, 2]
        p00, p01, p02 = s0[0:m], s0[dw:dw + m], s0[2 * dw:2 * dw + m]
        p10, p11, p12 = s1[0:m], s1[dw:dw + m], s1[2 * dw:2 * dw + m]
        p20, p21, p22 = s2[0:m], s2[dw:dw + m], s2[2 * dw:2 * dw + m]
        for q in range(m):
            oi[q] = ((bv + a00 * p00[q] + a01 * p01[q] + a02 * p02[q])
                     + ((a10 * p10[q] + a11 * p11[q] + a12 * p12[q])
                        + (a20 * p20[q] + a21 * p21[q] + a22 * p22[q])))
    elif m > 0:
        oi = orow[cl:cr]
        for q in range(m):
            oi[q] = bv
        for i in range(kh):
            src = _plane_src_row(xc, rmap, oy + i * dh, zrow)
            for j in range(kw):
                a = wk[i, j]
                sj = src[j * dw:j * dw + m]
                for q in range(m):
                    oi[q] += a * sj[q]
    zero = zrow[0]
    wo = orow.shape[0]
    _plane_border_cols(orow, xc, wk, bv, rmap, cmap, oy, 0, min(cl, wo), dh, dw, zero)
    _plane_border_cols(orow, xc, wk, bv, rmap, cmap, oy, max(cr, cl, 0), wo, dh, dw, zero)


@njit(parallel=True, fastmath=FASTMATH_NO_REASSOC, cache=True)
def conv2d_plane_same(x, w, b, out, rmap, cmap, pt, pl, dh, dw, band, nworkers, zrow):
    """Depthwise / single-channel convolution, stride 1, output as wide as the input (version 9).

    For ``Wo == W`` (``pl + pr == dw*(kw-1)``, e.g. "same" padding), any padding mode,
    dilation, multiplier.  Output row ``oy`` is *interior* when all its kernel rows lie in
    the input; for those rows the padded input is never built: on the flattened plane
    (row stride ``W`` for input and output alike) output ``f`` is
    ``b + sum_ij w[i,j] * x_flat[f + (i*dh - pt)*W + j*dw - pl]``, one long pass over a band
    of rows reading the input in place (3x3: all 9 taps fused, one store per output; other
    kernels: one pass per kernel row, 3 or 5 taps fused).  The pass runs from
    ``(ya, pl)`` to ``(yz-1, W-pr)`` so every read is inside the plane; the ``pl + pr``
    columns per row it gets wrong (taps wrapping into the neighbouring row) are then
    recomputed through ``cmap``.  Rows with a kernel row on the padding (``pt`` at the top,
    about ``pb`` at the bottom) go through ``rmap`` (zrow for a zero row).  Padded taps
    always multiply a zero, as in the reference.
    Tasks: ``(plane, band of rows)`` units in plane-major order, each worker a contiguous
    run of units (both threads stream their own half of input and output).  No scratch
    beyond ``zrow`` (W zeros of x's dtype).
    """
    n_img, c_in, h, wd = x.shape
    c_out, _cg, kh, kw = w.shape
    ho = out.shape[2]
    mult = c_out // c_in
    pr = (kw - 1) * dw - pl
    cl, cr = pl, wd - pr                                # interior output columns
    iy0 = min(pt, ho)
    iy1 = max(iy0, min(ho, h + pt - (kh - 1) * dh))     # interior output rows
    nb = (ho + band - 1) // band
    units = n_img * c_out * nb
    zero = zrow[0]
    for wkr in prange(nworkers):
        u0 = units * wkr // nworkers
        u1 = units * (wkr + 1) // nworkers
        for u in range(u0, u1):
            yb = u % nb
            pln = u // nb
            o = pln % c_out
            n = pln // c_out
            xc = x[n, o // mult]
            oc = out[n, o]
            wk = w[o, 0]
            bv = b[o]
            y0 = yb * band
            y1 = min(ho, y0 + band)
            ya = max(y0, iy0)
            yz = min(y1, iy1)
            for oy in range(y0, min(y1, ya)):
                _plane_row_maps(oc[oy], xc, wk, bv, rmap, cmap, oy, cl, cr, dh, dw, zrow)
            if ya < yz:
                xf = xc.reshape(h * wd)
                of = oc.reshape(ho * wd)
                f0 = ya * wd + pl
                m = yz * wd - pr - f0
                base = f0 - pt * wd - pl                    # >= 0: row ya - pt >= 0
                oi = of[f0:f0 + m]
                if kh == 3 and kw == 3:
                    d1 = dh * wd
                    d2 = 2 * dh * wd
                    a00, a01, a02 = wk[0, 0], wk[0, 1], wk[0, 2]
                    a10, a11, a12 = wk[1, 0], wk[1, 1], wk[1, 2]
                    a20, a21, a22 = wk[2, 0], wk[2, 1], wk[2, 2]
                    p00 = xf[base:base + m]
                    p01 = xf[base + dw:base + dw + m]
                    p02 = xf[base + 2 * dw:base + 2 * dw + m]
                    p10 = xf[base + d1:base + d1 + m]
                    p11 = xf[base + d1 + dw:base + d1 + dw + m]
                    p12 = xf[base + d1 + 2 * dw:base + d1 + 2 * dw + m]
                    p20 = xf[base + d2:base + d2 + m]
                    p21 = xf[base + d2 + dw:base + d2 + dw + m]
                    p22 = xf[base + d2 + 2 * dw:base + d2 + 2 * dw + m]
                    for q in range(m):
                        s0 = bv + a00 * p00[q] + a01 * p01[q] + a02 * p02[q]
                        s1 = a10 * p10[q] + a11 * p11[q] + a12 * p12[q]
                        s2 = a20 * p20[q] + a21 * p21[q] + a22 * p22[q]
                        oi[q] = s0 + (s1 + s2)
                    _plane_edge_cols_3x3(oc, xc, wk, bv, cmap, ya, yz, pt, dh, dw, 0,
                                         min(cl, wd), zero)
                    _plane_edge_cols_3x3(oc, xc, wk, bv, cmap, ya, yz, pt, dh, dw, max(cr, 0),
                                         wd, zero)
                else:
                    for i in range(kh):
                        bi = base + i * dh * wd
                        if kw == 5:
                            a0, a1, a2, a3, a4 = wk[i, 0], wk[i, 1], wk[i, 2], wk[i, 3], wk[i, 4]
                            q0 = xf[bi:bi + m]
                            q1 = xf[bi + dw:bi + dw + m]
                            q2 = xf[bi + 2 * dw:bi + 2 * dw + m]
                            q3 = xf[bi + 3 * dw:bi + 3 * dw + m]
                            q4 = xf[bi + 4 * dw:bi + 4 * dw + m]
                            if i == 0:
                                for q in range(m):
                                    oi[q] = ((bv + a0 * q0[q] + a1 * q1[q] + a2 * q2[q])
                                             + (a3 * q3[q] + a4 * q4[q]))
                            else:
                                for q in range(m):
                                    oi[q] += ((a0 * q0[q] + a1 * q1[q] + a2 * q2[q])
                                              + (a3 * q3[q] + a4 * q4[q]))
                        elif kw == 3:
                            a0, a1, a2 = wk[i, 0], wk[i, 1], wk[i, 2]
                            q0 = xf[bi:bi + m]
                            q1 = xf[bi + dw:bi + dw + m]
                            q2 = xf[bi + 2 * dw:bi + 2 * dw + m]
                            if i == 0:
                                for q in range(m):
                                    oi[q] = bv + a0 * q0[q] + a1 * q1[q] + a2 * q2[q]
                            else:
                                for q in range(m):
                                    oi[q] += a0 * q0[q] + a1 * q1[q] + a2 * q2[q]
                        else:
                            for j in range(kw):
                                a0 = wk[i, j]
                                q0 = xf[bi + j * dw:bi + j * dw + m]
                                if i == 0 and j == 0:
                                    for q in range(m):
                                        oi[q] = bv + a0 * q0[q]
                                else:
                                    for q in range(m):
                                        oi[q] += a0 * q0[q]
                    for oy in range(ya, yz):
                        orow = oc[oy]
                        _plane_border_cols(orow, xc, wk, bv, rmap, cmap, oy, 0, min(cl, wd), dh,
                                           dw, zero)
                        _plane_border_cols(orow, xc, wk, bv, rmap, cmap, oy, max(cr, 0), wd, dh,
                                           dw, zero)
            for oy in range(max(yz, y0), y1):
                _plane_row_maps(oc[oy], xc, wk, bv, rmap, cmap, oy, cl, cr, dh, dw, zrow)


@njit(parallel=True, cache=True)
def im2col_fill(x, n0, nb, c0, cg, kh, kw, rmap, cmap, pl, sh, sw, dh, dw,
                y0, y1, x0, x1, ones_row, cols):
    """cols[(c,i,j), ((n-n0)*(y1-y0) + (oy-y0))*(x1-x0) + (ox-x0)] = xp[n, c0+c, ...].

    cols: (cg*kh*kw + ones_row, nb*(y1-y0)*(x1-x0)); row ``cg*kh*kw`` is all
    ones when ``ones_row`` (the GEMM then adds the bias from an extra
    weight column).  Parallel over the kh*kw*cg rows.
    """
    w_in = x.shape[3]
    nrow = y1 - y0
    ncol = x1 - x0
    krows = cg * kh * kw
    for k in prange(krows + ones_row):
        crow = cols[k]
        if k == krows:
            for q in range(crow.shape[0]):
                crow[q] = 1.0
            continue
        c = k // (kh * kw)
        rr = k % (kh * kw)
        i = rr // kw
        j = rr % kw
        off = j * dw - pl
        # ox in [lo, hi): source column ox*sw + off inside the input (plain copy)
        lo = x0
        while lo < x1 and lo * sw + off < 0:
            lo += 1
        hi = x1
        while hi > lo and (hi - 1) * sw + off >= w_in:
            hi -= 1
        for nn in range(nb):
            for oy in range(y0, y1):
                start = (nn * nrow + oy - y0) * ncol
                dst = crow[start:start + ncol]
                sr = rmap[oy * sh + i * dh]
                if sr < 0:
                    for q in range(ncol):
                        dst[q] = 0.0
                    continue
                src = x[n0 + nn, c0 + c, sr]
                for ox in range(x0, lo):
                    s = cmap[ox * sw + j * dw]
                    dst[ox - x0] = src[s] if s >= 0 else 0.0
                mid = dst[lo - x0:hi - x0]
                if sw == 1:
                    s1 = src[lo + off:hi + off]
                    for q in range(hi - lo):
                        mid[q] = s1[q]
                elif sw == 2:
                    s2 = src[lo * 2 + off:]
                    for q in range(hi - lo):
                        mid[q] = s2[2 * q]
                else:
                    ss = src[lo * sw + off::sw]
                    for q in range(hi - lo):
                        mid[q] = ss[q]
                for ox in range(hi, x1):
                    s = cmap[ox * sw + j * dw]
                    dst[ox - x0] = src[s] if s >= 0 else 0.0


@njit(parallel=True, cache=True)
def pad_planes(x, n0, nb, c0, cg, rmap, cmap, pl, xpad):
    """xpad[nn, c] = padded plane of x[n0+nn, c0+c] (+ one trailing row of zeros).

    xpad: (nb, cg, Hp + 1, Wp).  Version 6's first step (any padding mode).
    """
    hp = rmap.shape[0]
    for t in prange(nb * cg):
        nn = t // cg
        c = t % cg
        xn = x[n0 + nn]
        for pr in range(hp):
            _padded_row(xn, c0 + c, rmap[pr], cmap, pl, xpad[nn, c, pr])
        last = xpad[nn, c, hp]
        for q in range(last.shape[0]):
            last[q] = 0.0


@njit(parallel=True, cache=True)
def wide_cols(xpad, kh, kw, dh, dw, y0, y1, ones_row, cols):
    """cols[(c,i,j), nn*L + q] = flat(xpad[nn, c])[(y0 + i*dh)*Wp + j*dw + q], q < L.

    ``L = (y1-y0)*Wp``: output rows [y0, y1).  Version 6 ("wide" im2col,
    stride 1): output rows are computed Wp wide (the padded width) instead
    of Wo, so every column row is ONE contiguous copy of the padded plane;
    the Wp - Wo extra outputs per row read into the next row (or the zero
    row) and are dropped by ``uncol_wide``.
    """
    nb, cg, hp1, wp = xpad.shape
    ln = (y1 - y0) * wp
    krows = cg * kh * kw
    for k in prange(krows + ones_row):
        crow = cols[k]
        if k == krows:
            for q in range(crow.shape[0]):
                crow[q] = 1.0
            continue
        c = k // (kh * kw)
        rr = k % (kh * kw)
        i = rr // kw
        j = rr % kw
        start = (y0 + i * dh) * wp + j * dw
        for nn in range(nb):
            flat = xpad[nn, c].reshape(hp1 * wp)
            src = flat[start:start + ln]
            dst = crow[nn * ln:(nn + 1) * ln]
            for q in range(ln):
                dst[q] = src[q]


@njit(parallel=True, cache=True)
def uncol_wide(res, out, n0, nb, o0, wp, y0, y1):
    """out[n0+nn, o0+o, oy, ox] = res[o, (nn*(y1-y0) + oy-y0)*Wp + ox], ox < Wo, oy in [y0, y1)."""
    og = res.shape[0]
    wo = out.shape[3]
    nrow = y1 - y0
    for t in prange(nb * og):
        nn = t // og
        o = t % og
        for oy in range(y0, y1):
            start = (nn * nrow + oy - y0) * wp
            src = res[o, start:start + wo]
            dst = out[n0 + nn, o0 + o, oy]
            for q in range(wo):
                dst[q] = src[q]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def conv_transpose2d_direct(x, w, b, has_bias, out, sh, sw, ph, pw, dh, dw, groups,
                            rows_per_task):
    """Gather-form transposed convolution (version 3); writes ``out``.

    x: (N, Ci, H, W); w: (Ci, Og, kh, kw); out: (N, Co, Ho, Wo).  Task
    (n, o, row block); each output row gathers ``x[n, c, iy, ix] * w`` over
    the taps that land on it: iy = (oy + ph - i*dh)/sh when divisible.
    """
    n_img, c_in, h, w_in = x.shape
    _ci, og, kh, kw = w.shape
    c_out, ho, wo = out.shape[1], out.shape[2], out.shape[3]
    cg = c_in // groups
    nyb = (ho + rows_per_task - 1) // rows_per_task
    total = n_img * c_out * nyb
    for t in prange(total):
        yb = t % nyb
        r = t // nyb
        o = r % c_out
        n = r // c_out
        g = o // og
        oo = o - g * og
        y0 = yb * rows_per_task
        y1 = min(ho, y0 + rows_per_task)
        for oy in range(y0, y1):
            orow = out[n, o, oy]
            bv = b[o] if has_bias else 0.0
            for ox in range(wo):
                orow[ox] = bv
            for i in range(kh):
                ty = oy + ph - i * dh
                if ty < 0 or ty % sh != 0:
                    continue
                iy = ty // sh
                if iy >= h:
                    continue
                for j in range(kw):
                    # ox = ix*sw - pw + j*dw for ix in [ix0, ix1)
                    base = j * dw - pw
                    ix0 = 0
                    if base < 0:
                        ix0 = (-base + sw - 1) // sw
                    ix1 = min(w_in, (wo - 1 - base) // sw + 1) if wo - 1 - base >= 0 else 0
                    if ix1 <= ix0:
                        continue
                    if sw == 1:
                        od = orow[ix0 + base:ix1 + base]
                    else:
                        od = orow[ix0 * sw + base:(ix1 - 1) * sw + base + 1:sw]
                    for ci in range(cg):
                        c = g * cg + ci
                        wv = w[c, oo, i, j]
                        xs = x[n, c, iy, ix0:ix1]
                        for q in range(ix1 - ix0):
                            od[q] += wv * xs[q]


@njit(cache=True, inline="always")
def _tap_ix_range(base, sw, w_in, wo):
    """[ix0, ix1): input columns whose tap lands inside the output (ox = ix*sw + base)."""
    ix0 = 0
    if base < 0:
        ix0 = (-base + sw - 1) // sw
    ix1 = min(w_in, (wo - 1 - base) // sw + 1) if wo - 1 - base >= 0 else 0
    return ix0, max(ix0, ix1)


@njit(cache=True, inline="always")
def _scatter_scalar(orow, crow, ix0, ix1, sw, base):
    for ix in range(ix0, ix1):
        orow[ix * sw + base] += crow[ix]


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def col2im_add(cols, out, n0, nb, o0, og, kh, kw, iy0, iy1, w_in, sh, sw, ph, pw, dh, dw):
    """out[n, o0+o, iy*sh - ph + i*dh, ix*sw - pw + j*dw] += cols[(o,i,j), col(n, iy, ix)].

    ``col(n, iy, ix) = ((n-n0)*(iy1-iy0) + iy-iy0)*W + ix`` for images
    [n0, n0+nb) and input rows [iy0, iy1).  Version 4: one task per output
    plane (n, o) (no two tasks share an output element); taps in a fixed
    order, so the result is deterministic.  At stride 2 with dilation 1, taps
    j and j+1 land on interleaved columns and are added in one pass (a full
    interleaved group, which vectorizes; a lone strided store does not).
    """
    ho, wo = out.shape[2], out.shape[3]
    nrow = iy1 - iy0
    for t in prange(nb * og):
        nn = t // og
        o = t % og
        plane = out[n0 + nn, o0 + o]
        for i in range(kh):
            for iy in range(iy0, iy1):
                oy = iy * sh - ph + i * dh
                if oy < 0 or oy >= ho:
                    continue
                orow = plane[oy]
                src = (nn * nrow + iy - iy0) * w_in
                j = 0
                while j < kw:
                    k = (o * kh + i) * kw + j
                    base = j * dw - pw
                    ix0, ix1 = _tap_ix_range(base, sw, w_in, wo)
                    crow = cols[k, src:src + w_in]
                    if sw == 2 and dw == 1 and j + 1 < kw:
                        crow1 = cols[k + 1, src:src + w_in]
                        jx0, jx1 = _tap_ix_range(base + 1, 2, w_in, wo)
                        a = max(ix0, jx0)
                        e = max(a, min(ix1, jx1))
                        if e > a:
                            od = orow[2 * a + base:2 * e + base + 1]
                            c0 = crow[a:e]
                            c1 = crow1[a:e]
                            for q in range(e - a):
                                od[2 * q] += c0[q]
                                od[2 * q + 1] += c1[q]
                            _scatter_scalar(orow, crow, ix0, a, 2, base)
                            _scatter_scalar(orow, crow, e, ix1, 2, base)
                            _scatter_scalar(orow, crow1, jx0, a, 2, base + 1)
                            _scatter_scalar(orow, crow1, e, jx1, 2, base + 1)
                        else:
                            _scatter_scalar(orow, crow, ix0, ix1, 2, base)
                            _scatter_scalar(orow, crow1, jx0, jx1, 2, base + 1)
                        j += 2
                        continue
                    if ix1 > ix0:
                        cs = crow[ix0:ix1]
                        if sw == 1:
                            od1 = orow[ix0 + base:ix1 + base]
                            for q in range(ix1 - ix0):
                                od1[q] += cs[q]
                        else:
                            ods = orow[ix0 * sw + base:(ix1 - 1) * sw + base + 1:sw]
                            for q in range(ix1 - ix0):
                                ods[q] += cs[q]
                    j += 1


def phase_geometry(k, d, p, s, size_in, size_out):
    """Stride-phase layout along one axis for :func:`col2im_phase_planes`.

    Tap ``i`` sends input ``iy`` to ``oy = iy*s + i*d - p = (iy + qo_i)*s + r_i``
    with ``r_i = (i*d - p) mod s``.  Returns ``(lo, length)``: phase position
    ``q`` is stored at ``q + lo``; ``length`` holds every tap's input range and
    every output position (``lo + max qo + size_in`` and ``lo + ceil(size_out/s)``).
    """
    qo = [(i * d - p - ((i * d - p) % s)) // s for i in range(k)]
    lo = max(0, -min(qo))
    return lo, max(lo + max(qo) + size_in, lo + -(-size_out // s))


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def col2im_phase_planes(cols, out, b, has_bias, n0, nb, o0, og, kh, kw, h_in, bw, sh, sw,
                        ph, pw, dh, dw, lo_y, lo_x, nworkers, scratch):
    """out[n0:n0+nb, o0:o0+og] = b + col2im(cols) through stride-phase planes (version 8).

    ``cols``: (Og*kh*kw, nb*h_in*bw), its columns the input pixels of rows
    ``bw`` wide (input columns >= W are zeros: the GEMM ran on a zero-padded
    copy of x).  Output pixel ``(oy, ox) = (qy*sh + ry, qx*sw + rx)`` lives in
    phase plane ``ry*sw + rx`` of ``scratch[slot]`` at flat position
    ``(qy + lo_y)*bw + qx + lo_x``.  Phase planes have the same row length
    ``bw`` as the columns, so tap (i, j) of one image is ONE contiguous add of
    ``(h_in-1)*bw + W`` elements at a constant offset (no clipping: taps that
    fall outside the output land in the halo, pad columns add zeros).  Then
    each output row is written once, interleaving its ``sw`` phase rows
    (no read-modify-write of the output, no separate bias fill).
    Tasks: output planes (n, o) dealt round-robin to ``nworkers`` slots;
    deterministic (fixed tap order).
    """
    ho, wo = out.shape[2], out.shape[3]
    plen = scratch.shape[2]
    run = (h_in - 1) * bw
    total = nb * og
    for s in prange(nworkers):
        buf = scratch[s]
        for t in range(s, total, nworkers):
            nn = t // og
            o = t % og
            bv = b[o0 + o] if has_bias else 0.0
            for f in range(sh * sw):
                pf = buf[f]
                for q in range(plen):
                    pf[q] = bv
            c0 = nn * h_in * bw
            for i in range(kh):
                by = i * dh - ph
                ry = by % sh
                dy = (by - ry) // sh + lo_y
                for j in range(kw):
                    bx = j * dw - pw
                    rx = bx % sw
                    d0 = dy * bw + (bx - rx) // sw + lo_x
                    k = (o * kh + i) * kw + j
                    dst = buf[ry * sw + rx, d0:d0 + run + bw]
                    src = cols[k, c0:c0 + run + bw]
                    # dst may be shorter only by trailing pad columns (zeros)
                    for q in range(min(dst.shape[0], src.shape[0])):
                        dst[q] += src[q]
            plane = out[n0 + nn, o0 + o]
            for oy in range(ho):
                ry = oy % sh
                r0 = (oy // sh + lo_y) * bw + lo_x
                orow = plane[oy]
                if sw == 2:
                    # one interleaved store group (vectorizes; strided slices do not)
                    nq = wo // 2
                    ev = buf[ry * 2, r0:r0 + nq + 1]
                    od = buf[ry * 2 + 1, r0:r0 + nq]
                    pair = orow[0:2 * nq]
                    for q in range(nq):
                        pair[2 * q] = ev[q]
                        pair[2 * q + 1] = od[q]
                    if wo % 2 == 1:
                        orow[wo - 1] = ev[nq]
                    continue
                for rx in range(min(sw, wo)):
                    dst = orow[rx:wo:sw]
                    prow = buf[ry * sw + rx, r0:r0 + dst.shape[0]]
                    for q in range(dst.shape[0]):
                        dst[q] = prow[q]


@njit(parallel=True, cache=True)
def add_bias(out, b):
    """out[n, o] += b[o], parallel over (n, o) planes; out: (N, Co, P)."""
    n_img, c_out, npix = out.shape
    for t in prange(n_img * c_out):
        n = t // c_out
        o = t % c_out
        bv = b[o]
        plane = out[n, o]
        for q in range(npix):
            plane[q] += bv


@njit(parallel=True, cache=True)
def fill_bias(out, b, has_bias):
    """out[n, o, :] = b[o] (or 0): the starting value col2im accumulates onto."""
    n_img, c_out, npix = out.shape
    for t in prange(n_img * c_out):
        o = t % c_out
        bv = b[o] if has_bias else 0.0
        plane = out[t // c_out, o]
        for q in range(npix):
            plane[q] = bv
