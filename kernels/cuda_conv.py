"""Numba-CUDA convolution kernels: direct (shared-memory tiled), im2col + tiled GEMM,
and gather-form transposed convolution.

Formulas (NCHW, weight OIHW as PyTorch; g = group of output channel o;
cig = C_in/G, cog = C_out/G)::

    conv2d:  out[n, o, y, x] = b[o] + sum_{c<cig, i<KH, j<KW}
                 in[n, g*cig + c, pad(y*SH - PT + i*DH), pad(x*SW - PL + j*DW)] * w[o, c, i, j]
    conv_transpose2d, the gather form of the scatter
             out[n, o, y*SH - PH + i*DH, x*SW - PW + j*DW] += in[n, c, y, x] * w[c, o', i, j]:
             out[n, g*cog + o', y, x] = b + sum_{c<cig, i, j: SH | y+PH-i*DH, SW | x+PW-j*DW}
                 in[n, g*cig + c, (y+PH-i*DH)/SH, (x+PW-j*DW)/SW] * w[g*cig + c, o', i, j]

``pad()`` maps a padded coordinate to an input coordinate by the padding mode
(zeros -> none, reflect, replicate, circular) inside the index math: no padded
copy of the input is ever made.  All arrays are C-contiguous device arrays of
one dtype (float32 or float64); accumulation is in that dtype (float32
kernels contain no float64 arithmetic: constants are made with ``T(...)``).
Index math is 64-bit (Numba's default int), so tensors past 2**31 elements
are addressed correctly.

Cost: FLOPs = 2 * N * C_out * Ho * Wo * cig * KH * KW (+ N*C_out*Ho*Wo for
bias); minimum bytes = (input + weight + bias + output) * itemsize.

Kernels (each built by a cached factory whose arguments are the
specialization key: dtype, tile constants, padding mode):

1. ``conv2d_direct`` -- one block computes a (TY*RY) x TX tile of output
   pixels for OCB output channels of one (image, group).  Per stage of CK
   input channels it stages in dynamic shared memory the input tile with its
   halo (CK x tile_h x tile_w, tile_h = (TY*RY - 1)*SH + (KH-1)*DH + 1, read
   with consecutive threads on consecutive columns: coalesced) and the
   filter tile (OCB x CK x KH x KW); every thread then accumulates RY rows x
   OCB channels = RY*OCB outputs in registers (the host lowers OCB to C_out/G
   when a group has fewer channels: depthwise runs OCB=1, no wasted FMAs;
   and TX, RY to powers of two that fit small outputs, e.g. 8 x 8 for 7x7).
   Launch: block (TX, TY),
   grid (ceil(Wo/TX), ceil(Ho/(TY*RY)), min(N*G*ceil(cog/OCB), 65535)) with a
   grid-stride loop over z.  Shared memory per block:
   (CK*tile_h*tile_w + OCB*CK*KH*KW) * itemsize; the host picks CK so this
   stays under ``DIRECT_SHARED_BUDGET`` (24 KiB) and refuses the algorithm
   when one channel alone needs more than 48 KiB.  Two barriers per stage.
2. ``im2col`` -- one thread per (input channel, output column m) writes the
   KH*KW rows of that channel for that column: cols[(c*KH + i)*KW + j, m]
   with m = n_local*Ho*Wo + y*Wo + x; consecutive threads write consecutive
   m (coalesced).  Grid-stride 1-D launch.  Workspace: C_in*KH*KW*nb*Ho*Wo
   elements for a chunk of nb images (the host caps it).
3. ``conv_gemm`` -- out[n, g*cog + r, p] = b + sum_k W[g*cog + r, k] * cols[g*K + k, m]
   as a tiled GEMM: BM x BN output tile per block, BK-deep k-tiles staged in
   shared memory (A transposed to [BK][BM]), RM x RN register block per
   thread (rows ty + i*TM, columns tx + j*TN: coalesced stores, conflict-free
   shared reads), double buffering: the next k-tile is prefetched from
   global memory into registers while the current one is multiplied out of
   shared memory, so there is one barrier per k-tile.  The epilogue adds the
   bias and scatters columns m back to NCHW.  Block (BN/RN, BM/RM), grid
   (ceil(M/BN), ceil(cog/BM), min(G, 65535)).  Shared: 2*BK*(BM+BN)*itemsize.
4. ``conv_transpose2d_gather`` -- one thread per output pixel and OCB output
   channels; it visits only the taps whose source pixel exists (the stride
   test), so there are no atomics and the result is deterministic.  Threads
   of a block row share one column phase ``x % SW`` (x = phase + SW*k), so a
   warp takes the same taps and does not diverge on the stride test (stores
   are then SW apart).  Block (TX, TY), grid (SW*ceil(ceil(Wo/SW)/TX),
   ceil(Ho/TY), min(N*G*ceil(cog/OCB), 65535)).  No shared memory: the
   weights a block reads are the same for all its threads (broadcast loads).

Versions: v1 (this file), correctness-checked under the CUDA simulator and
compiled with ptxas for sm_80/sm_90; not yet timed on a GPU.

Tile constants come from the host (``fastconv.wrappers.numba_cuda_backend``);
under the CUDA simulator it picks smaller tiles that run the same code.
"""
from __future__ import annotations

