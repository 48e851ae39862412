"""CPU (Numba ``@njit`` + an LLVM-IR microkernel) register-blocked direct convolution.

Formula (index notation, cross-correlation, NCHW, ``g = o // (C_out/G)``)::

    y[n,o,oy,ox] = b[o] + sum_{c,i,j} xp[n, g*Cg+c, oy*sh + i*dh, ox*sw + j*dw] * w[o, c, i, j]

``xp`` is the input padded in the padding mode.  Every stride becomes stride 1
through *stride-phase planes*: phase ``(ry, rx)`` of channel ``c`` is the plane
``P[c,ry,rx][qy, qx] = xp[qy*sh + ry, qx*sw + rx]`` (``Hq x Wq``, ``Hq = ceil(Hp/sh)``,
``Wq = ceil(Wp/sw)``; for stride 1 it is the padded plane itself).  Tap
``(c, i, j)`` then reads ``P[c, (i*dh)%sh, (j*dw)%sw][oy + (i*dh)//sh, ox + (j*dw)//sw]``,
i.e. one *offset* into the flattened planes, ``off[c,i,j]``, plus the output's
"wide" flat position ``oy*Wq + ox``.  Outputs are computed ``Wq`` wide (the
``Wq - Wo`` extra columns per row read neighbouring data and are dropped), so
the convolution is an implicit GEMM

    Y_wide[o, p] = b[o] + sum_k A[o, k] * Xf[off[k] + p],   k = (c, i, j),  p = oy*Wq + ox

whose B operand is never materialized: each "row" of B is a contiguous
window of the phase planes.

Microkernel (version 1): an ``MR x NV*VW`` block of ``Y_wide`` (``MR`` output channels, ``NV``
SIMD vectors of ``VW`` pixels: VW = 8 for float32, 4 for float64, i.e. one
256-bit register) lives in ``MR*NV`` vector registers across the whole
reduction over ``k``: per tap, ``NV`` unaligned vector loads of ``Xf``, ``MR``
broadcasts of packed weights, ``MR*NV`` FMAs (``llvm.fmuladd``: one
``vfmadd231ps`` each where the CPU has FMA).  Written directly in LLVM IR
(``numba.extending.intrinsic``) because Numba's loop vectorizer does not keep
accumulators in registers across an outer loop.  Shapes: 4x3 (12
accumulators + 3 loads + 1 broadcast = 16 ymm registers) and 6x2.  Measured on
L1-resident data, one core (AMD EPYC, AVX2, ~3.2 GHz, peak 102 GFLOP/s):
4x3 94 GFLOP/s, 6x2 99 GFLOP/s.

FLOPs: 2*N*Co*Ho*Wo*Cg*kh*kw useful; executed 2*N*Co_pad*Ho*Wq_tiles*Cg*kh*kw
(``Co`` padded to a multiple of MR, ``Wo`` widened to ``Wq``, the flat output
rounded up to whole tiles).  Bytes: input once (plus one copy into the phase
planes), weights once, output once.

Parallel decomposition: ``phase_planes`` is parallel over (image, channel);
``conv_tiles`` cuts (image, group, band of output rows) into contiguous runs,
one per worker (``prange`` over workers, 2 threads here).  A worker computes a
band for one block of MR channels at a time into its own scratch
(``MR x ldc``, L1/L2 resident), then copies the valid columns to the output
(bias included).  Bands are sized so the band's phase-plane rows fit in about
half of L2, so the weights block (``K x MR``) stays in L1 while tiles stream.
No atomics, deterministic.

Transposed convolution (version 2): output phase ``(ry, rx)`` of
``conv_transpose2d`` (outputs ``oy = qy*sh + ry``, ``ox = qx*sw + rx``) is a
stride-1 convolution of the zero-padded input with the taps ``i`` where
``ry + ph - i*dh`` is a multiple of ``sh`` (same for ``j``), at input offset
``(ry + ph - i*dh) / sh``: ``conv_tiles`` runs once per phase and writes the
phase's outputs with strides ``(sh, sw)``; ``phase_planes`` (stride 1) builds
the padded input once for all phases.  No scatter, no atomics, no col2im.

Versions:
1. microkernel + ``conv_tiles`` (bands of rows, BLIS-like kc/mc blocking,
   prefetch of the next tile's windows) + ``phase_planes``.  One core, CPU
   time, against PyTorch 2.13 (oneDNN) in the same process: VGG-16 conv1_2
   84 GFLOP/s (torch 88), conv3_2 84, ResNet-50 3x3 81; the former im2col +
   OpenBLAS path ran 56-71 on the same layers.
2. ``conv_tiles`` writes an output phase with strides (transposed convolution);
   ``phase_planes`` copies unpadded stride-1 planes flat (LeNet C3: 0.35 ->
   0.17 ms) and builds strided phases from one padded row per source row
   (ResNet-50 conv3 s2: 4.9 -> 2.8 ms).
3. ``conv_tiles_packed``: exact tiles of valid outputs only (across rows and
   images), their windows packed per reduction chunk; for small planes with
   many channels, where wide tiles waste most (ResNet-50 3x3 512 on 7x7, one
   core: 27.9 -> 24.6 ms; 2 threads 14.4 -> 12.7 ms, PyTorch about 12).  And
   ``pack_weights``: the weight layout in one parallel pass instead of NumPy's
   three (that layer: 30.8 -> 27.9 ms on one core, wide tiles).

4. Winograd F(2x2, 3x3) (Lavin & Gray 2016) for 3x3 stride-1 layers:
   ``winograd_weights`` (``U = G w G^T``, 16 values per channel pair) and
   ``winograd_tiles``: per block of 2x2-output tiles, the input transform
   ``V = B^T d B`` (an LLVM-IR intrinsic, 8 tiles per vector, de-interleaving
   the stride-2 windows with shuffles), 16 GEMMs ``M[e] = U[e] V[e]`` through
   the same microkernel (a variant that starts from zero instead of loading C),
   and the output transform ``A^T M A`` (LLVM IR too).  2.25x fewer
   multiply-adds than the direct form.  One core, CPU time (PyTorch 42-44 ms
   on both): VGG-16 conv1_2 46 -> 25-27 ms, conv3_2 46 -> 22; ResNet-50 3x3
   256 on 14x14 27 -> 17.  Measured along the way: ``V``'s and ``M``'s 16
   rows a multiple of 4 KiB apart put all 16 streams of a transform in one L1
   set (conv1_2's input transform 34 ms, output 18 ms; one cache line of skew
   between rows: 6.9 and 5.4; the vector intrinsics then 3.7 and 2.2); tiles
   outside the reduction chunks keep a tile's accumulators in L1 (conv3_2
   29 -> 26 ms).  Inputs or weights holding NaN/Inf: a 4x4 tile mixes them
   into outputs that the direct form keeps finite, so a result with any
   non-finite value (flagged by the output transform) is recomputed by the
   host in the direct form.

Safety: the microkernel and the Winograd transforms do raw pointer loads,
out of reach of ``NUMBA_BOUNDSCHECK``, so ``conv_tiles``, ``conv_tiles_packed``
and ``winograd_tiles`` check the furthest read and write against the buffers'
sizes before running (an IndexError, never an out-of-bounds access, if a
caller passes a short buffer).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.extending import intrinsic

__all__ = ["MICROKERNELS", "phase_planes", "conv_tiles", "conv_tiles_packed", "pack_weights",
           "winograd_weights", "winograd_tiles"]

#: (MR, NV) register blocks, indexed by the ``shape_id`` argument of :func:`conv_tiles`.
MICROKERNELS = ((4, 3), (6, 2))  # mirrored by fastconv.wrappers.numba_igemm (no numba import there)
#: Prefetch, per tap, the line that ends the next tile's window (tiles are swept
#: left to right): VGG-16 conv1_2 on one core 76 -> 89 GFLOP/s, ResNet-50 3x3 81 -> 84.
PREFETCH = True



def _make_microkernel(mr: int, nv: int, overwrite: bool = False):
    """An intrinsic ``mk(a, a0, x, x0, off, c, c0, k, ldc)``: C block += A panel x windows of x.

    For ``m < mr``, ``q < nv*VW``::

        c[c0 + m*ldc + q] += sum_{t<k} a[a0 + t*mr + m] * x[x0 + off[t] + q]

    With ``overwrite``, ``=`` instead of ``+=`` (the accumulators start at
    zero and C is only written: the Winograd GEMMs' first reduction chunk).

    ``a``, ``x``, ``c``: C-contiguous float32 or float64 arrays (one dtype);
    ``off``: int64 array.  No bounds checks (the caller's job).
    """

    def typer(typingctx, a, a0, x, x0, off, c, c0, k, ldc):
        for arr in (a, x, c):
            if not isinstance(arr, types.Array) or arr.dtype != a.dtype:
                return None
        if a.dtype not in (types.float32, types.float64):
            return None
        if not isinstance(off, types.Array) or off.dtype != types.int64:
            return None
        sig = types.void(a, types.intp, x, types.intp, off, c, types.intp, types.intp,
                         types.intp)
        is64 = a.dtype == types.float64

        def codegen(context, builder, signature, args):
            a_v, a0_v, x_v, x0_v, off_v, c_v, c0_v, k_v, ldc_v = args
            a_t, _, x_t, _, off_t, c_t = signature.args[:6]
            width = 4 if is64 else 8
            esz = 8 if is64 else 4
            fty = ir.DoubleType() if is64 else ir.FloatType()
            vty = ir.VectorType(fty, width)
            vptr = vty.as_pointer()
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                "llvm.fmuladd.v%d%s" % (width, "f64" if is64 else "f32"))
            prefetch = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32,
                                                                i32, i32]), "llvm.prefetch.p0")
            a_p = builder.gep(context.make_array(a_t)(context, builder, a_v).data, [a0_v])
            x_p = builder.gep(context.make_array(x_t)(context, builder, x_v).data, [x0_v])
            o_p = context.make_array(off_t)(context, builder, off_v).data
            c_p = builder.gep(context.make_array(c_t)(context, builder, c_v).data, [c0_v])

            def cvec(m, v):
                idx = builder.add(builder.mul(ldc_v, ir.Constant(i64, m)),
                                  ir.Constant(i64, v * width))
                return builder.bitcast(builder.gep(c_p, [idx]), vptr)

            if overwrite:
                init = [[ir.Constant(vty, [0.0] * width) for v in range(nv)]
                        for m in range(mr)]
            else:
                init = [[builder.load(cvec(m, v), align=esz) for v in range(nv)]
                        for m in range(mr)]
            pre = builder.block
            loop = builder.append_basic_block("mk.loop")
            done = builder.append_basic_block("mk.done")
            zero = ir.Constant(i64, 0)
            builder.cbranch(builder.icmp_signed(">", k_v, zero), loop, done)

            builder.position_at_end(loop)
            t = builder.phi(i64, "mk.t")
            t.add_incoming(zero, pre)
            acc = []
            for m in range(mr):
                row = []
                for v in range(nv):
                    ph = builder.phi(vty)
                    ph.add_incoming(init[m][v], pre)
                    row.append(ph)
                acc.append(row)
            off = builder.load(builder.gep(o_p, [t]), align=8)
            xb = builder.gep(x_p, [off])
            bv = [builder.load(builder.bitcast(builder.gep(xb, [ir.Constant(i64, v * width)]),
                                               vptr), align=esz) for v in range(nv)]
            if PREFETCH:
                # the next tile's window of this tap (the caller sweeps tiles left to right)
                pf = builder.bitcast(builder.gep(xb, [ir.Constant(i64, 2 * nv * width - 1)]),
                                     ir.IntType(8).as_pointer())
                builder.call(prefetch, [pf, ir.Constant(i32, 0), ir.Constant(i32, 3),
                                        ir.Constant(i32, 1)])
            abase = builder.mul(t, ir.Constant(i64, mr))
            undef = ir.Constant(vty, ir.Undefined)
            splat = ir.Constant(ir.VectorType(i32, width), [0] * width)
            new = []
            for m in range(mr):
                s = builder.load(builder.gep(a_p, [builder.add(abase, ir.Constant(i64, m))]),
                                 align=esz)
                sv = builder.shuffle_vector(
                    builder.insert_element(undef, s, ir.Constant(i32, 0)), undef, splat)
                new.append([builder.call(fma, [sv, bv[v], acc[m][v]]) for v in range(nv)])
            t1 = builder.add(t, ir.Constant(i64, 1))
            end = builder.block
            t.add_incoming(t1, end)
            for m in range(mr):
                for v in range(nv):
                    acc[m][v].add_incoming(new[m][v], end)
            builder.cbranch(builder.icmp_signed("<", t1, k_v), loop, done)

            builder.position_at_end(done)
            final = []
            for m in range(mr):
                for v in range(nv):
                    ph = builder.phi(vty)
                    ph.add_incoming(init[m][v], pre)
                    ph.add_incoming(new[m][v], end)
                    final.append(ph)
            for m in range(mr):
                for v in range(nv):
                    builder.store(final[m * nv + v], cvec(m, v), align=esz)
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = f"microkernel_{mr}x{nv}{'_set' if overwrite else ''}"
    return intrinsic(typer)


_mk_4x3 = _make_microkernel(4, 3)
_mk_6x2 = _make_microkernel(6, 2)
_mk_4x3_set = _make_microkernel(4, 3, overwrite=True)
_mk_6x2_set = _make_microkernel(6, 2, overwrite=True)


@njit(parallel=True, cache=True)
def pack_weights(wk, nblk, mr, packed):
    """packed[g, b, k, m] = wk[g, b*MR + m, k], zeros past ``Og`` (one pass, parallel over blocks).

    wk: (G, Og, K), packed: (G, nblk, K, MR), C-contiguous.  Replaces a NumPy
    zeros + assign + transposed copy (three passes, one thread): ResNet-50 3x3
    512 on 7x7 spent 13 % of its time there on one core.
    No FLOPs; bytes: the weights read once and written once (padded to MR).
    Launch: ``prange`` over G*nblk blocks.
    """
    groups, og, kk = wk.shape
    if (packed.shape[0] != groups or packed.shape[1] != nblk or packed.shape[2] != kk
            or packed.shape[3] != mr or nblk * mr < og):
        raise IndexError("pack_weights: packed weights of the wrong shape")
    for t in prange(groups * nblk):
        g = t // nblk
        b = t % nblk
        dst = packed[g, b]
        for m in range(mr):
            o = b * mr + m
            if o < og:
                src = wk[g, o]
                for k in range(kk):
                    dst[k, m] = src[k]
            else:
                for k in range(kk):
                    dst[k, m] = 0.0


@njit(parallel=True, cache=True)
def phase_planes(x, n0, nb, rmap, cmap, pl, sh, sw, hq, wq, pstride, buf):
    """buf[nn, ((c*sh + ry)*sw + rx)*pstride + qy*Wq + qx] = xp[n0+nn, c, qy*sh+ry, qx*sw+rx].

    ``xp`` through the padding index maps (-1: zero; positions past the
    padded extent: zero).  Every element of ``buf[nn]`` past the planes is
    zeroed (the wide columns and the last tile read into it), and so are the
    ``pstride - Hq*Wq`` elements after each plane (``pstride`` is an odd number
    of cache lines: planes a power-of-two multiple of 64 bytes apart would map
    a tile's windows to a few L1 sets).  buf: (>= nb, >= C*sh*sw*pstride).
    """
    c_in = x.shape[1]
    hp = rmap.shape[0]
    wp = cmap.shape[0]
    win = x.shape[3]
    plane = hq * wq
    used = c_in * sh * sw * pstride
    u = np.uint64
    for t in prange(nb * c_in):
        nn = t // c_in
        c = t % c_in
        sp = x[n0 + nn, c]
        bn = buf[nn]
        tmp = np.empty(wq * sw, dtype=buf.dtype)
        if c == 0:
            for q in range(used, bn.shape[0]):
                bn[q] = 0.0
        for r in range(sh * sw):
            base = (c * sh * sw + r) * pstride
            for q in range(base + plane, base + pstride):
                bn[q] = 0.0
        if sh == 1 and sw == 1 and hq == hp == x.shape[2] and wq == wp == win:
            # no padding, stride 1: the plane is the source plane, one flat copy
            src = sp.reshape(plane)
            dst = bn[c * pstride:c * pstride + plane]
            for q in range(plane):
                dst[q] = src[q]
            continue
        # rows through the index maps; no array views per row (each costs a
        # reference count) and unsigned indices (no wraparound selects):
        # DCGAN-like 16x64 planes of 30x30, one core: 0.73 -> 0.30 ms
        for ry in range(sh):
            for qy in range(hq):
                pr = qy * sh + ry
                sr = rmap[pr] if pr < hp else -1
                b0 = u(((c * sh + ry) * sw) * pstride + qy * wq)
                if sr < 0:
                    for rx in range(sw):
                        o = b0 + u(rx * pstride)
                        for q in range(wq):
                            bn[o + u(q)] = 0.0
                    continue
                if sw == 1:
                    _row_into(sp, u(sr), cmap, pl, win, bn, b0, wq)
                    continue
                # the padded row once, zero-extended to Wq*sw, then each
                # phase is one strided read of it
                _row_into(sp, u(sr), cmap, pl, win, tmp, u(0), wq * sw)
                if sw == 2:
                    o1 = b0 + u(pstride)
                    for q in range(wq):
                        bn[b0 + u(q)] = tmp[2 * q]
                        bn[o1 + u(q)] = tmp[2 * q + 1]
                else:
                    for rx in range(sw):
                        o = b0 + u(rx * pstride)
                        for q in range(wq):
                            bn[o + u(q)] = tmp[q * sw + rx]


@njit(cache=True, inline="always")
def _row_into(sp, sr, cmap, pl, win, dst, o, n):
    """dst[o + q] = padded row ``sr`` of plane ``sp`` at column q, q < n (zero past Wp)."""
    u = np.uint64
    wp = cmap.shape[0]
    for q in range(min(pl, n)):
        s = cmap[q]
        dst[o + u(q)] = sp[sr, u(s)] if s >= 0 else 0.0
    if pl + win <= n:
        oi = o + u(pl)
        for q in range(win):
            dst[oi + u(q)] = sp[sr, u(q)]
    for q in range(pl + win, n):
        s = cmap[q] if q < wp else -1
        dst[o + u(q)] = sp[sr, u(s)] if s >= 0 else 0.0


@njit(cache=True)
def _geometry(buf, offs, apack, out, groups, shape_id):
    """(Og, nblk, K, MR, Co_pad, tile, largest tap offset) of a conv_tiles call, checked.

    Raises IndexError when the packed weights do not match the output or an
    offset is negative (the microkernel reads raw pointers).
    """
    og = out.shape[1] // groups
    nblk = apack.shape[1]
    kk = offs.shape[0]
    mr = apack.shape[3]
    copad = nblk * mr
    vw = 32 // buf.itemsize
    tw = (3 if shape_id == 0 else 2) * vw
    if apack.shape[0] != groups or apack.shape[2] != kk or copad < og or mr != (4, 6)[shape_id]:
        raise IndexError("conv_tiles: packed weights do not match the output")
    maxoff = 0
    for q in range(kk):
        if offs[q] > maxoff:
            maxoff = offs[q]
        if offs[q] < 0:
            raise IndexError("conv_tiles: negative tap offset")
    return og, nblk, kk, mr, copad, tw, maxoff


@njit(cache=True)
def _task(t, nbands, nimgb, imgs_per_task, nb, band_rows, ho):
    """(group, first image, end image, first row, end row) of task ``t`` (bands fastest)."""
    band = t % nbands
    key = t // nbands
    i0 = (key % nimgb) * imgs_per_task
    r0 = band * band_rows
    return key // nimgb, i0, min(nb, i0 + imgs_per_task), r0, min(ho, r0 + band_rows)


@njit(parallel=True, cache=True)
def conv_tiles(buf, nb, n0, offs, apack, bias, out, groups, gstride, wq, ho, wo, ry, rx, osy,
               osx, imgs_per_task, band_rows, kc, mc, shape_id, nworkers, scratch):
    """out[n0+nn, g*Og + o, ry + oy*osy, rx + ox*osx] = bias + sum_k apack[g, o//MR, k, o%MR] * buf[nn, g*gstride + off[k] + oy*Wq + ox].

    for ``oy < ho``, ``ox < wo``: a convolution writes its whole output
    (ry = rx = 0, osy = osx = 1); a transposed convolution one output phase
    per call (version 2).

    apack: (G, nblk, K, MR) packed weights (zero rows past Og); offs: (K,)
    int64 tap offsets.  A task is (group, block of ``imgs_per_task`` images,
    band of ``band_rows`` output rows; one of the two is 1 unless bands are
    whole planes).  Per task, BLIS-like: for each chunk of ``kc`` taps, for
    each group of ``mc`` output channels (packed weights ``mc x kc`` in L2),
    for each tile of NV*VW wide pixels (its windows, ``kc x tile``, in L1),
    the microkernel runs once per MR channels, accumulating into the
    worker's scratch: (nworkers, >= imgs_per_task*nblk*MR*ldc) with
    ``ldc = ceil(band_rows*Wq/T)*T`` (``T = NV*VW``).
    """
    og, nblk, kk, mr, copad, tw, maxoff = _geometry(buf, offs, apack, out, groups, shape_id)
    nbands = (ho + band_rows - 1) // band_rows
    nimgb = (nb + imgs_per_task - 1) // imgs_per_task
    total = groups * nimgb * nbands
    ldc = (band_rows * wq + tw - 1) // tw * tw
    bflat = buf.reshape(buf.shape[0] * buf.shape[1])
    blen = buf.shape[1]
    if (ry + (ho - 1) * osy >= out.shape[2] or rx + (wo - 1) * osx >= out.shape[3]
            or wo > wq):
        raise IndexError("conv_tiles: output phase outside the output")
    if (buf.shape[0] < nb or scratch.shape[0] < nworkers
            or scratch.shape[1] < imgs_per_task * copad * ldc or kc < 1 or mc < mr):
        raise IndexError("conv_tiles: buffers too small")
    # furthest read of every band, checked before any raw access (a raise
    # inside the prange body would stop Numba from parallelizing it)
    # (tiles of the last image may read past its planes into the next image's:
    # such reads only feed wide or tail outputs, which are dropped)
    for band in range(nbands):
        r0 = band * band_rows
        ntile = ((min(ho, r0 + band_rows) - r0) * wq + tw - 1) // tw
        if ((nb - 1) * blen + (groups - 1) * gstride + r0 * wq + ntile * tw + maxoff
                > bflat.shape[0]):
            raise IndexError("conv_tiles: a band reads past its buffer")
    u = np.uint64
    c_out, h_out, w_out = out.shape[1], out.shape[2], out.shape[3]
    if n0 + nb > out.shape[0]:
        raise IndexError("conv_tiles: images past the output")
    oflat = out.reshape(out.size)
    for wkr in prange(nworkers):
        scr = scratch[wkr]
        for t in range((total * wkr) // nworkers, (total * (wkr + 1)) // nworkers):
            g, i0, i1, r0, r1 = _task(t, nbands, nimgb, imgs_per_task, nb, band_rows, ho)
            ntile = ((r1 - r0) * wq + tw - 1) // tw
            # flat unsigned indices, no views per row (a view costs a reference
            # count: LeNet-5 C3 has 160 output rows per image of 10 pixels)
            for j in range(i1 - i0):
                for m in range(copad):
                    bv = bias[g * og + m] if m < og else 0.0
                    o = u((j * copad + m) * ldc)
                    for q in range(ntile * tw):
                        scr[o + u(q)] = bv
            for k0 in range(0, kk, kc):
                kn = min(kc, kk - k0)
                offk = offs[k0:k0 + kn]
                for m0 in range(0, copad, mc):
                    b0 = m0 // mr
                    b1 = min(copad, m0 + mc) // mr
                    for j in range(i1 - i0):
                        xoff = (i0 + j) * blen + g * gstride + r0 * wq
                        for tile in range(ntile):
                            for blk in range(b0, b1):
                                aoff = ((g * nblk + blk) * kk + k0) * mr
                                coff = (j * copad + blk * mr) * ldc + tile * tw
                                if shape_id == 0:
                                    _mk_4x3(apack, aoff, bflat, xoff + tile * tw, offk, scr,
                                            coff, kn, ldc)
                                else:
                                    _mk_6x2(apack, aoff, bflat, xoff + tile * tw, offk, scr,
                                            coff, kn, ldc)
            for j in range(i1 - i0):
                for m in range(og):
                    plane0 = ((n0 + i0 + j) * c_out + g * og + m) * h_out
                    for oy in range(r0, r1):
                        s0 = u((j * copad + m) * ldc + (oy - r0) * wq)
                        d0 = u((plane0 + ry + oy * osy) * w_out + rx)
                        if osx == 1:
                            for q in range(wo):
                                oflat[d0 + u(q)] = scr[s0 + u(q)]
                        else:
                            for q in range(wo):
                                oflat[d0 + u(q * osx)] = scr[s0 + u(q)]


@njit(parallel=True, cache=True)
def conv_tiles_packed(buf, nb, n0, offs, apack, bias, out, groups, gstride, ho, wo, wq,
                      imgs_per_task, band_rows, kc, mc, shape_id, nworkers, scratch):
    """Version 3, "exact" tiles: as :func:`conv_tiles`, but tiles hold only valid outputs.

    ``out[n0+nn, g*Og + o, oy, ox] = bias + sum_k apack[g, o//MR, k, o%MR] * buf[nn, g*gstride + off[k] + oy*Wq + ox]``

    A task's valid outputs (its images x band rows x ``Wo`` columns, flattened,
    across rows and images) are cut into tiles of ``T = NV*VW`` pixels.  Per
    chunk of ``kc`` taps and tile, the tile's input windows are *packed*
    (``kc x T``, contiguous, in L1: ``pack[t*T + q] = buf[src(q) + off[t]]``,
    copied in runs along output rows), then every block of MR output channels
    runs the microkernel on the pack.  No wide columns and no tile rounding per
    image: on small planes the wide tiles of ``conv_tiles`` execute up to 50 %
    more than the useful work (ResNet-50 3x3 on 7x7: 72 wide pixels per 49),
    this pays one copy of ``kc x T`` per tile shared by all ``C_out/G / MR``
    blocks, so the host takes it for small planes with many output channels.

    Loop nest per task: for each chunk of ``kc`` taps, pack every tile of the
    task (``ldc/T`` packs of ``kc x T``, L2), then for each group of ``mc``
    output channels, for each tile, for each block of MR channels, the
    microkernel.  Scratch per worker: accumulators ``(Co_pad, ldc)`` with
    ``ldc = ceil(imgs_per_task*band_rows*Wo / T)*T``, then the packs
    (``ldc*kc``).  The microkernel reads only the packs (checked to fit); the
    packing itself reads ``buf`` with ordinary (bounds-checkable) indexing,
    valid windows only.

    FLOPs: 2*N*Co_pad*K*(valid pixels rounded up to whole tiles per task),
    no wide columns.  Bytes: the planes once per reduction chunk into the
    packs (L2 traffic), weights once per task, output once.  Launch: ``prange``
    over ``nworkers``, each a contiguous run of tasks (group, image block, band).
    """
    og, nblk, kk, mr, copad, tw, maxoff = _geometry(buf, offs, apack, out, groups, shape_id)
    kcp = max(1, min(kc, kk))
    ldc = (imgs_per_task * band_rows * wo + tw - 1) // tw * tw
    pk = copad * ldc                       # the packs' start in a worker's scratch row
    ntmax = ldc // tw                      # tiles per task at most
    psz = kcp * tw                         # one tile's pack
    if (scratch.shape[0] < nworkers or scratch.shape[1] < pk + ntmax * psz or kc < 1 or mc < mr
            or buf.shape[0] < nb or n0 + nb > out.shape[0] or ho > out.shape[2]
            or wo > out.shape[3] or wo > wq):
        raise IndexError("conv_tiles_packed: buffers too small")
    blen = buf.shape[1]
    if ho > 0 and wo > 0 and (groups - 1) * gstride + (ho - 1) * wq + wo + maxoff > blen:
        raise IndexError("conv_tiles_packed: a window reads past its image's buffer")
    poffs = np.arange(kcp) * tw            # the pack's tap offsets (int64)
    u = np.uint64
    bflat = buf.reshape(buf.shape[0] * blen)
    nbands = (ho + band_rows - 1) // band_rows
    nimgb = (nb + imgs_per_task - 1) // imgs_per_task
    total = groups * nimgb * nbands
    c_out, h_out, w_out = out.shape[1], out.shape[2], out.shape[3]
    oflat = out.reshape(out.size)
    for wkr in prange(nworkers):
        scr = scratch[wkr]
        seg_q = np.empty(tw + 1, dtype=np.int64)     # a tile's runs: start in the tile,
        seg_s = np.empty(tw + 1, dtype=np.int64)     # source position, length
        seg_n = np.empty(tw + 1, dtype=np.int64)
        for t in range((total * wkr) // nworkers, (total * (wkr + 1)) // nworkers):
            g, i0, i1, r0, r1 = _task(t, nbands, nimgb, imgs_per_task, nb, band_rows, ho)
            nr = r1 - r0
            npx = (i1 - i0) * nr * wo
            ntile = (npx + tw - 1) // tw
            for m in range(copad):
                bv = bias[g * og + m] if m < og else 0.0
                for q in range(ntile * tw):
                    scr[m * ldc + q] = bv
            for k0 in range(0, kk, kcp):
                kn = min(kcp, kk - k0)
                for tile in range(ntile):
                    # the tile's runs of consecutive outputs along a row
                    nseg = 0
                    q = 0
                    while q < tw:
                        v = tile * tw + q
                        if v >= npx:
                            break
                        j = v // (nr * wo)
                        rem = v - j * nr * wo
                        oy = rem // wo
                        ox = rem - oy * wo
                        ln = min(tw - q, wo - ox)
                        seg_q[nseg] = q
                        seg_s[nseg] = (i0 + j) * blen + g * gstride + (r0 + oy) * wq + ox
                        seg_n[nseg] = ln
                        nseg += 1
                        q += ln
                    pt = pk + tile * psz
                    # (unsigned indices: no wraparound test per element)
                    for k in range(kn):
                        d = pt + k * tw
                        o = offs[k0 + k]
                        for s in range(nseg):
                            src = u(seg_s[s] + o)
                            dq = u(d + seg_q[s])
                            for e in range(seg_n[s]):
                                scr[dq + u(e)] = bflat[src + u(e)]
                        for e in range(q, tw):        # past the task's last output
                            scr[u(d + e)] = 0.0
                for m0 in range(0, copad, mc):
                    b0 = m0 // mr
                    b1 = min(copad, m0 + mc) // mr
                    for tile in range(ntile):
                        for blk in range(b0, b1):
                            aoff = ((g * nblk + blk) * kk + k0) * mr
                            coff = blk * mr * ldc + tile * tw
                            if shape_id == 0:
                                _mk_4x3(apack, aoff, scr, pk + tile * psz, poffs, scr, coff, kn,
                                        ldc)
                            else:
                                _mk_6x2(apack, aoff, scr, pk + tile * psz, poffs, scr, coff, kn,
                                        ldc)
            for m in range(og):
                for j in range(i1 - i0):
                    for oy in range(r0, r1):
                        s0 = m * ldc + (j * nr + oy - r0) * wo
                        d0 = (((n0 + i0 + j) * c_out + g * og + m) * h_out + oy) * w_out
                        for q in range(wo):
                            oflat[d0 + q] = scr[s0 + q]


# --------------------------------------------------------------------------
# version 4: Winograd F(2x2, 3x3)
# --------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def winograd_weights(wk, nblk, mr, packed):
    """packed[g, e, b, c, m] = (G w[g*Og + b*MR + m, c] G^T)[e // n, e % n], zeros past ``Og``.

    3x3 weights, F(2x2, 3x3), n = 4: ``G = [[1, 0, 0], [1/2, 1/2, 1/2],
    [1/2, -1/2, 1/2], [0, 0, 1]]`` (Lavin & Gray).  2x2 weights, F(2x2, 2x2),
    n = 3: ``G = [[1, 0], [1, 1], [0, 1]]``.  wk: (G, Og, Cg, r, r); packed:
    (G, n*n, nblk, Cg, MR), C-contiguous: for each transformed tap ``e``, the
    weights in the microkernel's (block, reduction, MR) order.
    FLOPs: ~40 per (o, c) pair, bytes: weights read once, n*n/(r*r) of them written.
    Launch: ``prange`` over G*nblk blocks.
    """
    groups, og, cg, r3 = wk.shape[0], wk.shape[1], wk.shape[2], wk.shape[3]
    nn = r3 + 1
    if (r3 < 2 or r3 > 3 or wk.shape[4] != r3 or packed.shape[0] != groups
            or packed.shape[1] != nn * nn or packed.shape[2] != nblk or packed.shape[3] != cg
            or packed.shape[4] != mr or nblk * mr < og):
        raise IndexError("winograd_weights: arrays of the wrong shape")
    for t in prange(groups * nblk):
        g = t // nblk
        b = t % nblk
        hh = np.empty((4, 3), dtype=packed.dtype)
        for m in range(mr):
            o = b * mr + m
            for c in range(cg):
                if o >= og:
                    for e in range(nn * nn):
                        packed[g, e, b, c, m] = 0.0
                    continue
                w = wk[g, o, c]
                if r3 == 2:             # F(2x2, 2x2): G w G^T, G = [[1, 0], [1, 1], [0, 1]]
                    for r in range(3):
                        h0 = w[0, 0] if r == 0 else (w[1, 0] if r == 2 else w[0, 0] + w[1, 0])
                        h1 = w[0, 1] if r == 0 else (w[1, 1] if r == 2 else w[0, 1] + w[1, 1])
                        packed[g, r * 3 + 0, b, c, m] = h0
                        packed[g, r * 3 + 1, b, c, m] = h0 + h1
                        packed[g, r * 3 + 2, b, c, m] = h1
                    continue
                for j in range(3):      # G w: rows
                    hh[0, j] = w[0, j]
                    hh[1, j] = 0.5 * (w[0, j] + w[1, j] + w[2, j])
                    hh[2, j] = 0.5 * (w[0, j] - w[1, j] + w[2, j])
                    hh[3, j] = w[2, j]
                for r in range(4):      # (G w) G^T: columns
                    packed[g, r * 4 + 0, b, c, m] = hh[r, 0]
                    packed[g, r * 4 + 1, b, c, m] = 0.5 * (hh[r, 0] + hh[r, 1] + hh[r, 2])
                    packed[g, r * 4 + 2, b, c, m] = 0.5 * (hh[r, 0] - hh[r, 1] + hh[r, 2])
                    packed[g, r * 4 + 3, b, c, m] = hh[r, 2]


def _ir_types(is64):
    """(VW, vector type, its pointer type, element bytes, i64, i32) for one 256-bit register."""
    width = 4 if is64 else 8
    vty = ir.VectorType(ir.DoubleType() if is64 else ir.FloatType(), width)
    return width, vty, vty.as_pointer(), 8 if is64 else 4, ir.IntType(64), ir.IntType(32)


def _make_wino_in(n: int = 4):
    """An intrinsic ``wi(x, src, wb, v, vb, vst)``: the input transform of VW tiles of one tile row.

    ``n = 4``: F(2x2, 3x3), ``n = 3``: F(2x2, 2x2).  For ``q < VW`` (8 float32 /
    4 float64 tiles) and ``e = n*r + s``::

        v[vb + e*vst + q] = (B^T d_q B)[r, s],   d_q[i, j] = x[src + i*wb + 2q + j]  (i, j < n)

    Each input row is read as vectors (at ``+0``, ``+VW``, ``+2``, ``+2+VW``)
    de-interleaved into the tiles' columns by shuffles: LLVM's loop vectorizer
    left the scalar loop alone (n*n store streams need too many run-time
    alias checks).  Reads ``x[src .. src + (n-1)*wb + 2*VW + 1]``.  No bounds
    checks (the caller's job).  ``B^T``: F(2x2, 3x3) ``[[1,0,-1,0],[0,1,1,0],
    [0,-1,1,0],[0,1,0,-1]]``, F(2x2, 2x2) ``[[1,-1,0],[0,1,0],[0,-1,1]]``.
    """

    def typer(typingctx, x, src, wb, v, vb, vst):
        if not (isinstance(x, types.Array) and isinstance(v, types.Array)
                and x.dtype == v.dtype and x.dtype in (types.float32, types.float64)):
            return None
        sig = types.void(x, types.intp, types.intp, v, types.intp, types.intp)
        is64 = x.dtype == types.float64

        def codegen(context, builder, signature, args):
            x_v, src_v, wb_v, v_v, vb_v, vst_v = args
            width, vty, vptr, esz, i64, _ = _ir_types(is64)
            x_p = builder.gep(context.make_array(signature.args[0])(context, builder, x_v).data,
                              [src_v])
            v_p = builder.gep(context.make_array(signature.args[3])(context, builder, v_v).data,
                              [vb_v])
            sel = [ir.Constant(ir.VectorType(ir.IntType(32), width),
                               [2 * q + h for q in range(width)]) for h in (0, 1)]

            def load(base, k):
                return builder.load(builder.bitcast(builder.gep(base, [ir.Constant(i64, k)]),
                                                    vptr), align=esz)
            sub, add = builder.fsub, builder.fadd

            def bt(a):   # B^T a, one dimension
                if n == 4:
                    return (sub(a[0], a[2]), add(a[1], a[2]), sub(a[2], a[1]), sub(a[1], a[3]))
                return (sub(a[0], a[1]), a[1], sub(a[2], a[1]))
            d = []
            for r in range(n):
                row = builder.gep(x_p, [builder.mul(wb_v, ir.Constant(i64, r))])
                a, b = load(row, 0), load(row, width)
                c, e = load(row, 2), load(row, 2 + width)
                cols = [builder.shuffle_vector(a, b, sel[0]), builder.shuffle_vector(a, b, sel[1]),
                        builder.shuffle_vector(c, e, sel[0]), builder.shuffle_vector(c, e, sel[1])]
                d.append(cols[:n])
            t = [bt([d[i][j] for i in range(n)]) for j in range(n)]     # B^T d, column j
            for r in range(n):
                for s_, val in enumerate(bt([t[j][r] for j in range(n)])):
                    off = builder.mul(vst_v, ir.Constant(i64, n * r + s_))
                    builder.store(val, builder.bitcast(builder.gep(v_p, [off]), vptr), align=esz)
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = f"winograd_in_vec{n}"
    return intrinsic(typer)


def _make_wino_out():
    """An intrinsic ``wo(m, mb, mst, out, d, wout, bv, chk, c0)``: the output transform of VW whole tiles.

    For ``q < VW``, with ``M_q[r, s] = m[mb + (4r + s)*mst + q]`` and ``Y_q = A^T M_q A``::

        out[d + i*wout + 2q + j] = bv + Y_q[i, j]      (i, j < 2)
        chk[c0 + q] += (sum of the four outputs) * 0   (NaN once any output is NaN or +-Inf)

    The two columns are interleaved by shuffles into two vectors per output
    row.  Writes ``out[d .. d + wout + 2*VW - 1]``.  No bounds checks.
    """

    def typer(typingctx, m, mb, mst, out, d, wout, bv, chk, c0):
        if not (isinstance(m, types.Array) and isinstance(out, types.Array)
                and isinstance(chk, types.Array) and chk.dtype == m.dtype
                and m.dtype == out.dtype and m.dtype in (types.float32, types.float64)
                and bv == m.dtype):
            return None
        sig = types.void(m, types.intp, types.intp, out, types.intp, types.intp, m.dtype, chk,
                         types.intp)
        is64 = m.dtype == types.float64

        def codegen(context, builder, signature, args):
            m_v, mb_v, mst_v, o_v, d_v, w_v, bv_v, k_v, c0_v = args
            width, vty, vptr, esz, i64, i32 = _ir_types(is64)
            m_p = builder.gep(context.make_array(signature.args[0])(context, builder, m_v).data,
                              [mb_v])
            o_p = builder.gep(context.make_array(signature.args[3])(context, builder, o_v).data,
                              [d_v])
            mm = [builder.load(builder.bitcast(
                builder.gep(m_p, [builder.mul(mst_v, ir.Constant(i64, e))]), vptr), align=esz)
                for e in range(16)]
            add, sub = builder.fadd, builder.fsub
            a = [add(add(mm[j], mm[4 + j]), mm[8 + j]) for j in range(4)]
            b = [sub(sub(mm[4 + j], mm[8 + j]), mm[12 + j]) for j in range(4)]
            undef = ir.Constant(vty, ir.Undefined)
            bvv = builder.shuffle_vector(builder.insert_element(undef, bv_v, ir.Constant(i32, 0)),
                                         undef, ir.Constant(ir.VectorType(i32, width), [0] * width))
            lo = [k // 2 + (width if k % 2 else 0) for k in range(width)]
            hi = [width // 2 + k // 2 + (width if k % 2 else 0) for k in range(width)]
            k_p = builder.bitcast(builder.gep(
                context.make_array(signature.args[7])(context, builder, k_v).data, [c0_v]), vptr)
            total = None
            for i, rowv in enumerate((a, b)):
                y0 = add(bvv, add(add(rowv[0], rowv[1]), rowv[2]))
                y1 = add(bvv, sub(sub(rowv[1], rowv[2]), rowv[3]))
                total = add(y0, y1) if total is None else add(total, add(y0, y1))
                base = o_p if i == 0 else builder.gep(o_p, [w_v])
                for h, idx in enumerate((lo, hi)):
                    val = builder.shuffle_vector(y0, y1, ir.Constant(ir.VectorType(i32, width), idx))
                    builder.store(val, builder.bitcast(
                        builder.gep(base, [ir.Constant(i64, h * width)]), vptr), align=esz)
            zero = ir.Constant(vty, [0.0] * width)
            builder.store(add(builder.load(k_p, align=esz), builder.fmul(total, zero)), k_p,
                          align=esz)
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = "winograd_out_vec"
    return intrinsic(typer)


def _make_wino_out_tmp(n: int):
    """An intrinsic ``wt(m, mb, mst, tmp, bv, chk, c0)``: outputs of VW tiles into ``tmp``.

    ``n = 4``: F(2x2, 3x3), ``n = 3``: F(2x2, 2x2).  For ``q < VW``, with
    ``M_q[r, s] = m[mb + (n*r + s)*mst + q]`` and ``Y_q = A^T M_q A``::

        tmp[(2*i + j)*VW + q] = bv + Y_q[i, j]          (i, j < 2)
        chk[c0 .. c0+VW) += (sum of the four) * 0

    for strided output phases, which the caller stores element by element
    (AVX2 has no scatter).  The operations are those of ``_wino_out_tile`` /
    ``_wino22_out_tile``, in the same order.  No bounds checks.
    """

    def typer(typingctx, m, mb, mst, tmp, bv, chk, c0):
        if not (isinstance(m, types.Array) and isinstance(tmp, types.Array)
                and isinstance(chk, types.Array) and chk.dtype == m.dtype
                and m.dtype == tmp.dtype and m.dtype in (types.float32, types.float64)
                and bv == m.dtype):
            return None
        sig = types.void(m, types.intp, types.intp, tmp, m.dtype, chk, types.intp)
        is64 = m.dtype == types.float64

        def codegen(context, builder, signature, args):
            m_v, mb_v, mst_v, t_v, bv_v, k_v, c0_v = args
            width, vty, vptr, esz, i64, i32 = _ir_types(is64)
            m_p = builder.gep(context.make_array(signature.args[0])(context, builder, m_v).data,
                              [mb_v])
            t_p = context.make_array(signature.args[3])(context, builder, t_v).data
            k_p = builder.bitcast(builder.gep(
                context.make_array(signature.args[5])(context, builder, k_v).data, [c0_v]), vptr)
            mm = [builder.load(builder.bitcast(
                builder.gep(m_p, [builder.mul(mst_v, ir.Constant(i64, e))]), vptr), align=esz)
                for e in range(n * n)]
            add, sub = builder.fadd, builder.fsub

            def at(a):   # _at4 / _at3
                if n == 4:
                    return add(add(a[0], a[1]), a[2]), sub(sub(a[1], a[2]), a[3])
                return add(a[0], a[1]), add(a[1], a[2])
            cols = [at([mm[n * r + j] for r in range(n)]) for j in range(n)]   # A^T M, column j
            undef = ir.Constant(vty, ir.Undefined)
            bvv = builder.shuffle_vector(builder.insert_element(undef, bv_v, ir.Constant(i32, 0)),
                                         undef, ir.Constant(ir.VectorType(i32, width), [0] * width))
            total = None
            for i in range(2):
                y = at([cols[j][i] for j in range(n)])
                for j in range(2):
                    val = add(bvv, y[j])
                    total = val if total is None else add(total, val)
                    builder.store(val, builder.bitcast(
                        builder.gep(t_p, [ir.Constant(i64, (2 * i + j) * width)]), vptr),
                        align=esz)
            zero = ir.Constant(vty, [0.0] * width)
            builder.store(add(builder.load(k_p, align=esz), builder.fmul(total, zero)), k_p,
                          align=esz)
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = f"winograd_out_tmp{n}"
    return intrinsic(typer)


_wino_in_vec = _make_wino_in(4)
_wino22_in_vec = _make_wino_in(3)
_wino_out_tmp = _make_wino_out_tmp(4)
_wino22_out_tmp = _make_wino_out_tmp(3)
_wino_out_vec = _make_wino_out()


@njit(cache=True)
def _wino_in_row(v, vb, cgp, bflat, src, wb, n, nin):
    """V rows of one tile row segment: ``n`` tiles, the first at ``src`` (top-left input).

    ``nin``: 4 for F(2x2, 3x3), 3 for F(2x2, 2x2).  Whole vectors of VW tiles,
    the last one running past the segment: it reads up to 2*VW+1 elements past
    the segment's last window and writes up to VW-1 V columns past it, which
    the caller rewrites (the next segment) or ignores (see winograd_tiles).
    """
    u = np.uint64
    vw = 32 // bflat.itemsize
    for q0 in range(0, n, vw):
        if nin == 4:
            _wino_in_vec(bflat, src + u(2 * q0), wb, v, vb + u(q0), cgp)
        else:
            _wino22_in_vec(bflat, src + u(2 * q0), wb, v, vb + u(q0), cgp)


@njit(cache=True)
def _at3(a0, a1, a2):
    """``A^T a`` of F(2, 2): ``A^T = [[1, 1, 0], [0, 1, 1]]``."""
    return a0 + a1, a1 + a2


@njit(cache=True)
def _wino22_out_tile(mbuf, o, mstride):
    """The 2x2 outputs ``A^T M A`` of F(2x2, 2x2): 9 M values from ``o``, ``mstride`` apart."""
    u = np.uint64
    a0, b0 = _at3(mbuf[o], mbuf[o + u(3 * mstride)], mbuf[o + u(6 * mstride)])
    o += u(mstride)
    a1, b1 = _at3(mbuf[o], mbuf[o + u(3 * mstride)], mbuf[o + u(6 * mstride)])
    o += u(mstride)
    a2, b2 = _at3(mbuf[o], mbuf[o + u(3 * mstride)], mbuf[o + u(6 * mstride)])
    y00, y01 = _at3(a0, a1, a2)
    y10, y11 = _at3(b0, b1, b2)
    return y00, y01, y10, y11


@njit(cache=True)
def _wino_out_strided(mbuf, mb, mstride, oflat, d0, rstep, cstep, bv, n, two_rows, last_full,
                      chk, c0, nin, tmp):
    """Outputs of one tile row segment written ``rstep``/``cstep`` apart (an output phase of a
    transposed convolution); ``chk[c0]`` becomes NaN if one is NaN or +-Inf.  ``tmp``:
    4*VW scratch elements.  Whole tiles by vectors (:func:`_make_wino_out_tmp`), the rest
    scalar.  The stores dominate: one 4-byte store per output, 4 phases interleaved."""
    u = np.uint64
    vw = 32 // oflat.itemsize
    q0 = 0
    # vectors of VW tiles into tmp (past the segment: M columns that exist,
    # results unused), then element by element to the strided output
    while q0 + vw <= n - 1 or (q0 + vw <= n and last_full):
        if nin == 4:
            _wino_out_tmp(mbuf, mb + u(q0), mstride, tmp, bv, chk, c0)
        else:
            _wino22_out_tmp(mbuf, mb + u(q0), mstride, tmp, bv, chk, c0)
        d = d0 + u(2 * q0 * cstep)
        if two_rows:
            for q in range(vw):
                e = d + u(2 * q * cstep)
                oflat[e] = tmp[q]
                oflat[e + u(cstep)] = tmp[vw + q]
                oflat[e + u(rstep)] = tmp[2 * vw + q]
                oflat[e + u(rstep + cstep)] = tmp[3 * vw + q]
        else:
            for q in range(vw):
                e = d + u(2 * q * cstep)
                oflat[e] = tmp[q]
                oflat[e + u(cstep)] = tmp[vw + q]
        q0 += vw
    for q in range(q0, n):
        if nin == 4:
            y00, y01, y10, y11 = _wino_out_tile(mbuf, mb + u(q), mstride)
        else:
            y00, y01, y10, y11 = _wino22_out_tile(mbuf, mb + u(q), mstride)
        d = d0 + u(2 * q * cstep)
        full = q < n - 1 or last_full
        oflat[d] = bv + y00
        s = oflat[d]
        if full:
            oflat[d + u(cstep)] = bv + y01
            s += oflat[d + u(cstep)]
        if two_rows:
            oflat[d + u(rstep)] = bv + y10
            s += oflat[d + u(rstep)]
            if full:
                oflat[d + u(rstep + cstep)] = bv + y11
                s += oflat[d + u(rstep + cstep)]
        chk[c0] += s * 0.0


@njit(cache=True)
def _at4(a0, a1, a2, a3):
    """``A^T a`` for ``A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]``."""
    return a0 + a1 + a2, a1 - a2 - a3


@njit(cache=True)
def _wino_out_tile(mbuf, o, mstride):
    """The 2x2 outputs ``A^T M A`` of the tile whose 16 M values start at ``o``, ``mstride`` apart."""
    u = np.uint64
    # the scalar form of _wino_out_vec: A^T M (down each column j), then each row times A
    a0, b0 = _at4(mbuf[o], mbuf[o + u(4 * mstride)], mbuf[o + u(8 * mstride)],
                  mbuf[o + u(12 * mstride)])
    o += u(mstride)
    a1, b1 = _at4(mbuf[o], mbuf[o + u(4 * mstride)], mbuf[o + u(8 * mstride)],
                  mbuf[o + u(12 * mstride)])
    o += u(mstride)
    a2, b2 = _at4(mbuf[o], mbuf[o + u(4 * mstride)], mbuf[o + u(8 * mstride)],
                  mbuf[o + u(12 * mstride)])
    o += u(mstride)
    a3, b3 = _at4(mbuf[o], mbuf[o + u(4 * mstride)], mbuf[o + u(8 * mstride)],
                  mbuf[o + u(12 * mstride)])
    y00, y01 = _at4(a0, a1, a2, a3)
    y10, y11 = _at4(b0, b1, b2, b3)
    return y00, y01, y10, y11


@njit(cache=True)
def _wino_out_row(mbuf, mb, mstride, oflat, d0, wout, bv, n, two_rows, last_full, chk, c0):
    """Outputs of one tile row segment: ``n`` tiles of 2x2, the first at ``d0``.

    ``two_rows``: the tile row's second output row exists; ``last_full``: the
    last tile's second column exists.  Branch-free loops over the full tiles.
    ``chk[c0 .. c0 + VW)`` becomes NaN if an output is NaN or +-Inf.
    """
    u = np.uint64
    nf = n if last_full else n - 1
    if two_rows:
        vw = 32 // oflat.itemsize
        q0 = 0
        while q0 + vw <= nf:
            _wino_out_vec(mbuf, mb + u(q0), mstride, oflat, d0 + u(2 * q0), wout, bv, chk, c0)
            q0 += vw
        for q in range(q0, nf):
            y00, y01, y10, y11 = _wino_out_tile(mbuf, mb + u(q), mstride)
            d = d0 + u(2 * q)
            oflat[d] = bv + y00
            oflat[d + u(1)] = bv + y01
            oflat[d + u(wout)] = bv + y10
            oflat[d + u(wout + 1)] = bv + y11
            chk[c0] += (oflat[d] + oflat[d + u(1)] + oflat[d + u(wout)]
                        + oflat[d + u(wout + 1)]) * 0.0
    else:
        for q in range(nf):
            y00, y01, y10, y11 = _wino_out_tile(mbuf, mb + u(q), mstride)
            d = d0 + u(2 * q)
            oflat[d] = bv + y00
            oflat[d + u(1)] = bv + y01
            chk[c0] += (oflat[d] + oflat[d + u(1)]) * 0.0
    if nf < n:
        q = n - 1
        y00, y01, y10, y11 = _wino_out_tile(mbuf, mb + u(q), mstride)
        d = d0 + u(2 * q)
        oflat[d] = bv + y00
        chk[c0] += oflat[d] * 0.0
        if two_rows:
            oflat[d + u(wout)] = bv + y10
            chk[c0] += oflat[d + u(wout)] * 0.0


@njit(cache=True)
def _tile_run(t, left, ntiles, tx_n):
    """(image, tile row, tile column, length) of the run of tiles from tile ``t`` (numbered
    row-major across images) to the end of its tile row, at most ``left`` long."""
    nn = t // ntiles
    tyy = (t - nn * ntiles) // tx_n
    txx = (t - nn * ntiles) - tyy * tx_n
    return nn, tyy, txx, min(left, tx_n - txx)


@njit(parallel=True, cache=True)
def winograd_tiles(buf, nb, n0, hb, wb, pstride, phases, upack, bias, out, groups, osy, osx,
                   ty_n, tx_n, ptiles, kc, mc, shape_id, nworkers, scratch, chk, pair):
    """out[n0+nn, g*Og + o, ry + oy*osy, rx + ox*osx] = bias + (phase's convolution of image nn), by Winograd.

    3x3 weights (``upack[ph]`` of (G, 16, nblk, Cg, MR)): F(2x2, 3x3); 2x2
    (``(G, 9, ...)``): F(2x2, 2x2) (see :func:`winograd_weights`).
    ``phases[ph] = (ry, rx, Ho, Wo, e0y, e0x)``: a convolution writes one
    phase ``(0, 0, Ho, Wo, 0, 0)`` with ``osy = osx = 1``; a transposed one
    (version 4b) one per output phase, its 2x2-tap stride-1 convolution read
    from the input origin ``(e0y, e0x)`` of the shared planes and written
    ``(osy, osx)`` apart.  ``buf[nn, c*pstride + y*wb + x]``: the padded
    input planes (``hb x wb``, zeros beyond the padded extent), then at least
    ``2*VW + 2`` more elements (zeroed): the input transform runs whole
    vectors past a tile row's end.  ``ty_n x tx_n``: the tile grid, at least
    ``ceil(Ho/2) x ceil(Wo/2)`` of every phase.

    Per tile ``(ty, tx)`` and channel: the input ``d`` (4x4 or 3x3) at
    ``(e0y + 2ty, e0x + 2tx)`` becomes ``V = B^T d B`` (additions only); per
    transformed tap ``e`` the output channels' ``M[e] = U[e] V[e]`` are
    independent GEMMs (``Og x Cg`` by ``Cg x tiles``) run by the
    register-blocked microkernel; the 2x2 outputs are ``A^T M A`` + bias.
    F(2x2, 3x3): ``B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]``,
    ``A^T = [[1,1,1,0],[0,1,-1,-1]]``; F(2x2, 2x2): ``B^T = [[1,-1,0],[0,1,0],
    [0,-1,1]]``, ``A^T = [[1,1,0],[0,1,1]]``.

    A task is (group, block of ``ptiles`` tiles; tiles are numbered row-major
    across the ``nb`` images, so a block may span images; ``ptiles`` a
    multiple of the microkernel's NV*VW).  Per task and phase: transform the
    block's inputs into ``V`` (T x Cg x ptiles, T = 16 or 9 transformed taps:
    the worker's scratch), then for each group of ``mc`` output channels: for
    each ``e``, for each tile of NV*VW columns, for each chunk of ``kc``
    channels, for each block of MR channels, the microkernel into ``M``
    (T x mc x ptiles; the first chunk overwrites, later ones accumulate);
    then the output transform.  All phases of a block in one task: the
    strided phases of a transposed convolution then fill the block's output
    lines while they are in cache (each phase alone touched every line of the
    output once more).  Scratch per worker: ``T*(Cg*ptiles + L) + T*(mc*ptiles + L)``
    (L: one 64-byte line of skew per transformed tap), twice that with ``pair``: phases
    ``2k`` and ``2k+1`` are the column phases 0 and 1 of one row phase (``osx = 2``),
    whose whole tiles are stored together, four consecutive outputs per tile and row
    (one phase alone can only store every other element).

    FLOPs: 2*T*Co_pad*Cg per tile (the direct form's 2*4*9 or 2*4*4: 2.25x or
    1.78x fewer) + ~32 additions per tile and channel in, ~24 out.  Bytes: the
    planes once, ``V`` and ``M`` through L2 (T/4 of the input and output),
    the transformed weights once per task and phase.  Launch: ``prange`` over
    ``nworkers``, each a contiguous run of tasks.
    """
    nph, groups_, tt, nblk, cg, mr = upack.shape
    nin = 4 if tt == 16 else 3              # F(2x2, 3x3) or F(2x2, 2x2)
    og = out.shape[1] // groups
    copad = nblk * mr
    vw = 32 // buf.itemsize
    tw = (3 if shape_id == 0 else 2) * vw
    ntiles = ty_n * tx_n
    nblocks = (nb * ntiles + ptiles - 1) // ptiles
    total = groups * nblocks
    mcb = min(mc, copad)
    # one transformed tap's rows to the next: one 64-byte line more than
    # cg*ptiles, so the 16 streams of a transform (a multiple of 4 KiB apart
    # otherwise) fall in 16 different L1 sets
    vst = cg * ptiles + 64 // buf.itemsize
    mst = mcb * ptiles + 64 // buf.itemsize
    vlen = tt * vst
    blen = buf.shape[1]
    if (groups_ != groups or (tt != 16 and tt != 9) or copad < og or mr != (4, 6)[shape_id]
            or ptiles % tw != 0 or ptiles < tw or mc < mr or mc % mr != 0 or kc < 1
            or out.shape[1] != groups * og or phases.shape[0] != nph or phases.shape[1] != 6
            or osy < 1 or osx < 1):
        raise IndexError("winograd_tiles: packed weights or sizes do not match")
    for ph in range(nph):
        ry, rx, ho, wo, e0y, e0x = phases[ph]
        if (ho < 1 or wo < 1 or ry < 0 or rx < 0 or e0y < 0 or e0x < 0
                or ry + (ho - 1) * osy >= out.shape[2] or rx + (wo - 1) * osx >= out.shape[3]
                or ty_n < (ho + 1) // 2 or tx_n < (wo + 1) // 2
                or hb < e0y + 2 * ty_n + nin - 2 or wb < e0x + 2 * tx_n + 2):
            raise IndexError("winograd_tiles: a phase outside the output or the planes")
    if (pstride < hb * wb or groups * cg * pstride + 2 * vw + 2 > blen or buf.shape[0] < nb
            or n0 + nb > out.shape[0]
            or scratch.shape[0] < nworkers
            or scratch.shape[1] < (vlen + tt * mst) * (2 if pair else 1)
            or bias.shape[0] < groups * og or chk.shape[0] < nworkers * vw):
        raise IndexError("winograd_tiles: buffers too small")
    if pair:
        if nph % 2 != 0 or osx != 2:
            raise IndexError("winograd_tiles: pairs need an even number of phases, osx = 2")
        for ph in range(0, nph, 2):
            if (phases[ph, 0] != phases[ph + 1, 0] or phases[ph, 1] != 0
                    or phases[ph + 1, 1] != 1 or phases[ph, 2] != phases[ph + 1, 2]
                    or phases[ph, 3] != phases[ph + 1, 3]):
                raise IndexError("winograd_tiles: phases 2k, 2k+1 are not a column pair")
    sl = vlen + tt * mst
    u = np.uint64
    bflat = buf.reshape(buf.shape[0] * blen)
    oflat = out.reshape(out.size)
    c_out, h_out, w_out = out.shape[1], out.shape[2], out.shape[3]
    for wkr in prange(nworkers):
        scr = scratch[wkr]
        poffs = np.arange(cg) * ptiles          # V rows of one transformed tap (int64)
        otmp = np.empty(4 * vw, dtype=scratch.dtype)
        otmp1 = np.empty(4 * vw, dtype=scratch.dtype)
        for t in range((total * wkr) // nworkers, (total * (wkr + 1)) // nworkers):
            blk = t % nblocks
            g = t // nblocks
            p0 = blk * ptiles
            np_ = min(ptiles, nb * ntiles - p0)
            ntile = (np_ + tw - 1) // tw
            if pair:
                s0 = scr[0:sl]
                s1 = scr[sl:2 * sl]
                for ph in range(0, nph, 2):
                    ry, _, ho, wo, e0y, e0x = phases[ph]
                    _wino_inputs(bflat, blen, pstride, wb, e0y, e0x, g, s0, vst, ptiles, p0,
                                 np_, ntile * tw, ntiles, tx_n, nin, tt, cg)
                    _, _, _, _, e1y, e1x = phases[ph + 1]
                    _wino_inputs(bflat, blen, pstride, wb, e1y, e1x, g, s1, vst, ptiles, p0,
                                 np_, ntile * tw, ntiles, tx_n, nin, tt, cg)
                    for m0 in range(0, copad, mcb):
                        _wino_gemms(upack[ph], g, s0, poffs, vst, mst, vlen, ptiles, ntile, tw,
                                    m0, mcb, copad, mr, nblk, cg, kc, tt, shape_id)
                        _wino_gemms(upack[ph + 1], g, s1, poffs, vst, mst, vlen, ptiles, ntile,
                                    tw, m0, mcb, copad, mr, nblk, cg, kc, tt, shape_id)
                        _wino_outputs_pair(s0, s1, vlen, mst, ptiles, p0, np_, ntiles, tx_n, m0,
                                           min(og, m0 + mcb), og, g, bias, oflat, n0, c_out,
                                           h_out, w_out, ry, ho, wo, osy, nin, chk,
                                           u(wkr * vw), otmp, otmp1)
                continue
            for ph in range(nph):
                ry, rx, ho, wo, e0y, e0x = phases[ph]
                _wino_inputs(bflat, blen, pstride, wb, e0y, e0x, g, scr, vst, ptiles, p0, np_,
                             ntile * tw, ntiles, tx_n, nin, tt, cg)
                for m0 in range(0, copad, mcb):
                    _wino_gemms(upack[ph], g, scr, poffs, vst, mst, vlen, ptiles, ntile, tw,
                                m0, mcb, copad, mr, nblk, cg, kc, tt, shape_id)
                    _wino_outputs(scr, vlen, mst, ptiles, p0, np_, ntiles, tx_n, m0,
                                  min(og, m0 + mcb), og, g, bias, oflat, n0, c_out, h_out, w_out,
                                  ry, rx, ho, wo, osy, osx, nin, chk, u(wkr * vw), otmp)


@njit(cache=True)
def _wino_outputs_pair(s0, s1, vlen, mst, ptiles, p0, np_, ntiles, tx_n, m0, m1, og, g, bias,
                       oflat, n0, c_out, h_out, w_out, ry, ho, wo, osy, nin, chk, c0, t0, t1):
    """:func:`_wino_outputs` for column phases 0 (``s0``) and 1 (``s1``) of row phase ``ry``
    (``osx = 2``): whole tiles with both rows as four consecutive outputs per tile and row
    (``out[.., 4tx + 2j + rx]``), the rest element by element."""
    u = np.uint64
    vw = 32 // oflat.itemsize
    txv = (wo + 1) // 2
    for m in range(m0, m1):
        bv = bias[g * og + m]
        p = 0
        while p < np_:
            nn, tyy, txx, n = _tile_run(p0 + p, np_ - p, ntiles, tx_n)
            nv = min(n, txv - txx)
            if 2 * tyy < ho and nv > 0:
                plane0 = ((n0 + nn) * c_out + g * og + m) * h_out
                two_rows = 2 * tyy + 1 < ho
                last_full = 2 * (txx + nv) <= wo
                mb = u(vlen + (m - m0) * ptiles + p)
                nf = nv if last_full else nv - 1
                q0 = 0
                while two_rows and q0 + vw <= nf:
                    if nin == 4:
                        _wino_out_tmp(s0, mb + u(q0), mst, t0, bv, chk, c0)
                        _wino_out_tmp(s1, mb + u(q0), mst, t1, bv, chk, c0)
                    else:
                        _wino22_out_tmp(s0, mb + u(q0), mst, t0, bv, chk, c0)
                        _wino22_out_tmp(s1, mb + u(q0), mst, t1, bv, chk, c0)
                    for i in range(2):
                        base = u((plane0 + ry + (2 * tyy + i) * osy) * w_out + 4 * (txx + q0))
                        a = 2 * i * vw
                        for q in range(vw):
                            o = base + u(4 * q)
                            oflat[o] = t0[a + q]
                            oflat[o + u(1)] = t1[a + q]
                            oflat[o + u(2)] = t0[a + vw + q]
                            oflat[o + u(3)] = t1[a + vw + q]
                    q0 += vw
                if q0 < nv:
                    d0 = (plane0 + ry + 2 * tyy * osy) * w_out + 4 * (txx + q0)
                    _wino_out_strided(s0, mb + u(q0), mst, oflat, u(d0), osy * w_out, 2, bv,
                                      nv - q0, two_rows, last_full, chk, c0, nin, t0)
                    _wino_out_strided(s1, mb + u(q0), mst, oflat, u(d0 + 1), osy * w_out, 2, bv,
                                      nv - q0, two_rows, last_full, chk, c0, nin, t0)
            p += n


@njit(cache=True)
def _wino_inputs(bflat, blen, pstride, wb, e0y, e0x, g, scr, vst, ptiles, p0, np_, padded,
                 ntiles, tx_n, nin, tt, cg):
    """V of one block of tiles (``np_`` from tile ``p0``), zero up to ``padded`` columns."""
    u = np.uint64
    for c in range(cg):
        p = 0
        while p < np_:
            nn, tyy, txx, n = _tile_run(p0 + p, np_ - p, ntiles, tx_n)
            cbase = nn * blen + (g * cg + c) * pstride
            # vectors may run past a tile row (into later V columns, which the
            # next run rewrites, or the zeroed tail / the next row's skew line;
            # reads stay within the image's planes + the checked slack)
            _wino_in_row(scr, u(c * ptiles + p), vst, bflat,
                         u(cbase + (e0y + 2 * tyy) * wb + e0x + 2 * txx), wb, n, nin)
            p += n
        for e in range(tt):
            o = e * vst + c * ptiles
            for q in range(np_, padded):
                scr[o + q] = 0.0


@njit(cache=True)
def _wino_gemms(upack, g, scr, poffs, vst, mst, vlen, ptiles, ntile, tw, m0, mcb, copad, mr,
                nblk, cg, kc, tt, shape_id):
    """M[e] (channels m0 .. m0+mcb) = U[e] V[e] for every transformed tap ``e``, by the microkernel."""
    b0 = m0 // mr
    b1 = min(copad, m0 + mcb) // mr
    for e in range(tt):
        # tiles outside the reduction chunks: a tile's accumulators
        # (mc x NV*VW) stay in L1/L2 from one chunk to the next
        for tile in range(ntile):
            for k0 in range(0, cg, kc):
                kn = min(kc, cg - k0)
                offk = poffs[0:kn]
                xoff = e * vst + k0 * ptiles + tile * tw
                for bb in range(b0, b1):
                    aoff = (((g * tt + e) * nblk + bb) * cg + k0) * mr
                    coff = vlen + e * mst + (bb - b0) * mr * ptiles + tile * tw
                    if k0 == 0:
                        if shape_id == 0:
                            _mk_4x3_set(upack, aoff, scr, xoff, offk, scr, coff, kn, ptiles)
                        else:
                            _mk_6x2_set(upack, aoff, scr, xoff, offk, scr, coff, kn, ptiles)
                    elif shape_id == 0:
                        _mk_4x3(upack, aoff, scr, xoff, offk, scr, coff, kn, ptiles)
                    else:
                        _mk_6x2(upack, aoff, scr, xoff, offk, scr, coff, kn, ptiles)


@njit(cache=True)
def _wino_outputs(scr, vlen, mst, ptiles, p0, np_, ntiles, tx_n, m0, m1, og, g, bias, oflat, n0,
                  c_out, h_out, w_out, ry, rx, ho, wo, osy, osx, nin, chk, c0, otmp):
    """The output transform of channels ``m0 .. m1`` of a block: the phase's valid outputs only."""
    u = np.uint64
    txv = (wo + 1) // 2                      # the phase's own tile columns
    for m in range(m0, m1):
        bv = bias[g * og + m]
        p = 0
        while p < np_:
            nn, tyy, txx, n = _tile_run(p0 + p, np_ - p, ntiles, tx_n)
            nv = min(n, txv - txx)           # tiles inside the phase's outputs
            if 2 * tyy < ho and nv > 0:
                plane0 = ((n0 + nn) * c_out + g * og + m) * h_out
                two_rows = 2 * tyy + 1 < ho
                last_full = 2 * (txx + nv) <= wo
                mb = u(vlen + (m - m0) * ptiles + p)
                if nin == 4 and osy == 1 and osx == 1 and wo == w_out:
                    _wino_out_row(scr, mb, mst, oflat, u((plane0 + 2 * tyy) * wo + 2 * txx),
                                  wo, bv, nv, two_rows, last_full, chk, c0)
                else:
                    _wino_out_strided(scr, mb, mst, oflat,
                                      u((plane0 + ry + 2 * tyy * osy) * w_out + rx
                                        + 2 * txx * osx), osy * w_out, osx, bv, nv,
                                      two_rows, last_full, chk, c0, nin, otmp)
            p += n