import functools

import numba
import numpy as np
from numba import cuda

__all__ = ["PAD_MODES", "numba_type", "pad_index", "conv2d_direct_kernel", "im2col_kernel",
           "conv_gemm_kernel", "conv_transpose2d_gather_kernel"]

#: padding mode name -> the integer constant the kernels are specialized on
PAD_MODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}


def numba_type(dtype):
    """numba scalar type of a NumPy float dtype (float32 or float64)."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return numba.float32
    if dtype == np.float64:
        return numba.float64
    raise TypeError(f"numba-cuda kernels support float32 and float64, not {dtype}")


@cuda.jit(device=True, inline="always")
def pad_index(i, size, mode):
    """Input coordinate read for padded coordinate ``i``, or -1 for a zero.

    mode: 0 zeros, 1 reflect (mirror, edge not repeated), 2 replicate (edge
    repeated), 3 circular (wrap).  Coordinates that no valid output reads
    (tile rows past the last output) may fall outside every rule: they give
    -1, so nothing is ever read out of bounds.
    """
    if i >= 0 and i < size:
        return i
    if mode == 1:
        if i < 0:
            i = -i
        if i >= size:
            i = 2 * (size - 1) - i
    elif mode == 2:
        i = 0 if i < 0 else size - 1
    elif mode == 3:
        i = i % size  # Python (floored) modulo: always in [0, size)
    else:
        return -1
    if i < 0 or i >= size:
        return -1
    return i


# --------------------------------------------------------------------------
# 1. direct convolution, shared-memory tiled
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def conv2d_direct_kernel(dtype, mode: int, tx: int, ty: int, ry: int, ocb: int):
    """Kernel for one dtype, padding mode and tile shape (see the module header)."""
    T = numba_type(dtype)
    TX, TY, RY, OCB = tx, ty, ry, ocb
    BW, BH, NT, RO = tx, ty * ry, tx * ty, ry * ocb
    MODE = mode

    @cuda.jit
    def conv2d_direct(x, w, b, out, has_bias, groups, cig, cog, co_blocks, H, W, Ho, Wo,
                      KH, KW, SH, SW, PT, PL, DH, DW, ck, tile_h, tile_w):
        sm = cuda.shared.array(0, T)              # [ck][tile_h][tile_w] then [OCB][ck][KH*KW]
        acc = cuda.local.array(RO, T)             # acc[r*OCB + o]: row r, channel o
        wreg = cuda.local.array(OCB, T)
        lx = cuda.threadIdx.x
        ly = cuda.threadIdx.y
        tid = ly * TX + lx
        ox = cuda.blockIdx.x * BW + lx
        oy0 = cuda.blockIdx.y * BH
        iy0 = oy0 * SH - PT                       # padded-input origin of the tile
        ix0 = cuda.blockIdx.x * BW * SW - PL
        taps = KH * KW
        tile = tile_h * tile_w
        w_off = ck * tile
        zero = T(0)
        nz = out.shape[0] * groups * co_blocks
        for z in range(cuda.blockIdx.z, nz, cuda.gridDim.z):  # uniform per block
            cb = z % co_blocks
            gz = z // co_blocks
            g = gz % groups
            n = gz // groups
            co0 = cb * OCB
            for r in range(RO):
                acc[r] = zero
            for c0 in range(0, cig, ck):
                nc = min(ck, cig - c0)
                cin0 = g * cig + c0
                # input tile + halo, consecutive threads on consecutive columns
                for e in range(tid, nc * tile, NT):
                    c = e // tile
                    rem = e - c * tile
                    row = rem // tile_w
                    col = rem - row * tile_w
                    hy = pad_index(iy0 + row, H, MODE)
                    wx = pad_index(ix0 + col, W, MODE)
                    v = zero
                    if hy >= 0 and wx >= 0:
                        v = x[n, cin0 + c, hy, wx]
                    sm[e] = v
                # filter tile; channels past cog are zero (their outputs are not stored)
                for e in range(tid, OCB * nc * taps, NT):
                    o = e // (nc * taps)
                    rem = e - o * (nc * taps)
                    c = rem // taps
                    tap = rem - c * taps
                    co = co0 + o
                    v = zero
                    if co < cog:
                        i = tap // KW
                        v = w[g * cog + co, c0 + c, i, tap - i * KW]
                    sm[w_off + (o * ck + c) * taps + tap] = v
                cuda.syncthreads()  # both tiles complete before anyone reads them
                for c in range(nc):
                    for i in range(KH):
                        for j in range(KW):
                            tap = i * KW + j
                            for o in range(OCB):
                                wreg[o] = sm[w_off + (o * ck + c) * taps + tap]
                            base = c * tile + i * DH * tile_w + lx * SW + j * DW
                            for r in range(RY):
                                v = sm[base + (ly + r * TY) * SH * tile_w]
                                for o in range(OCB):
                                    acc[r * OCB + o] += v * wreg[o]
                cuda.syncthreads()  # all reads done before the next stage overwrites
            if ox < Wo:
                for r in range(RY):
                    oy = oy0 + ly + r * TY
                    if oy < Ho:
                        for o in range(OCB):
                            co = co0 + o
                            if co < cog:
                                val = acc[r * OCB + o]
                                if has_bias:
                                    val += b[g * cog + co]
                                out[n, g * cog + co, oy, ox] = val

    return conv2d_direct


def direct_tile_extent(p, tx: int, ty: int, ry: int) -> tuple[int, int]:
    """(tile_h, tile_w): padded-input rows/columns one direct block reads per channel."""
    tile_h = (ty * ry - 1) * p.stride[0] + (p.kh - 1) * p.dilation[0] + 1
    tile_w = (tx - 1) * p.stride[1] + (p.kw - 1) * p.dilation[1] + 1
    return tile_h, tile_w


# --------------------------------------------------------------------------
# 2. im2col
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def im2col_kernel(dtype, mode: int):
    T = numba_type(dtype)
    MODE = mode

    @cuda.jit
    def im2col(x, cols, n0, nb, H, W, Ho, Wo, KH, KW, SH, SW, PT, PL, DH, DW):
        # cols: (C_in*KH*KW, nb*Ho*Wo); row (c*KH + i)*KW + j, column m
        hw = Ho * Wo
        m_total = nb * hw
        total = x.shape[1] * m_total
        zero = T(0)
        for t in range(cuda.grid(1), total, cuda.gridsize(1)):
            c = t // m_total
            m = t - c * m_total
            nl = m // hw
            q = m - nl * hw
            oy = q // Wo
            ox = q - oy * Wo
            n = n0 + nl
            row = c * KH * KW
            for i in range(KH):
                hy = pad_index(oy * SH - PT + i * DH, H, MODE)
                for j in range(KW):
                    wx = pad_index(ox * SW - PL + j * DW, W, MODE)
                    v = zero
                    if hy >= 0 and wx >= 0:
                        v = x[n, c, hy, wx]
                    cols[row + i * KW + j, m] = v

    return im2col


# --------------------------------------------------------------------------
# 3. tiled, register-blocked, double-buffered GEMM with the conv epilogue
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def conv_gemm_kernel(dtype, bm: int, bn: int, bk: int, rm: int, rn: int):
    T = numba_type(dtype)
    BM, BN, BK, RM, RN = bm, bn, bk, rm, rn
    TM, TN = bm // rm, bn // rn
    NT = TM * TN
    if (BM * BK) % NT or (BK * BN) % NT or BM % RM or BN % RN:
        raise ValueError(f"GEMM tile {bm}x{bn}x{bk} / {rm}x{rn} does not split over threads")
    LA, LB = BM * BK // NT, BK * BN // NT
    RR = RM * RN

    @cuda.jit
    def conv_gemm(a, cols, b, out, has_bias, groups, cog, K, m_total, hw, n0):
        # a: (C_out, K) weights; cols: (G*K, m_total); out: (N, C_out, Ho*Wo)
        As = cuda.shared.array((2, BK, BM), T)    # A tile transposed: k-major
        Bs = cuda.shared.array((2, BK, BN), T)
        ra = cuda.local.array(LA, T)              # prefetch registers (next k-tile)
        rb = cuda.local.array(LB, T)
        acc = cuda.local.array(RR, T)
        areg = cuda.local.array(RM, T)
        breg = cuda.local.array(RN, T)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TN + tx
        row0 = cuda.blockIdx.y * BM
        col0 = cuda.blockIdx.x * BN
        zero = T(0)
        nk = (K + BK - 1) // BK
        for g in range(cuda.blockIdx.z, groups, cuda.gridDim.z):  # uniform per block
            arow0 = g * cog + row0
            brow0 = g * K
            for q in range(RR):
                acc[q] = zero
            # prefetch k-tile 0
            for l in range(LA):
                e = tid + l * NT
                kk = e % BK
                mm = e // BK
                v = zero
                if row0 + mm < cog and kk < K:
                    v = a[arow0 + mm, kk]
                ra[l] = v
            for l in range(LB):
                e = tid + l * NT
                nn = e % BN
                kk = e // BN
                v = zero
                if kk < K and col0 + nn < m_total:
                    v = cols[brow0 + kk, col0 + nn]
                rb[l] = v
            for l in range(LA):
                e = tid + l * NT
                As[0, e % BK, e // BK] = ra[l]
            for l in range(LB):
                e = tid + l * NT
                Bs[0, e // BN, e % BN] = rb[l]
            cuda.syncthreads()  # k-tile 0 staged
            for kt in range(nk):
                cur = kt % 2
                nxt = 1 - cur
                more = kt + 1 < nk
                if more:  # global loads of k-tile kt+1 overlap the math below
                    k0 = (kt + 1) * BK
                    for l in range(LA):
                        e = tid + l * NT
                        kk = e % BK
                        mm = e // BK
                        v = zero
                        if row0 + mm < cog and k0 + kk < K:
                            v = a[arow0 + mm, k0 + kk]
                        ra[l] = v
                    for l in range(LB):
                        e = tid + l * NT
                        nn = e % BN
                        kk = e // BN
                        v = zero
                        if k0 + kk < K and col0 + nn < m_total:
                            v = cols[brow0 + k0 + kk, col0 + nn]
                        rb[l] = v
                for kk in range(BK):
                    for i in range(RM):
                        areg[i] = As[cur, kk, ty + i * TM]
                    for j in range(RN):
                        breg[j] = Bs[cur, kk, tx + j * TN]
                    for i in range(RM):
                        for j in range(RN):
                            acc[i * RN + j] += areg[i] * breg[j]
                if more:
                    # buffer nxt was last read in iteration kt-1, before the barrier below it
                    for l in range(LA):
                        e = tid + l * NT
                        As[nxt, e % BK, e // BK] = ra[l]
                    for l in range(LB):
                        e = tid + l * NT
                        Bs[nxt, e // BN, e % BN] = rb[l]
                cuda.syncthreads()  # k-tile kt+1 staged and k-tile kt fully read
            for i in range(RM):
                r = row0 + ty + i * TM
                if r < cog:
                    co = g * cog + r
                    bias = zero
                    if has_bias:
                        bias = b[co]
                    for j in range(RN):
                        m = col0 + tx + j * TN
                        if m < m_total:
                            nl = m // hw
                            out[n0 + nl, co, m - nl * hw] = acc[i * RN + j] + bias

    return conv_gemm


# --------------------------------------------------------------------------
# 4. transposed convolution, gather form
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def conv_transpose2d_gather_kernel(dtype, tx: int, ty: int, ocb: int):
    T = numba_type(dtype)
    TX, TY, OCB = tx, ty, ocb

    @cuda.jit
    def conv_transpose2d_gather(x, w, b, out, has_bias, groups, cig, cog, co_blocks, H, W,
                                Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW, xblocks):
        # xblocks = ceil(ceil(Wo/SW)/TX) blocks per column phase
        acc = cuda.local.array(OCB, T)
        phase = cuda.blockIdx.x // xblocks
        ox = phase + SW * ((cuda.blockIdx.x - phase * xblocks) * TX + cuda.threadIdx.x)
        oy = cuda.blockIdx.y * TY + cuda.threadIdx.y
        if ox >= Wo or oy >= Ho:
            return  # no barriers in this kernel
        zero = T(0)
        nz = out.shape[0] * groups * co_blocks
        for z in range(cuda.blockIdx.z, nz, cuda.gridDim.z):
            cb = z % co_blocks
            gz = z // co_blocks
            g = gz % groups
            n = gz // groups
            co0 = cb * OCB
            for o in range(OCB):
                acc[o] = zero
            for i in range(KH):
                sy = oy + PH - i * DH           # = iy*SH for a contributing input row
                if sy < 0:
                    break                       # sy only decreases with i
                iy = sy // SH
                if iy * SH != sy or iy >= H:
                    continue
                for j in range(KW):
                    sx = ox + PW - j * DW
                    if sx < 0:
                        break
                    ix = sx // SW
                    if ix * SW != sx or ix >= W:
                        continue
                    for c in range(cig):
                        ci = g * cig + c
                        v = x[n, ci, iy, ix]
                        for o in range(OCB):
                            # clamp: channels past cog compute garbage that is never stored
                            acc[o] += v * w[ci, min(co0 + o, cog - 1), i, j]
            for o in range(OCB):
                co = co0 + o
                if co < cog:
                    val = acc[o]
                    if has_bias:
                        val += b[g * cog + co]
                    out[n, g * cog + co, oy, ox] = val

    return conv_transpose2d_gather
